"""The real-node tier (``conftest.py`` imports this): ``test_node_lifecycle`` runs first.

It brings up and tears down a real node of its own, which it can only do while no other real
node holds the machine, so it must run before the session's ``real_node`` fixture is first
used (that node stays up until the session ends).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chart_cluster import Cluster, installed_release

from fixtures.realnode import RealNodeHandle


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first = [i for i in items if "/test_node_lifecycle.py::" in f"/{i.nodeid}"]
    if first:
        rest = [i for i in items if i not in first]
        items[:] = first + rest


@pytest.fixture(scope="package")
def cluster(real_node: RealNodeHandle) -> Iterator[Cluster]:
    """The chart installed on the real node, shared by the tier's modules."""
    with installed_release(real_node) as installed:
        yield installed
