"""The real-node tier's hook and fixtures, defined in ``realnode_tier.py``: type checking
takes each ``conftest`` for a module of that name, and this directory's would be the second
(mypy excludes this file, which only imports)."""

from realnode_tier import cluster, pytest_collection_modifyitems

__all__ = ["cluster", "pytest_collection_modifyitems"]
