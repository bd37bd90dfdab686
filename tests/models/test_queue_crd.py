# ruff: noqa: E501  (the table of manifests reads best one case per line)
"""The Queue CRD: what it says (names, columns, bounds) and what the real API server does with it.

The first tests read the generated crds/queues.kubetasks.dev.yaml; the rest create Queues
through kubectl on the session's control plane, as a user meets them: a valid Queue is stored
with its defaults and reads as a dashboard in `kubectl get`, a malformed one is refused with
a message that names the field. No operator runs here: admission alone does all of it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.controlplane import Kubectl
from kubetasks.queue.broker import DEFAULT_RETENTION
from kubetasks.vocabulary import API_VERSION

REPO = Path(__file__).resolve().parents[2]


def crd(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "crds" / f"{name}.kubetasks.dev.yaml").read_text()))


def spec_schema(name: str) -> dict[str, Any]:
    version = crd(name)["spec"]["versions"][0]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])


def queue(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Queue", "metadata": {"name": name}, "spec": spec}


def create(kubectl: Kubectl, namespace: str, manifest: dict[str, Any]) -> Any:
    return kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def table(text: str) -> list[dict[str, str]]:
    """kubectl's table output as rows of column -> cell ('' for an empty cell), cut at the
    header's column starts (names such as MAX IN FLIGHT hold single spaces)."""
    header, *rows = text.splitlines()
    starts = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    ends = [start for start, _ in starts[1:]] + [None]
    return [
        {name: row[start:end].strip() for (start, name), end in zip(starts, ends, strict=True)}
        for row in rows
    ]


