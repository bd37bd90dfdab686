"""The public surface is what the README tells users to write: every ``kubetasks.<Name>`` the
README uses resolves, and ``kubetasks.__all__`` holds exactly those names."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import kubetasks

README = Path(__file__).parents[2] / "README.md"

_PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
_INLINE = re.compile(r"`(?:raise )?(kubetasks(?:\.\w+)+)")
_IMPORT = re.compile(r"^from (kubetasks[\w.]*) import ([\w, ]+)$", re.MULTILINE)
_REFERENCE = re.compile(r"\bkubetasks(?:\.\w+)+")


def readme_names() -> set[str]:
    """Dotted names the README uses as Python: every ``kubetasks.x`` in its Python blocks and
    ``from kubetasks... import`` lines, and inline spans naming a class or error (inline
    lower-case names such as ``kubetasks.echo`` are handler names, not Python)."""
    text = README.read_text()
    names: set[str] = set()
    for block in _PYTHON_BLOCK.findall(text):
        names.update(_REFERENCE.findall(block))
        for module, imported in _IMPORT.findall(block):
            names.update(f"{module}.{name.strip()}" for name in imported.split(","))
    for dotted in _INLINE.findall(text):
        if dotted.rsplit(".", 1)[1][:1].isupper():
            names.add(dotted)
    return names


def resolve(dotted: str) -> object:
    module, _, attribute = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def test_every_name_the_readme_uses_resolves_where_it_says() -> None:
    names = readme_names()
    assert {"kubetasks.Client", "kubetasks.task", "kubetasks.RetryTask"} <= names
    missing = sorted(name for name in names if not _resolves(name))
    assert missing == []


def test_the_public_names_are_exactly_the_readmes() -> None:
    top_level = {name.split(".")[1] for name in readme_names() if name.count(".") == 1}
    assert set(kubetasks.__all__) - {"__version__"} == top_level
    assert all(hasattr(kubetasks, name) for name in kubetasks.__all__)


def _resolves(dotted: str) -> bool:
    try:
        resolve(dotted)
    except (ImportError, AttributeError):
        return False
    return True
