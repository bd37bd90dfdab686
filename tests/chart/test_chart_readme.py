"""The chart README's values table is generated from values.yaml and must be current."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from chart_helpers import CHART

GEN = CHART / "hack" / "gen-readme.py"


def gen(chart: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GEN), "--chart", str(chart), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def leaf_paths(node: object, prefix: str = "") -> set[str]:
    if isinstance(node, dict) and node:
        return {p for k, v in node.items() for p in leaf_paths(v, f"{prefix}{k}.")}
    return {prefix.rstrip(".")}


def test_readme_is_current() -> None:
    result = gen(CHART, "--check")
    assert result.returncode == 0, result.stderr


def test_readme_lists_every_value_with_its_default() -> None:
    readme = (CHART / "README.md").read_text()
    keys = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.M))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for must in ("operator.replicas", "redis.external.url", "workerPool.minReplicas",
                 "crds.install", "operator.watch.namespaces", "redis.enabled"):  # fmt: skip
        assert must in keys
    # Documented maps (resources, securityContext...) are one row; all else is a leaf.
    for path in leaf_paths(values):
        assert any(path == k or path.startswith(k + ".") for k in keys), path
    assert "| `operator.replicas` | int | `1` |" in readme
    assert "needs a running Docker engine" in readme or "needs Docker" in readme


def _copy_chart(tmp_path: Path) -> Path:
    chart = tmp_path / "kubetasks"
    chart.mkdir()
    for name in ("values.yaml", "README.md"):
        shutil.copy(CHART / name, chart / name)
    return chart


def test_an_undocumented_value_fails(tmp_path: Path) -> None:
    chart = _copy_chart(tmp_path)
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("\noperator:\n", "\noperator:\n  knob: 3\n", 1))
    result = gen(chart, "--check")
    assert result.returncode == 1
    assert "no `# --` comment on operator.knob" in result.stderr


def test_a_changed_description_makes_the_readme_stale(tmp_path: Path) -> None:
    chart = _copy_chart(tmp_path)
    values = chart / "values.yaml"
    text = values.read_text()
    assert "# -- Operator log level" in text
    values.write_text(text.replace("# -- Operator log level", "# -- How chatty the operator is"))
    stale = gen(chart, "--check")
    assert stale.returncode == 1 and "not current" in stale.stderr
    assert gen(chart).returncode == 0
    assert "How chatty the operator is" in (chart / "README.md").read_text()
    assert gen(chart, "--check").returncode == 0