def test_names_and_printer_columns() -> None:
    queues = crd("queues")
    assert queues["spec"]["scope"] == "Namespaced"
    names = queues["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == ("Queue", "queues", "queue")
    assert names["shortNames"] == ["ktq", "ktqueue"]
    assert "kubetasks" in names["categories"]
    version = queues["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    shown = [c["name"] for c in columns if "priority" not in c]
    assert shown == ["Paused", "Max In Flight", "Rate", "Pending", "Running", "Scheduled",
                     "Dead", "Processed", "Failed", "Oldest", "Age"]  # fmt: skip
    wide = [c["name"] for c in columns if c.get("priority") == 1]
    assert wide == ["Burst", "Default Timeout", "Max Timeout", "Retention"]


def test_queue_defaults_take_the_task_fields_bounds() -> None:
    # A queue-wide default a Task could not set itself (or a Task value the queue's field
    # could not express) would be a contradiction the API server lets through.
    task, queue_spec = spec_schema("tasks"), spec_schema("queues")

    def bounds(node: dict[str, Any]) -> tuple[Any, Any]:
        return node["minimum"], node["maximum"]

    timeout = bounds(task["timeoutSeconds"])
    assert bounds(queue_spec["defaultTimeoutSeconds"]) == timeout
    assert bounds(queue_spec["maxTimeoutSeconds"]) == timeout
    ttl = queue_spec["ttlSecondsAfterFinished"]
    assert bounds(ttl) == bounds(task["ttlSecondsAfterFinished"])


def test_documented_retention_default_is_the_brokers() -> None:
    # The Queue leaves retentionSeconds absent, and the broker fills in its own default:
    # the description must state that number.
    text = spec_schema("queues")["retentionSeconds"]["description"]
    assert f"Default {DEFAULT_RETENTION} " in text, text


def test_valid_queue_is_stored_with_defaults_and_reads_as_a_dashboard(
    kubectl: Kubectl, namespace: str
) -> None:
    manifest = queue("reports", maxInFlight=2, rateLimit={"perSecond": 0.5},
                     defaultTimeoutSeconds=60, maxTimeoutSeconds=60, retentionSeconds=0)  # fmt: skip
    created = create(kubectl, namespace, manifest)
    assert created.returncode == 0, created.stderr
    stored = json.loads(kubectl("get", "ktq", "reports", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"] == {
        "paused": False,
        "maxInFlight": 2,
        "rateLimit": {"perSecond": 0.5},
        "defaultTimeoutSeconds": 60,
        "maxTimeoutSeconds": 60,
        "retentionSeconds": 0,
    }
    counts = {"pending": 7, "scheduled": 1, "running": 2, "dead": 3, "processed": 40,
              "failed": 5, "oldestPendingSeconds": 12.5, "observedGeneration": 1}  # fmt: skip
    patched = kubectl("patch", "queue", "reports", "-n", namespace, "--subresource=status",
                      "--type=merge", "-p", json.dumps({"status": counts}))  # fmt: skip
    assert patched.returncode == 0, patched.stderr

    (row,) = table(kubectl("get", "queues", "-n", namespace).stdout)
    assert row.pop("AGE")
    assert row == {"NAME": "reports", "PAUSED": "false", "MAX IN FLIGHT": "2", "RATE": "0.5",
                   "PENDING": "7", "RUNNING": "2", "SCHEDULED": "1", "DEAD": "3",
                   "PROCESSED": "40", "FAILED": "5", "OLDEST": "12.5"}  # fmt: skip
    (wide,) = table(kubectl("get", "ktqueue", "reports", "-n", namespace, "-o", "wide").stdout)
    assert list(wide)[-4:] == ["BURST", "DEFAULT TIMEOUT", "MAX TIMEOUT", "RETENTION"]
    # No burst given: the server fills in none (the broker derives it from the rate).
    assert [wide["BURST"], wide["DEFAULT TIMEOUT"], wide["MAX TIMEOUT"], wide["RETENTION"]] == [
        "", "60", "60", "0"
    ]  # fmt: skip


def test_explain_shows_the_field_docs(kubectl: Kubectl) -> None:
    # The API server publishes a new CRD's OpenAPI a moment after it is Established.
    deadline = time.monotonic() + 20
    while True:
        explain = kubectl("explain", "queue.spec.rateLimit.perSecond")
        if explain.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert explain.returncode == 0, explain.stderr
    text = " ".join(explain.stdout.split())
    assert "Tasks that may start per second, on average, across all workers." in text
    root = " ".join(kubectl("explain", "queue").stdout.split())
    assert "A queue whose name contains '_' cannot have a Queue" in root


MALFORMED = [
    (queue("timeouts", defaultTimeoutSeconds=120, maxTimeoutSeconds=60), "spec.defaultTimeoutSeconds: Invalid value: \"object\": defaultTimeoutSeconds must not exceed maxTimeoutSeconds"),
    (queue("no-rate", rateLimit={"burst": 10}), "spec.rateLimit.perSecond: Required value"),
    (queue("zero-rate", rateLimit={"perSecond": 0}), "spec.rateLimit.perSecond: Invalid value: 0: spec.rateLimit.perSecond in body should be greater than 0"),
    (queue("fast", rateLimit={"perSecond": 100001}), "spec.rateLimit.perSecond in body should be less than or equal to 100000"),
    (queue("no-burst", rateLimit={"perSecond": 5, "burst": 0}), "spec.rateLimit.burst in body should be greater than or equal to 1"),
    (queue("uncapped", maxInFlight=0), "spec.maxInFlight in body should be greater than or equal to 1"),
    (queue("month", retentionSeconds=31 * 86400), "spec.retentionSeconds in body should be less than or equal to 2592000"),
    (queue("ttl", ttlSecondsAfterFinished=-1), "spec.ttlSecondsAfterFinished in body should be greater than or equal to 0"),
    (queue("zero-timeout", defaultTimeoutSeconds=0), "spec.defaultTimeoutSeconds in body should be greater than or equal to 1"),
    (queue("paused-word", paused="yes"), "spec.paused: Invalid value: \"string\": spec.paused in body must be of type boolean"),
    (queue("typo", maxInflight=3), 'unknown field "spec.maxInflight"'),
    # Kubernetes' own rule for object names already refuses upper case (and '_').
    (queue("Reports"), 'metadata.name: Invalid value: "Reports"'),
    # A valid object name, but longer than a queue name may be: the Queue's own rule.
    (queue("q" * 64), "metadata.name must be a queue name: at most 63"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("manifest", "message"), MALFORMED, ids=[m["metadata"]["name"][:10] for m, _ in MALFORMED]
)
def test_malformed_queue_is_refused_naming_the_field(
    kubectl: Kubectl, namespace: str, manifest: dict[str, Any], message: str
) -> None:
    created = create(kubectl, namespace, manifest)
    assert created.returncode != 0, f"accepted: {manifest}"
    assert message in created.stderr, created.stderr
    assert kubectl("get", "queues", "-n", namespace, "-o", "name").stdout == ""


def test_longest_queue_name_is_accepted(kubectl: Kubectl, namespace: str) -> None:
    created = create(kubectl, namespace, queue("q" * 63, paused=True))
    assert created.returncode == 0, created.stderr


def test_example_queue_is_accepted_as_written(kubectl: Kubectl, namespace: str) -> None:
    example = REPO / "examples" / "queue.yaml"
    applied = kubectl("apply", "-n", namespace, "-f", str(example))
    assert applied.returncode == 0, applied.stderr
    written = yaml.safe_load(example.read_text())
    shown = json.loads(kubectl("get", "queue", "reports", "-n", namespace, "-o", "json").stdout)
    assert shown["spec"] == {"paused": False, **written["spec"]}
