"""Tasks a worker leases ahead of its free slots (``prefetch``) while there is a backlog of
short tasks: held leased, started as slots free up, never lost, cancelled or handed back
like running ones; and never long tasks, which another worker should start instead."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from conftest import RunWorker
from fixtures.waiting import wait_until
from handlers_for_tests import EVENTS
from kubetasks.client import AsyncClient, TaskRequest
from kubetasks.errors import ConfigurationError, TaskFailedError
from kubetasks.settings import WorkerSettings, parse_queues
from kubetasks.worker.loop import RunTimes

#: A quick first task: the worker leases ahead once it knows its tasks are short.
WARM = TaskRequest("test.add", [1, 2])


async def test_leased_ahead_tasks_keep_their_lease_and_run_once(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    """A task buffered longer than the lease is not taken back: the heartbeat extends it."""
    await client.enqueue_many([WARM])
    slow = await client.enqueue("test.sleep", 1.5)
    rest = await client.enqueue_many([TaskRequest("test.record", [f"r{i}"]) for i in range(3)])
    async with run_worker(concurrency=1, prefetch=2, lease_seconds=0.6, heartbeat_interval=0.1,
                          reclaim_interval=0.1) as worker:  # fmt: skip
        await wait_until(lambda: len(worker.buffered) == 2)
        assert await slow.result(timeout=5) == "slept"
        for handle in rest:
            await handle.result(timeout=5)
    assert [label for kind, label in EVENTS if kind == "ran"] == ["r0", "r1", "r2"]
    for handle in rest:
        info = await handle.status()
        assert info is not None and (info.state, info.attempts) == ("succeeded", 1)


async def test_leased_ahead_tasks_are_handed_back_unspent_at_shutdown(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    await client.enqueue_many([WARM])
    slow = await client.enqueue("test.sleep", 0.5)
    rest = await client.enqueue_many([TaskRequest("test.record", [f"r{i}"]) for i in range(3)])
    async with run_worker(concurrency=1, prefetch=2) as worker:
        await wait_until(lambda: len(worker.buffered) == 2)
    assert worker.buffered == {}
    assert await slow.result(timeout=1) == "slept"
    states = [await h.status() for h in rest]
    assert [(i.state, i.attempts) for i in states if i is not None] == [("pending", 0)] * 3
    assert [("started", slow.id)] == EVENTS
    async with run_worker():
        for handle in rest:
            await handle.result(timeout=5)
    assert sorted(label for kind, label in EVENTS if kind == "ran") == ["r0", "r1", "r2"]


async def test_a_leased_ahead_task_cancelled_ends_without_running(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    await client.enqueue_many([WARM])
    slow = await client.enqueue("test.sleep", 1.0)
    doomed, kept = await client.enqueue_many(
        [TaskRequest("test.record", ["doomed"]), TaskRequest("test.record", ["kept"])]
    )
    async with run_worker(concurrency=1, prefetch=2) as worker:
        await wait_until(lambda: doomed.id in worker.buffered)
        assert await client.cancel(doomed.id) == "cancelling"
        with pytest.raises(TaskFailedError) as failure:
            await doomed.result(timeout=5)
        assert await kept.result(timeout=5) == "kept"
        await slow.result(timeout=5)
    assert failure.value.state == "cancelled"
    assert ("ran", "doomed") not in EVENTS


def test_prefetch_must_not_be_negative() -> None:
    with pytest.raises(ConfigurationError, match="prefetch must be >= 0, got -1"):
        WorkerSettings(queues=parse_queues("default"), prefetch=-1)


async def test_long_tasks_are_left_for_an_idle_worker_not_leased_ahead(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    """Three one-second tasks, two workers of two slots: one worker runs two, the other one,
    all at once (a worker holding the third behind its two would leave the other idle)."""
    handles = await client.enqueue_many([TaskRequest("test.sleep", [1.0]) for _ in range(3)])
    async with run_worker(concurrency=2) as first:
        await wait_until(lambda: len(first.running) == 2)
        await asyncio.sleep(0.2)  # time to lease ahead, which it must not do
        assert first.buffered == {}
        async with run_worker(concurrency=2) as second:
            await wait_until(lambda: len(second.running) == 1)
            for handle in handles:
                await handle.result(timeout=5)
    infos = [await h.status() for h in handles]
    assert sorted(Counter(i.worker for i in infos if i is not None).values()) == [1, 2]


def test_leasing_ahead_follows_how_long_recent_tasks_ran() -> None:
    times = RunTimes()
    assert not times.short(0.05), "unknown is not short"
    times.add(0.001)
    assert times.short(0.05)
    for _ in range(10):
        times.add(2.0)
    assert not times.short(0.05), "a run of long tasks turns it off"
    for _ in range(60):
        times.add(0.001)
    assert times.short(0.05), "and short ones back on"


def test_prefetch_below_must_not_be_negative() -> None:
    with pytest.raises(ConfigurationError, match="prefetch_below must be >= 0 seconds, got -1"):
        WorkerSettings(queues=parse_queues("default"), prefetch_below=-1)
