"""The one Task status writer on the real API server: a write names the Task's uid, so a
late write never lands on a re-created Task of the same name; whatever form is tried first,
a Task with or without a status gets the write, and a stale one is refused."""

from __future__ import annotations

import asyncio

import pytest

from fixtures.operator import Tasks
from kubetasks.k8s.api import KubeApi
from kubetasks.k8s.status import TaskStatusWriter
from kubetasks.status_patches import finished_patch, operator_patch, running_patch

T = 1_800_000_000.0


@pytest.fixture
def writer(admin_api: KubeApi) -> TaskStatusWriter:
    return TaskStatusWriter(admin_api)


@pytest.mark.parametrize("fresh", [True, False])
async def test_a_write_lands_with_or_without_a_status_whichever_form_goes_first(
    writer: TaskStatusWriter, tasks: Tasks, namespace: str, fresh: bool
) -> None:
    uid = tasks.create("t", "h")["metadata"]["uid"]
    assert await writer.write(namespace, "t", running_patch(1, "w", T), uid=uid, fresh=fresh)
    assert (tasks.status("t")["phase"], tasks.status("t")["worker"]) == ("Running", "w")
    patch = finished_patch("succeeded", 1, T + 1, result={"n": 1})
    assert await writer.write(namespace, "t", patch, uid=uid, fresh=fresh)
    status = tasks.status("t")
    assert (status["phase"], status["result"], status["worker"]) == ("Succeeded", {"n": 1}, "w")
    assert "nextRetryAt" not in status  # None removes, as in a merge patch


async def test_a_late_write_never_lands_on_a_recreated_task_of_the_same_name(
    writer: TaskStatusWriter, tasks: Tasks, namespace: str
) -> None:
    old = tasks.create("t", "h")["metadata"]["uid"]
    tasks.delete("t")
    new = tasks.create("t", "h")["metadata"]["uid"]
    late = finished_patch("failed", 1, T, error={"type": "Boom", "message": "old one"})
    for fresh in (True, False):
        assert not await writer.write(namespace, "t", late, uid=old, fresh=fresh)
    assert tasks.status("t") == {}
    assert await writer.write(namespace, "t", running_patch(1, "w", T), uid=new)
    for fresh in (True, False):
        assert not await writer.write(namespace, "t", late, uid=old, fresh=fresh)
    assert tasks.status("t")["phase"] == "Running"
    assert writer.refused == 4


async def test_a_stale_write_is_refused_and_a_gone_task_is_no_error(
    writer: TaskStatusWriter, tasks: Tasks, namespace: str
) -> None:
    uid = tasks.create("t", "h")["metadata"]["uid"]
    assert await writer.write(namespace, "t", finished_patch("succeeded", 1, T, result=1), uid=uid)
    assert not await writer.write(namespace, "t", operator_patch("Queued", T, "Enqueued"), uid=uid)
    assert tasks.status("t")["phase"] == "Succeeded"
    assert not await writer.write(namespace, "gone", running_patch(1, "w", T), uid=uid)


async def test_concurrent_first_writes_all_land_in_some_order(
    writer: TaskStatusWriter, tasks: Tasks, namespace: str
) -> None:
    # A worker's Retrying and Succeeded writes race on a Task that had no status: whichever
    # lands first adds it, and the other must still land (or be refused as stale).
    for round_ in range(5):
        name = f"race-{round_}"
        uid = tasks.create(name, "h")["metadata"]["uid"]
        retrying = finished_patch(
            "retry", 1, T, error={"type": "E", "message": "m"}, retry_at=T + 1
        )
        done = finished_patch("succeeded", 2, T + 2, result=2)
        await asyncio.gather(
            writer.write(namespace, name, retrying, uid=uid, fresh=True),
            writer.write(namespace, name, done, uid=uid, fresh=False),
        )
        assert tasks.status(name)["phase"] == "Succeeded"
