"""A TaskSet item's ctx.progress on a real server: coalesced per item (a tight loop of
reports is a couple of script calls), recorded only while the attempt is the worker's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from kubetasks.queue import Broker, TaskMessage
from kubetasks.worker.itemprogress import ItemProgress

WORKER = "w-1"


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[Broker]:
    b = Broker.from_url(redis_url)
    await b.redis.flushall()
    yield b
    await b.close()


async def script_calls(broker: Broker) -> int:
    stats = await broker.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_tight_loop_of_reports_is_one_write_per_interval_and_the_last_value_lands(
    broker: Broker,
) -> None:
    items = [TaskMessage(id="u-0", handler="test.item", taskset="s", index=0)]
    await broker.restore_taskset("default", "u", "s", 1, [], [])
    assert await broker.enqueue_items("default", "u", "s", 1, items, 1) == 1
    (leased,) = (await broker.lease("default", WORKER, 1, 30.0)).tasks
    # The script is loaded first (a first EVALSHA is refused with NOSCRIPT, then sent again).
    assert await broker.item_progress("default", WORKER, "u-0", leased.attempt, 0.0)
    progress = ItemProgress(broker, WORKER, interval=0.5)
    before, started = await script_calls(broker), time.monotonic()
    for step in range(1, 101):
        progress.report(leased, step / 200)
        await asyncio.sleep(0.005)  # 100 reports over half a second or more
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.8)
    calls = await script_calls(broker) - before
    # The first at once, then the latest once per interval: not one per report.
    assert 2 <= calls <= 2 + elapsed / 0.5, (calls, elapsed)
    state = await broker.taskset_state("default", "u", indexes=False)
    assert state.running_progress == 0.5
    await progress.close()


async def test_a_report_after_the_attempt_ended_is_refused(broker: Broker) -> None:
    items = [TaskMessage(id="u-0", handler="test.item", taskset="s", index=0)]
    await broker.restore_taskset("default", "u", "s", 1, [], [])
    await broker.enqueue_items("default", "u", "s", 1, items, 1)
    (leased,) = (await broker.lease("default", WORKER, 1, 30.0)).tasks
    assert await broker.item_progress("default", WORKER, "u-0", leased.attempt, 0.3)
    assert not await broker.item_progress("default", "w-2", "u-0", leased.attempt, 0.9)
    assert not await broker.item_progress("default", WORKER, "u-0", leased.attempt + 1, 0.9)
    state = await broker.taskset_state("default", "u", indexes=False)
    assert (state.running, state.running_progress) == (1, 0.3)
