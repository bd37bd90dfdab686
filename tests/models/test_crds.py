"""The CRDs in crds/ are generated from the models, and the schema says enough to be useful.

No cluster here: these check the generated text. What the API server does with it (admission
refusals, defaults, transition rules) is tested in tests/controller/test_admission.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetasks import crdgen

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"


def schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for kind in crdgen.KINDS:
        crd = yaml.safe_load((CRDS / f"{kind.name}.yaml").read_text())
        out[kind.kind] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return out


def walk(node: dict[str, Any], path: str) -> Any:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_crds_folder_matches_the_models(capsys: pytest.CaptureFixture[str]) -> None:
    code = crdgen.main(["--out", str(CRDS), "--check"])
    assert code == 0, capsys.readouterr().err


def test_drift_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    path = tmp_path / "tasks.kubetasks.dev.yaml"
    path.write_text(path.read_text().replace("maxItems: 64", "maxItems: 65"))
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1
    assert "tasks.kubetasks.dev.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["Task", "PeriodicTask", "WorkerPool", "Queue"])
def test_every_field_is_described_and_bounded(kind: str) -> None:
    schema = schemas()[kind]
    undocumented, unbounded = [], []
    for path, node in walk(schema, kind):
        if path.count(".") >= 2 and path.split(".")[1] in ("spec", "status"):
            if not node.get("description") and not path.endswith(("[]", "{}")):
                undocumented.append(path)
            if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
                unbounded.append(path)
            if node.get("type") == "array" and "maxItems" not in node:
                unbounded.append(path)
    assert not undocumented, f"fields without a description: {undocumented}"
    assert not unbounded, f"strings/lists without a bound (CEL cost, object size): {unbounded}"


def test_structural_schema_has_no_json_schema_leftovers() -> None:
    for kind, schema in schemas().items():
        for path, node in walk(schema, kind):
            for key in ("anyOf", "$ref", "title", "$defs"):
                assert key not in node, f"{path} has {key}"
            if "additionalProperties" in node:
                assert "properties" not in node, path
                assert node["additionalProperties"] is not False, path


def test_task_printer_columns_and_names() -> None:
    crd = yaml.safe_load((CRDS / "tasks.kubetasks.dev.yaml").read_text())
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["ktask", "ktasks"]
    assert "kubetasks" in names["categories"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    shown = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert shown == ["Handler", "Queue", "Phase", "Attempts", "Age"]


def test_description_comes_from_the_docstring() -> None:
    backoff = schemas()["Task"]["properties"]["spec"]["properties"]["retryBackoff"]
    assert backoff["properties"]["maxSeconds"]["description"].startswith(
        "Longest wait between two attempts, in seconds."
    )
    assert "``" not in yaml.safe_dump(schemas())
