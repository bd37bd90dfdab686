"""The chart's CRDs are the generated ones in crds/, byte for byte in meaning.

crds/*.yaml is generated from the models and checked in; charts/kubetasks/hack/sync-crds.py
copies each into templates/crds/ wrapped in `crds.install` and with the chart's labels and
keep annotation. These tests compare the parsed YAML with the templating lines removed, so
any edit on either side without a sync fails here.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from chart_helpers import CHART, REPO, render

from kubetasks.vocabulary import GROUP

SOURCE = REPO / "crds"
TARGET = CHART / "templates" / "crds"
SYNC = CHART / "hack" / "sync-crds.py"
KINDS = {
    "tasks.kubetasks.dev": "Task",
    "tasksets.kubetasks.dev": "TaskSet",
    "periodictasks.kubetasks.dev": "PeriodicTask",
    "workerpools.kubetasks.dev": "WorkerPool",
    "queues.kubetasks.dev": "Queue",
}
CHART_ANNOTATIONS = {"helm.sh/resource-policy"}


def source_crds() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(SOURCE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                found[doc["metadata"]["name"]] = doc
    return found


def without_templating(text: str) -> dict[str, Any]:
    """A chart CRD with its `{{ ... }}` lines dropped, as plain YAML."""
    kept = [line for line in text.splitlines() if not line.strip().startswith("{{")]
    doc = yaml.safe_load("\n".join(kept))
    assert isinstance(doc, dict)
    return doc


def comparable(crd: dict[str, Any]) -> dict[str, Any]:
    """Drop what the chart adds (keep annotation) and empty label/annotation maps."""
    crd = copy.deepcopy(crd)
    meta = crd["metadata"]
    annotations = {
        k: v for k, v in (meta.pop("annotations", None) or {}).items()
        if k not in CHART_ANNOTATIONS
    }  # fmt: skip
    labels = meta.pop("labels", None) or {}
    if annotations:
        meta["annotations"] = annotations
    if labels:
        meta["labels"] = labels
    return crd


def test_crds_folder_holds_every_kind() -> None:
    crds = source_crds()
    assert sorted(crds) == sorted(KINDS), f"crds/ holds {sorted(crds)}; run `make crds`"
    for name, crd in crds.items():
        assert crd["spec"]["names"]["kind"] == KINDS[name]
        assert crd["spec"]["group"] == GROUP
        assert crd["spec"]["scope"] == "Namespaced"


def test_chart_crds_match_crds_folder() -> None:
    want = source_crds()
    have = {p.stem: p for p in sorted(TARGET.glob("*.yaml"))}
    assert sorted(have) == sorted(want), (
        "templates/crds/ and crds/ hold different CRDs: run charts/kubetasks/hack/sync-crds.py"
    )
    for name, path in have.items():
        text = path.read_text()
        lines = [line.strip() for line in text.splitlines()]
        assert "{{- if .Values.crds.install }}" in lines, f"{path.name}: not behind crds.install"
        assert lines[-1] == "{{- end }}", path.name
        assert comparable(without_templating(text)) == comparable(want[name]), (
            f"{path.name} drifted from crds/: run charts/kubetasks/hack/sync-crds.py"
        )


def test_rendered_crds_equal_the_generated_ones() -> None:
    # Through helm itself: nothing in a CRD (a description, a CEL rule) is taken for a template.
    rendered = {c["metadata"]["name"]: c for c in render().kinds("CustomResourceDefinition")}
    want = source_crds()
    assert sorted(rendered) == sorted(want)
    for name, crd in want.items():
        assert comparable(rendered[name]) | {"metadata": {}} == comparable(crd) | {"metadata": {}}
        assert rendered[name]["metadata"]["name"] == name
        assert rendered[name]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubetasks"


def test_sync_check_passes_on_the_repository() -> None:
    result = subprocess.run(
        [sys.executable, str(SYNC), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


SAMPLE = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: samples.example.dev
  annotations:
    example.dev/generator: test
spec:
  group: example.dev
  scope: Namespaced
  names: {kind: Sample, plural: samples, singular: sample}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        description: "Line one.\\nLine two: with 'quotes'."
        x-kubernetes-validations:
        - rule: "!has(self.a) || !has(self.b)"
          message: a and b are exclusive
"""


def test_sync_round_trips_and_check_catches_drift(tmp_path: Path) -> None:
    source, target = tmp_path / "crds", tmp_path / "chart-crds"
    source.mkdir()
    (source / "sample.yaml").write_text(SAMPLE)
    args = [sys.executable, str(SYNC), "--source", str(source), "--target", str(target)]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*args, *extra], capture_output=True, text=True, timeout=60)

    assert run().returncode == 0
    copy_path = target / "samples.example.dev.yaml"
    assert comparable(without_templating(copy_path.read_text())) == comparable(
        yaml.safe_load(SAMPLE)
    )
    assert run("--check").returncode == 0

    copy_path.write_text(copy_path.read_text().replace("a and b are exclusive", "edited"))
    drifted = run("--check")
    assert drifted.returncode == 1
    assert "out of date" in drifted.stderr and "samples.example.dev.yaml" in drifted.stderr

    shutil.copy(copy_path, target / "gone.example.dev.yaml")
    run()
    stale = run("--check")
    assert stale.returncode == 0, "a sync removes copies whose source is gone"
    assert not (target / "gone.example.dev.yaml").exists()
