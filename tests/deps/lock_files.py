"""The hash-locked requirement files in requirements/ (written by ``make lock``), read offline.

The tests use it to check the lock against pyproject.toml without an index. ``make test-latest``
runs it as a script in its own virtualenv (``python tests/deps/lock_files.py requirements/dev.txt``)
to list the versions that differ from the lock: the drift that target is there to test.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "requirements" / "runtime.txt"
DEV = REPO / "requirements" / "dev.txt"

_PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?P<options>.*)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    name: str
    """Normalized (PEP 503): lower case, runs of ``-_.`` as one ``-``."""
    version: str
    hashes: tuple[str, ...]
    line: str
    """The requirement as written, continuation lines joined."""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> list[str]:
    """Every requirement of a requirements file, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    lines = (line.split(" #", 1)[0].strip() for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def read_lock(path: Path) -> dict[str, Pin]:
    """The pins of a lock file by normalized name; a line that is no exact pin raises."""
    pins: dict[str, Pin] = {}
    for line in requirement_lines(path):
        match = _PIN.fullmatch(line)
        if match is None:
            raise ValueError(f"{path.name}: not an exact pin: {line!r}")
        name = normalize(match["name"])
        pins[name] = Pin(name, match["version"], tuple(_HASH.findall(match["options"])), line)
    return pins


def pyproject() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def drift(pins: dict[str, Pin]) -> list[tuple[str, str, str | None]]:
    """(name, locked, installed) for every pin that the running interpreter has otherwise."""
    out = []
    for name, pin in sorted(pins.items()):
        try:
            installed: str | None = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != pin.version:
            out.append((name, pin.version, installed))
    return out


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else DEV
    pins = read_lock(path)
    differ = drift(pins)
    installed = {normalize(d.metadata["Name"]) for d in metadata.distributions()}
    extra = sorted(installed - set(pins) - {"kubetasks", "pip"})
    print(f"against {path}: {len(pins) - len(differ)} of {len(pins)} pins as locked")
    for name, locked, now in differ:
        print(f"  {name}: {locked} in the lock, {now or 'not installed'} here")
    for name in extra:
        print(f"  {name}: {metadata.version(name)} here, not in the lock")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
