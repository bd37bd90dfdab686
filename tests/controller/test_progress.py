"""ctx.progress reaches the Task's status.progress, coalesced: a handler reporting ten times
in a second costs a couple of writes, and the final status carries the last value."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch

from fixtures.operator import Operator, StartWorkers, Tasks
from kubetasks.vocabulary import GROUP, VERSION
from kubetasks.worker.context import TaskContext


def test_progress_writes_are_coalesced_and_the_last_lands_with_the_final_status(
    operator: Operator,
    task_workers: StartWorkers,
    tasks: Tasks,
    kube_api: k8s.ApiClient,
    namespace: str,
) -> None:
    task_workers(1)
    operator.wait_ready()
    created = tasks.create("steps", "test.progress", args=[10, 1.0])
    seen: list[dict[str, Any]] = []

    def follow() -> None:
        w = watch.Watch()  # type: ignore[no-untyped-call]
        for event in w.stream(  # type: ignore[no-untyped-call]
            k8s.CustomObjectsApi(kube_api).list_namespaced_custom_object,
            GROUP, VERSION, namespace, "tasks",
            field_selector="metadata.name=steps",
            resource_version=created["metadata"]["resourceVersion"],
            timeout_seconds=60,
        ):  # fmt: skip
            status = event["object"].get("status") or {}
            seen.append(status)
            if status.get("phase") == "Succeeded":
                w.stop()  # type: ignore[no-untyped-call]

    watcher = threading.Thread(target=follow)
    watcher.start()
    tasks.wait_phase("steps", "Succeeded", timeout=60)
    watcher.join(60)
    final = tasks.status("steps")
    assert final["result"] == 10
    assert final["progress"]["fraction"] == 1.0
    assert final["progress"]["message"] == "step 10 of 10"
    assert final["progress"]["updatedAt"] <= final["finishedAt"]
    # Each progress write carries a new updatedAt; other writers' events (the operator's)
    # repeat the value they found, so count the distinct values the resource went through.
    written = {s["progress"]["updatedAt"]: s for s in seen if s.get("progress")}
    # The first report is written at once, the other nine fall within the interval (3 s)
    # and the last of them is carried by the final status.
    assert 1 <= len(written) <= 2, [s.get("progress") for s in written.values()]
    assert list(written.values())[-1]["phase"] == "Succeeded"


@pytest.mark.parametrize(
    ("fraction", "message", "problem"),
    [(1.5, "", "from 0 to 1"), (-0.1, "", "from 0 to 1"), ("half", "", "a number"),
     (0.5, "x" * 257, "at most 256 characters")],
)  # fmt: skip
def test_progress_is_validated(fraction: Any, message: str, problem: str) -> None:
    ctx = TaskContext("id", "h", "default", 1, 0, None, None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=problem):
        ctx.progress(fraction, message)
