"""The cache key of an image covers what goes into it, and only that (no build needed).

``make images`` rebuilds an image only when its key changes; a key that missed the lock file
would ship yesterday's dependencies, one that covered the whole repository would rebuild for
every test edit. The key's files come from the Dockerfile's own ignore file.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from devenv.images import (
    HELM_VALUES,
    IMAGES,
    OPERATOR,
    REDIS,
    REPO,
    WORKER,
    DockerfileImage,
    context_files,
    dockerfile_key,
    helm_set_args,
)


def relative(files: list[Path]) -> set[str]:
    return {str(path.relative_to(REPO)) for path in files}


@pytest.mark.parametrize("image", [OPERATOR, WORKER], ids=lambda image: image.name)
def test_context_is_what_the_ignore_file_admits(image: DockerfileImage) -> None:
    files = relative(context_files(image))
    assert {"pyproject.toml", "README.md", "requirements/runtime.txt"} <= files
    assert "operator/kubetasks/__init__.py" in files
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in files)
    assert not any(name.startswith(("devenv/", "tests/", ".venv/")) for name in files)
    assert ("worker_image/entrypoint.sh" in files) == (image is WORKER)


def copy_context(image: DockerfileImage, dest: Path) -> Path:
    for path in [REPO / image.dockerfile, REPO / image.ignore_file, *context_files(image)]:
        target = dest / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest


@pytest.mark.parametrize("image", [OPERATOR, WORKER], ids=lambda image: image.name)
def test_key_follows_dockerfile_ignore_file_lock_file_and_sources(
    image: DockerfileImage, tmp_path: Path
) -> None:
    repo = copy_context(image, tmp_path / "repo")
    keys = [dockerfile_key(image, repo)]
    (repo / "tests").mkdir()
    (repo / "tests" / "test_new.py").write_text("unrelated\n")
    (repo / "operator" / "kubetasks" / "__pycache__").mkdir(exist_ok=True)
    (repo / "operator" / "kubetasks" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"0")
    assert dockerfile_key(image, repo) == keys[0], "files outside the build context count"
    for changed in (
        "requirements/runtime.txt",
        "operator/kubetasks/__init__.py",
        image.dockerfile,
        image.ignore_file,
    ):
        with (repo / changed).open("a") as out:
            out.write("\n# changed\n")
        keys.append(dockerfile_key(image, repo))
    assert len(set(keys)) == len(keys), f"a change left the key as it was: {keys}"
    entrypoint = repo / "worker_image" / "entrypoint.sh"
    if entrypoint.exists():
        entrypoint.chmod(0o644)
        assert dockerfile_key(image, repo) != keys[-1], "the mode of a copied file counts"


def test_images_have_distinct_refs_and_chart_values() -> None:
    refs = [image.ref for image in IMAGES]
    assert len(set(refs)) == len(refs)
    sets = dict(arg.split("=", 1) for arg in helm_set_args() if arg != "--set")
    for component, image in (("operator", OPERATOR), ("worker", WORKER), ("redis", REDIS)):
        # The chart names images without the registry; the CRI adds docker.io.
        short = image.ref.removeprefix("docker.io/")
        assert f"{sets[f'{component}.image.repository']}:{sets[f'{component}.image.tag']}" == short


def test_readme_points_the_chart_at_these_images() -> None:
    """The README's `--set` line, over the chart's defaults, names exactly these images."""
    values = yaml.safe_load((REPO / "charts" / "kubetasks" / "values.yaml").read_text())
    section = (REPO / "README.md").read_text().split("### The images", 1)[1].split("\n#", 1)[0]
    sets = dict(re.findall(r"--set ([\w.]+)=(\S+?)`?(?:\s|$)", section))
    assert sets, "the README shows no --set for the built images"
    for key, value in HELM_VALUES.items():
        component, _, field = key.split(".")
        effective = sets.get(key, values[component]["image"][field])
        assert str(effective) == value, f"{key}: the README gives {effective}, the images {value}"
