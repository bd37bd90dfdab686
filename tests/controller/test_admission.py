# ruff: noqa: E501  (the table of manifests reads best one case per line)
"""Malformed resources are refused by the API server, with a message that names the field.

Everything here is the generated CRDs at work (schemas, CEL rules, transition rules) on the
real kube-apiserver, through kubectl as a user would meet it. No operator runs: admission
alone must refuse these, and a refused object leaves the namespace's other work untouched.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fixtures.controlplane import Kubectl
from kubetasks.vocabulary import API_VERSION


def task(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Task", "metadata": {"name": name}, "spec": spec}


def periodic(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("schedule", "*/5 * * * *")
    spec.setdefault("taskTemplate", {"spec": {"handler": "kubetasks.echo"}})
    return {
        "apiVersion": API_VERSION,
        "kind": "PeriodicTask",
        "metadata": {"name": name},
        "spec": spec,
    }


def pool(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("queues", [{"name": "default"}])
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": spec,
    }


ECHO = {"handler": "kubetasks.echo"}

MALFORMED = [
    (task("no-handler", args=[1]), "spec.handler: Required value"),
    (task("bad-handler", handler="send email"), "spec.handler: Invalid value"),
    (task("prio", **ECHO, priority=5000), "spec.priority in body should be less than or equal to 1000"),
    (task("retries", **ECHO, maxRetries=-1), "spec.maxRetries in body should be greater than or equal to 0"),
    (task("timeout", **ECHO, timeoutSeconds=0), "spec.timeoutSeconds in body should be greater than or equal to 1"),
    (task("both-times", **ECHO, runAt="2030-01-01T00:00:00Z", delaySeconds=5), "runAt and delaySeconds are exclusive"),
    (task("both-deadlines", **ECHO, deadline="2030-01-01T00:00:00Z", activeDeadlineSeconds=5), "deadline and activeDeadlineSeconds are exclusive"),
    (task("half-unique", **ECHO, uniqueKey="report"), "uniqueKey and uniqueForSeconds go together"),
    (task("backoff", **ECHO, retryBackoff={"baseSeconds": 10, "maxSeconds": 1}), "maxSeconds must be at least baseSeconds"),
    (task("args-type", **ECHO, args="hello"), "spec.args: Invalid value: \"string\": spec.args in body must be of type array"),
    (task("many-args", **ECHO, args=list(range(65))), "spec.args: Too many: 65: must have at most 64 items"),
    (task("queue-name", **ECHO, queue="my queue!"), "spec.queue: Invalid value"),
    (task("queue-upper", **ECHO, queue="Default"), 'spec.queue: Invalid value: "Default"'),
    (task("queue-long", **ECHO, queue="q" * 64), "spec.queue: Too long"),
    (task("results", **ECHO, dependencyResults="Args"), "dependencyResults needs dependsOn"),
    (task("dep-name", **ECHO, dependsOn=["Not_A_Name"]), "spec.dependsOn[0]: Invalid value"),
    (task("run-at", **ECHO, runAt="tomorrow"), "spec.runAt in body must be of type date-time"),
    (task("typo", handlr="kubetasks.echo"), 'unknown field "spec.handlr"'),
    (task("mode", **ECHO, dependsOn=["a"], dependencyResults="All"), 'spec.dependencyResults: Unsupported value: "All"'),
    (periodic("cron-words", schedule="every minute"), "spec.schedule: Invalid value"),
    (periodic("policy", concurrencyPolicy="Sometimes"), 'spec.concurrencyPolicy: Unsupported value: "Sometimes"'),
    (periodic("template-deps", taskTemplate={"spec": {**ECHO, "dependsOn": ["x"]}}), "taskTemplate.spec.dependsOn is not supported"),
    (periodic("template-queue", taskTemplate={"spec": {**ECHO, "queue": "Default"}}), 'spec.taskTemplate.spec.queue: Invalid value: "Default"'),
    (periodic("template-handler", taskTemplate={"spec": {"args": [1]}}), "spec.taskTemplate.spec.handler: Required value"),
    (pool("bounds", minReplicas=5, maxReplicas=2), "minReplicas must not exceed maxReplicas"),
    (pool("no-queues", queues=[]), "spec.queues: Invalid value: 0: spec.queues in body should have at least 1 items"),
    (pool("pool-queue-upper", queues=[{"name": "Default"}]), 'spec.queues[0].name: Invalid value: "Default"'),
    (pool("twice", queues=[{"name": "a"}, {"name": "a"}]), "each queue may be listed only once"),
    (pool("idle", concurrency=0), "spec.concurrency in body should be greater than or equal to 1"),
]  # fmt: skip


def create(kubectl: Kubectl, namespace: str, manifest: dict[str, Any]) -> Any:
    return kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest))


@pytest.mark.parametrize(
    ("manifest", "message"), MALFORMED, ids=[m["metadata"]["name"] for m, _ in MALFORMED]
)
def test_malformed_resource_is_refused_naming_the_field(
    kubectl: Kubectl, namespace: str, manifest: dict[str, Any], message: str
) -> None:
    created = create(kubectl, namespace, manifest)
    assert created.returncode != 0, f"accepted: {manifest}"
    assert message in created.stderr, created.stderr
    plural = manifest["kind"].lower() + "s"
    gone = kubectl("get", plural, manifest["metadata"]["name"], "-n", namespace)
    assert "NotFound" in gone.stderr


def test_refusals_leave_other_work_alone_and_defaults_are_filled(
    kubectl: Kubectl, namespace: str
) -> None:
    assert create(kubectl, namespace, task("good", **ECHO)).returncode == 0
    assert create(kubectl, namespace, task("bad", **ECHO, priority=5000)).returncode != 0
    shown = kubectl("get", "task", "good", "-n", namespace, "-o", "json")
    spec = json.loads(shown.stdout)["spec"]
    assert spec == {
        "handler": "kubetasks.echo",
        "queue": "default",
        "priority": 0,
        "maxRetries": 3,
        "cancel": False,
        "dependencyResults": "None",
        "dependencyTimeoutSeconds": 86400,
    }
    explain = kubectl("explain", "task.spec.retryBackoff")
    assert explain.returncode == 0, explain.stderr
    assert "Wait between attempts (exponential with jitter and a cap)" in " ".join(
        explain.stdout.split()
    )


def test_updates_that_would_rewrite_history_are_refused(kubectl: Kubectl, namespace: str) -> None:
    assert create(kubectl, namespace, task("t", **ECHO, cancel=True)).returncode == 0

    def patch(body: dict[str, Any], *extra: str) -> Any:
        return kubectl(
            "patch", "task", "t", "-n", namespace, "--type=merge", "-p", json.dumps(body), *extra
        )

    refused = patch({"spec": {"handler": "other.handler"}})
    assert "spec.handler is immutable" in refused.stderr
    refused = patch({"spec": {"cancel": False}})
    assert "a cancelled Task cannot be resumed" in refused.stderr
    status = "--subresource=status"
    assert patch({"status": {"phase": "Running", "attempts": 2}}, status).returncode == 0
    assert "status.attempts cannot decrease" in patch({"status": {"attempts": 1}}, status).stderr
    assert patch({"status": {"phase": "Cancelled"}}, status).returncode == 0
    refused = patch({"status": {"phase": "Running"}}, status)
    assert "a finished Task's phase cannot change" in refused.stderr
    shown = json.loads(kubectl("get", "task", "t", "-n", namespace, "-o", "json").stdout)
    assert (shown["status"]["phase"], shown["status"]["attempts"]) == ("Cancelled", 2)
