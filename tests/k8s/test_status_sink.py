"""The worker's status sink through a cuttable proxy to the real API server: writes made
while the API server cannot be reached land once it can; a write for a Task that was
deleted, or deleted and re-created under the same name, is dropped without holding up the
others; and a stopping worker gives pending writes a short, bounded try."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from devenv.controlplane import ControlPlane
from fixtures.operator import Tasks
from fixtures.proxy import Proxy
from kubetasks.k8s.api import KubeApi
from kubetasks.k8s.sink import ResourceStatusSink
from kubetasks.k8s.status import TaskStatusWriter
from kubetasks.outcome import Outcome
from kubetasks.queue import Leased, TaskMessage

T = 1_800_000_000.0


@pytest.fixture
async def sink(proxy: Proxy, control_plane: ControlPlane) -> AsyncIterator[ResourceStatusSink]:
    api = KubeApi(proxy.through(control_plane.admin).configuration())
    sink = ResourceStatusSink(TaskStatusWriter(api))
    yield sink
    await sink.close()
    await api.close()


async def run_attempt(sink: ResourceStatusSink, namespace: str, name: str, uid: str) -> None:
    leased = Leased(TaskMessage(id=uid, handler="h", resource=f"{namespace}/{name}"), 1)
    await sink.started(leased, "pod", T)
    await sink.finished(leased, Outcome("succeeded", '"done"'), T + 1)


async def wait_drained(sink: ResourceStatusSink, timeout: float) -> float:
    start = time.monotonic()
    while len(sink.backlog):
        assert time.monotonic() - start < timeout, f"{len(sink.backlog)} writes still pending"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_writes_for_deleted_or_recreated_tasks_are_dropped_and_the_rest_land(
    sink: ResourceStatusSink, proxy: Proxy, tasks: Tasks, namespace: str
) -> None:
    uids = {name: tasks.create(name, "h")["metadata"]["uid"] for name in
            ["gone", "reborn", *(f"kept-{i}" for i in range(5))]}  # fmt: skip
    proxy.cut()
    for name, uid in uids.items():  # the doomed ones first: they are probed first
        await run_attempt(sink, namespace, name, uid)
    await asyncio.sleep(1.5)
    assert len(sink.backlog) == 7 and sink.outage.since is not None
    tasks.delete("gone")
    tasks.delete("reborn")
    tasks.create("reborn", "h")
    proxy.restore()
    took = await wait_drained(sink, timeout=3)
    print(f"\nall writes settled {took:.2f}s after the API server came back")
    assert took < 2
    for i in range(5):
        status = tasks.status(f"kept-{i}")
        assert (status["phase"], status["result"], status["worker"]) == ("Succeeded", "done", "pod")
    assert tasks.get("gone") is None
    assert tasks.status("reborn") == {}  # the old uid's write never lands on the new Task
    assert sink.writer.writes == 5 and sink.writer.refused == 1
    assert sink.outage.since is None and proxy.refused >= 1


async def test_a_stopping_worker_tries_its_pending_writes_for_a_bounded_time(
    sink: ResourceStatusSink, proxy: Proxy, tasks: Tasks, namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    uids = {f"t-{i}": tasks.create(f"t-{i}", "h")["metadata"]["uid"] for i in range(3)}
    proxy.cut()
    for name, uid in uids.items():
        await run_attempt(sink, namespace, name, uid)
    start = time.monotonic()
    await sink.close(timeout=1.0)
    assert time.monotonic() - start < 1.5
    assert [tasks.status(name) for name in uids] == [{}, {}, {}]
    assert "3 Task status writes not made at shutdown" in caplog.text


async def test_writes_pending_at_shutdown_land_when_the_api_server_returns_in_time(
    sink: ResourceStatusSink, proxy: Proxy, tasks: Tasks, namespace: str
) -> None:
    uids = {f"t-{i}": tasks.create(f"t-{i}", "h")["metadata"]["uid"] for i in range(3)}
    proxy.cut()
    for name, uid in uids.items():
        await run_attempt(sink, namespace, name, uid)
    closing = asyncio.create_task(sink.close(timeout=10))
    await asyncio.sleep(0.5)
    proxy.restore()
    start = time.monotonic()
    await closing
    assert time.monotonic() - start < 2
    assert [tasks.status(name)["phase"] for name in uids] == ["Succeeded"] * 3


async def test_a_taskset_item_is_never_written_to_the_api_even_when_it_names_a_resource(
    sink: ResourceStatusSink, proxy: Proxy, tasks: Tasks, namespace: str
) -> None:
    # An item of a TaskSet reports to Redis only. Even a message that names a Task (which
    # the operator never builds for an item) makes the sink write nothing.
    uid = tasks.create("bystander", "h")["metadata"]["uid"]
    item = TaskMessage(
        id=uid, handler="h", resource=f"{namespace}/bystander", taskset="set", index=3
    )
    leased = Leased(item, 1)
    await sink.started(leased, "pod", T)
    await sink.finished(leased, Outcome("succeeded", '"done"'), T + 1)
    await wait_drained(sink, timeout=3)
    assert sink.writer.writes == 0 and not sink.backlog
    assert tasks.status("bystander") == {}
