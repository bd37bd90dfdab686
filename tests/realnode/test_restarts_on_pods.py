"""The operator's container killed mid-burst (SIGKILL from the node) while a PeriodicTask runs
every 2 s, as users run it (the kubelet restarts it): every Task Succeeded within seconds of the new
operator being ready, none ran twice, and the PeriodicTask runs again within seconds, its
slots missed meanwhile counted (which of them runs is decided in fake time in
``tests/controller/test_periodic_runner.py`` and with operator processes in
``tests/controller/test_periodic.py``). The resync is a day away (``HELM_SETS``)."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from chart_cluster import EXAMPLES, NAMESPACE, Cluster, wait_for

from kubetasks.vocabulary import API_VERSION, PARENT_LABEL

pytestmark = [pytest.mark.timeout(600), pytest.mark.images]

BURST = 30
RECOVERY_SECONDS = 5.0
PERIODIC = "every-two"


def phase(task: dict[str, Any]) -> str | None:
    return (task.get("status") or {}).get("phase")


def operator_pod(cluster: Cluster) -> dict[str, Any] | None:
    items = cluster.json(
        "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=operator"
    )["items"]
    live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
    return live[0] if live else None


def ready(pod: dict[str, Any] | None) -> bool:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all(s["ready"] for s in statuses)


def children(cluster: Cluster) -> dict[int, dict[str, Any]]:
    """The PeriodicTask's children by slot (Unix seconds, from the name)."""
    items = cluster.json("get", "tasks", "-n", NAMESPACE, "-l", f"{PARENT_LABEL}={PERIODIC}")
    return {int(t["metadata"]["name"].rsplit("-", 1)[1]): t for t in items["items"]}


def created(task: dict[str, Any]) -> float:
    stamp = task["metadata"]["creationTimestamp"]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def test_a_killed_operator_pod_catches_up_in_seconds(cluster: Cluster) -> None:
    cluster.run("apply", "-n", NAMESPACE, "-f", str(EXAMPLES / "01-workerpool.yaml"))
    template = {"spec": {"handler": "kubetasks.echo", "args": [1]}}
    periodic = {"apiVersion": API_VERSION, "kind": "PeriodicTask", "metadata": {"name": PERIODIC},
                "spec": {"schedule": "@every 2s", "successfulTasksHistoryLimit": 50,
                         "taskTemplate": template}}  # fmt: skip
    cluster.run("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(periodic))
    wait_for("the first periodic child", lambda: children(cluster) or None, 60)
    names = [f"restart-{i:03d}" for i in range(BURST)]
    spec = {"handler": "kubetasks.sleep", "args": [0.3]}
    manifests = [{"apiVersion": API_VERSION, "kind": "Task", "metadata": {"name": n},
                  "spec": spec} for n in names]  # fmt: skip
    listing = {"apiVersion": "v1", "kind": "List", "items": manifests}
    cluster.run("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(listing))

    def some_done() -> bool:
        tasks = cluster.tasks()
        return sum(phase(tasks[n]) == "Succeeded" for n in names if n in tasks) >= BURST // 3

    wait_for("a third of the burst done", some_done, 180)
    old = operator_pod(cluster)
    assert old is not None
    (status,) = old["status"]["containerStatuses"]
    # SIGKILL from the node, as the OOM killer does: the kubelet restarts the container in
    # the same pod. (A force-deleted pod's process would go on running for a while beside
    # its replacement.)
    killed_at = time.time()
    ctr = subprocess.run(
        ["ctr", "--address", str(cluster.node.containerd_address), "-n", "k8s.io",
         "tasks", "kill", "--signal", "SIGKILL", status["containerID"].removeprefix("containerd://")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert ctr.returncode == 0, ctr.stderr

    def new_ready() -> dict[str, Any] | None:
        pod = operator_pod(cluster)
        if pod is None or not ready(pod):
            return None
        (now,) = pod["status"]["containerStatuses"]
        return pod if now["restartCount"] > status["restartCount"] else None

    wait_for("the restarted operator ready", new_ready, 120)
    back_at, back = time.time(), time.monotonic()

    def all_succeeded() -> dict[str, dict[str, Any]] | None:
        tasks = {n: t for n, t in cluster.tasks().items() if n in names}
        done = len(tasks) == BURST and all(phase(t) == "Succeeded" for t in tasks.values())
        return tasks if done else None

    tasks = wait_for("every Task Succeeded", all_succeeded, RECOVERY_SECONDS + 60)
    took = time.monotonic() - back
    twice = sorted(n for n, t in tasks.items() if int(t["status"].get("attempts") or 1) > 1)

    # The PeriodicTask runs again: a child created after the restart, within the bound.
    def child_after_restart() -> dict[str, Any] | None:
        late = [t for t in children(cluster).values() if created(t) >= back_at - 1]
        return min(late, key=created) if late else None

    first = wait_for("a periodic child after the restart", child_after_restart, 30)
    periodic_after = created(first) - back_at
    slots = sorted(children(cluster))
    gap = [s for s in slots if killed_at - 2 < s < created(first) + 1]
    status = cluster.json("get", "periodictask", PERIODIC, "-n", NAMESPACE).get("status") or {}
    print(f"\noperator container killed: ready again {back_at - killed_at:.1f} s later; all"
          f" {BURST} Succeeded {took:.1f} s after; {len(twice)} ran twice; first periodic child"
          f" {periodic_after:+.1f} s after ready (slot {first['metadata']['name']}); slots"
          f" around the downtime: {gap}; missedSlots {status.get('missedSlots')}")  # fmt: skip
    cluster.run("delete", "periodictask", PERIODIC, "-n", NAMESPACE)
    assert took <= RECOVERY_SECONDS
    assert not twice
    assert periodic_after <= RECOVERY_SECONDS
    # The slots that came while no operator ran: the most recent runs at the restart, the
    # earlier ones are counted as missed. How many came depends on how long the restart took
    # (one when it is quick), so the count is checked against them, not against a constant.
    due = [t for t in range(int(killed_at) + 1, int(back_at) + 1) if (t - slots[0]) % 2 == 0]
    missed = int(status.get("missedSlots") or 0)
    if due:
        assert due[-1] in slots, f"the most recent slot of the downtime ran: {due} {slots}"
    ran = [t for t in due if t in slots]
    assert len(ran) + missed >= len(due), f"every slot of {due} ran or is counted: {status}"
