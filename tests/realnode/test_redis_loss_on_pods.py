"""The bundled Redis pod deleted mid-burst, as users run it: the operator, Redis and the
workers are pods of the chart; the local values keep Redis on an emptyDir, so its
StatefulSet brings it back empty (every queue, Queue setting and pool user gone). Every
Task ends Succeeded within seconds of the new Redis being ready, the pool's workers log in
again as their own user, no Task that had finished runs again, and the processes tell
the outage in a few lines. The operator's resync is a day away (``HELM_SETS``): the loss
must be noticed by the operator itself.

Last in the tier (its name sorts last): the other modules' queues would be rebuilt too,
but they should not have to be.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from chart_cluster import EXAMPLES, NAMESPACE, RELEASE, Cluster, wait_for

from kubetasks.vocabulary import API_VERSION

pytestmark = [pytest.mark.timeout(600), pytest.mark.images]

BURST = 40
SET_ITEMS = 60
RECOVERY_SECONDS = 5.0


def phase(task: dict[str, Any]) -> str | None:
    return (task.get("status") or {}).get("phase")


def redis_pod(cluster: Cluster) -> dict[str, Any] | None:
    items = cluster.json("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=redis")[
        "items"
    ]
    live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
    return live[0] if live else None


def ready(pod: dict[str, Any] | None) -> bool:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all(s["ready"] for s in statuses)


def test_a_redis_pod_restarted_empty_mid_burst_costs_seconds(cluster: Cluster) -> None:
    # The examples' pool (up to 4 pods of 5), as the e2e module applies it.
    cluster.run("apply", "-n", NAMESPACE, "-f", str(EXAMPLES / "01-workerpool.yaml"))
    names = [f"loss-{i:03d}" for i in range(BURST)]
    manifests = [
        {"apiVersion": API_VERSION, "kind": "Task", "metadata": {"name": name},
         "spec": {"handler": "kubetasks.sleep", "args": [0.5], "maxRetries": 3}}
        for name in names
    ]  # fmt: skip
    # A TaskSet mid-run too: its items are in Redis only, and its status records which ended.
    manifests.append(
        {"apiVersion": API_VERSION, "kind": "TaskSet", "metadata": {"name": "loss-set"},
         "spec": {"count": SET_ITEMS, "parallelism": 10,
                  "template": {"spec": {"handler": "kubetasks.sleep", "args": [0.5]}}}}
    )  # fmt: skip
    listing = {"apiVersion": "v1", "kind": "List", "items": manifests}
    cluster.run("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(listing))

    def some_done() -> set[str] | None:
        done = {n for n, t in cluster.tasks().items() if n in names and phase(t) == "Succeeded"}
        return done if len(done) >= BURST // 4 else None

    finished_before = wait_for("a quarter of the burst done", some_done, 180)
    old = redis_pod(cluster)
    assert old is not None and ready(old)
    lost_at = time.monotonic()
    cluster.run("delete", "pod", old["metadata"]["name"], "-n", NAMESPACE, "--wait=false")

    def new_ready() -> dict[str, Any] | None:
        pod = redis_pod(cluster)
        fresh = pod is not None and pod["metadata"]["uid"] != old["metadata"]["uid"]
        return pod if fresh and ready(pod) else None

    wait_for("the new Redis pod ready", new_ready, 120)
    back = time.monotonic()

    def all_succeeded() -> dict[str, dict[str, Any]] | None:
        tasks = {n: t for n, t in cluster.tasks().items() if n in names}
        return tasks if all(phase(t) == "Succeeded" for t in tasks.values()) else None

    tasks = wait_for("every Task Succeeded", all_succeeded, RECOVERY_SECONDS + 60)
    took = time.monotonic() - back

    def set_ended() -> dict[str, Any] | None:
        status = cluster.json("get", "taskset", "loss-set", "-n", NAMESPACE).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    set_status = wait_for("the TaskSet ended", set_ended, 120)
    assert set_status["phase"] == "Succeeded", set_status
    assert (set_status["succeeded"], set_status.get("failed", 0)) == (SET_ITEMS, 0), set_status
    again = sorted(n for n, t in tasks.items() if int(t["status"].get("attempts") or 1) > 1)
    since = f"--since={int(time.monotonic() - lost_at) + 5}s"
    operator_log = cluster.run("logs", "-n", NAMESPACE, f"deploy/{RELEASE}-operator", since)
    told = [line for line in operator_log.splitlines()
            if "Redis" in line or "Traceback" in line]  # fmt: skip
    print(f"\nRedis pod restarted empty: back {back - lost_at:.1f} s after the delete; all"
          f" {BURST} Succeeded {took:.1f} s after it was ready; {len(again)} ran again;"
          f" operator lines about Redis: {len(told)}")  # fmt: skip
    assert took <= RECOVERY_SECONDS, f"{took:.1f} s"
    assert not set(again) & finished_before, f"finished Tasks ran again: {again}"
    assert len(again) <= 4 * 5, "more ran again than the pool's 4 pods x 5 run at once"
    print("\n".join(told))
    assert sum("lost its data" in line for line in told) == 1, told
    failures = tracebacks(operator_log)
    # The exceptions first (the summary line shows the start), then the whole tracebacks.
    assert not failures, (
        " | ".join(t.splitlines()[-1] for t in failures) + "\n\n" + "\n\n".join(failures)
    )


def tracebacks(log: str) -> list[str]:
    """The tracebacks in a log: from a "Traceback" line to the exception's line, the first
    line after it that is not indented."""
    found: list[str] = []
    current: list[str] | None = None
    for line in log.splitlines():
        if line.startswith("Traceback"):
            current = [line]
        elif current is not None:
            current.append(line)
            if not line.startswith((" ", "\t")) and line.strip():
                found.append("\n".join(current))
                current = None
    return found
