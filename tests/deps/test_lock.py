"""The lock files agree with pyproject.toml, checked offline.

``make install`` and both images install requirements/ with ``--require-hashes``; the images
with ``--no-deps`` as well, so a dependency missing from the lock would surface only when the
image imports it. Re-compiling to compare would need the index; instead: every requirement of
pyproject.toml is pinned inside its range, every pin carries hashes, the dev lock runs the
images' versions, and the lock holds every dependency of what it pins.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import pytest
from lock_files import DEV, RUNTIME, Pin, normalize, pyproject, read_lock
from packaging.requirements import Requirement

LOCKS = {"runtime": RUNTIME, "dev": DEV}


def declared(lock: str) -> list[Requirement]:
    """What pyproject.toml asks of a lock: the build backend and the dependencies, plus the dev
    extra for the dev lock."""
    project: dict[str, Any] = pyproject()
    lines = project["build-system"]["requires"] + project["project"]["dependencies"]
    if lock == "dev":
        lines += project["project"]["optional-dependencies"]["dev"]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_line_is_an_exact_pin_with_hashes(lock: str) -> None:
    pins = read_lock(LOCKS[lock])
    assert pins
    for pin in pins.values():
        assert pin.hashes, f"{pin.line}: no --hash (pip --require-hashes refuses the whole file)"
    assert "make lock" in LOCKS[lock].read_text().splitlines()[1], "written by `make lock`"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_declared_requirement_is_pinned_inside_its_range(lock: str) -> None:
    pins = read_lock(LOCKS[lock])
    for req in declared(lock):
        pin = pins.get(normalize(req.name))
        assert pin is not None, f"{req} is in pyproject.toml but not in {lock}.txt: make lock"
        assert req.specifier.contains(pin.version, prereleases=True), (
            f"{lock}.txt pins {pin.name}=={pin.version} outside pyproject.toml's {req}: make lock"
        )


def test_dev_lock_runs_the_images_versions() -> None:
    runtime, dev = read_lock(RUNTIME), read_lock(DEV)
    differ = {n: (p.version, dev[n].version if n in dev else None) for n, p in runtime.items()}
    assert {n: v for n, v in differ.items() if v[0] != v[1]} == {}
    assert all(set(p.hashes) <= set(dev[n].hashes) for n, p in runtime.items())


def closure_gaps(roots: list[Requirement], pins: dict[str, Pin]) -> list[str]:
    """Dependencies of the pinned distributions that the lock lacks, as "needed by -> missing".

    Read from the installed metadata of each pinned distribution whose installed version is the
    pinned one (all of them after ``make install``; in ``make test-latest``'s virtualenv only
    those that did not move, since another version's metadata says nothing about the lock).
    """
    gaps: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [("pyproject.toml", r) for r in roots]
    while todo:
        parent, req = todo.pop()
        name = normalize(req.name)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if name not in pins:
            gaps.append(f"{parent} -> {req}")
            continue
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != pins[name].version:
            continue
        for line in dist.requires or []:
            child = Requirement(line)
            wanted = child.marker is None or any(
                child.marker.evaluate({"extra": extra}) for extra in {"", *req.extras}
            )
            if wanted:
                child.marker = None
                todo.append((f"{name}=={dist.version}", child))
    return gaps


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_holds_every_dependency_of_what_it_pins(lock: str) -> None:
    assert closure_gaps(declared(lock), read_lock(LOCKS[lock])) == []


def test_closure_check_does_catch_a_missing_dependency() -> None:
    """kopf needs aiohttp: pins of everything installed here but aiohttp must show that gap."""
    installed = {normalize(d.metadata["Name"]): d.version for d in metadata.distributions()}
    pins = {n: Pin(n, v, (), f"{n}=={v}") for n, v in installed.items() if n != "aiohttp"}
    gaps = closure_gaps(declared("runtime"), pins)
    assert f"kopf=={installed['kopf']} -> aiohttp" in [g.split(">=")[0] for g in gaps], gaps
