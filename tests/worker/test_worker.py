"""The worker runtime against a real Redis: what a user of the queue would observe."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

import pytest

from conftest import RunWorker
from fixtures.waiting import wait_until
from handlers_for_tests import EVENTS
from kubetasks.client import AsyncClient, TaskRequest
from kubetasks.errors import DuplicateTaskError, TaskFailedError
from kubetasks.outcome import BackoffPolicy


async def test_handler_result_reaches_the_client(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    async with run_worker():
        sync_handle = await client.enqueue("test.add", 2, 3)
        echo_handle = await client.enqueue("kubetasks.echo", 1, x="y")
        assert await sync_handle.result(timeout=5) == 5
        assert await echo_handle.result(timeout=5) == {"args": [1], "kwargs": {"x": "y"}}
        info = await sync_handle.status()
        assert info is not None
        assert (info.state, info.attempts) == ("succeeded", 1)


async def test_each_attempt_is_logged_with_its_outcome(
    client: AsyncClient, run_worker: RunWorker, caplog: pytest.LogCaptureFixture
) -> None:
    """What `kubectl logs` of a worker pod shows: one line when an attempt starts, one with
    its outcome and duration (and the error of a failed one)."""
    caplog.set_level("INFO", logger="kubetasks.worker")
    async with run_worker():
        ok = await client.enqueue("test.add", 2, 3)
        bad = await client.enqueue("test.permanent", max_retries=0)
        await ok.result(timeout=5)
        await wait_until(
            lambda: any("test.permanent attempt 1 failed" in m for m in caplog.messages)
        )
    lines = [m for m in caplog.messages if m.startswith("task ")]
    assert f"task {ok.id} test.add attempt 1 started" in lines
    assert any(m.startswith(f"task {ok.id} test.add attempt 1 succeeded in ") for m in lines)
    (failed,) = [m for m in lines if m.startswith(f"task {bad.id} test.permanent attempt 1 f")]
    assert failed.endswith(": PermanentTaskError: this input can never work")


async def test_higher_priority_runs_first_then_fifo(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    await client.enqueue_many(
        [
            TaskRequest("test.record", ["low-1"], priority=-1),
            TaskRequest("test.record", ["mid-1"]),
            TaskRequest("test.record", ["high"], priority=10),
            TaskRequest("test.record", ["mid-2"]),
            TaskRequest("test.record", ["low-2"], priority=-1),
        ]
    )
    async with run_worker(concurrency=1):
        await wait_until(lambda: len(EVENTS) == 5)
    assert [label for _, label in EVENTS] == ["high", "mid-1", "mid-2", "low-1", "low-2"]


async def test_idle_worker_starts_a_new_task_without_polling_delay(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    async with run_worker(idle_wait=5.0):
        await asyncio.sleep(0.3)  # the worker is now blocked waiting for work
        latencies = []
        for i in range(5):
            start = time.monotonic()
            handle = await client.enqueue("test.record", f"t{i}")
            await handle.result(timeout=5)
            latencies.append(time.monotonic() - start)
    # With a 5 s idle wait, only the wake-up list can make this fast.
    assert max(latencies) < 0.5, latencies


@pytest.mark.parametrize("others", [0, 10], ids=["alone", "among-a-stream-of-others"])
async def test_delayed_task_waits_then_runs_on_time(
    client: AsyncClient, run_worker: RunWorker, others: int
) -> None:
    # The background promoter is slowed out of the way: the delayed task's own wake-up must
    # teach the idle worker when it is due, also while other wake-ups bring tasks (those
    # skip the promoter).
    async with run_worker(idle_wait=5.0, promote_interval=30.0):
        await asyncio.sleep(0.3)
        start = time.time()
        delayed = await client.enqueue("test.record", "later", delay=0.6)
        assert delayed.outcome == "scheduled"
        for i in range(others):
            handle = await client.enqueue("test.record", f"now-{i}")
            await handle.result(timeout=5)
        await delayed.result(timeout=5)
        info = await delayed.status()
    assert info is not None and info.started_at is not None
    assert 0.55 <= info.started_at - start < 1.0


async def test_a_woken_worker_asks_redis_once_per_task(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    async with run_worker(idle_wait=5.0, promote_interval=30.0) as worker:
        await asyncio.sleep(0.3)  # started: the first promote is behind us
        calls: Counter[str] = Counter()
        for name in ("lease", "promote"):
            real = getattr(worker.broker, name)

            async def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
                calls[_name] += 1
                return await _real(*args)

            setattr(worker.broker, name, counted)
        for i in range(10):
            handle = await client.enqueue("test.record", f"t{i}")
            await handle.result(timeout=5)
    # One wake-up token, one lease, no second look at an empty queue, no promoter round trip.
    assert calls == {"lease": 10}, calls


async def test_failures_retry_with_exponential_backoff(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    async with run_worker():
        handle = await client.enqueue(
            "test.flaky",
            succeed_on=3,
            max_retries=5,
            backoff=BackoffPolicy(base=0.2, cap=10, jitter=False),
        )
        assert await handle.result(timeout=10) == {"attempt": 3}
    times = [t for kind, (_, t) in EVENTS if kind == "attempt"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 3
    assert 0.2 <= gaps[0] < 0.45 and 0.4 <= gaps[1] < 0.7, gaps
    stats = await client.queue_stats("default")
    assert (stats.processed, stats.failed) == (1, 2)


async def test_exhausted_retries_end_failed_with_the_error(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    async with run_worker():
        handle = await client.enqueue(
            "test.flaky", succeed_on=99, max_retries=1, backoff=BackoffPolicy(0.05, 1, False)
        )
        with pytest.raises(TaskFailedError) as failure:
            await handle.result(timeout=5)
    assert failure.value.state == "failed"
    assert failure.value.error is not None
    assert failure.value.error["type"] == "ValueError"
    assert "attempt 2 fails" in failure.value.error["message"]
    assert "gave up after 2 attempts" in failure.value.error["message"]
    assert (await client.queue_stats("default")).dead == 1


async def test_retry_task_asks_for_a_specific_delay(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    async with run_worker():
        start = time.monotonic()
        handle = await client.enqueue("test.retry_later")
        assert await handle.result(timeout=5) == 2
        assert time.monotonic() - start >= 0.3


@pytest.mark.parametrize(
    ("handler", "args", "error_type", "message"),
    [
        ("test.permanent", [], "PermanentTaskError", "can never work"),
        ("no.such.handler", [], "HandlerNotFoundError", "no handler registered"),
        ("test.add", [1], "InvalidArgumentsError", "missing a required argument"),
        ("test.not_json", [], "ResultNotJsonError", "of type object, which is not JSON"),
    ],
)
async def test_hopeless_tasks_fail_at_once_with_a_clear_error(
    client: AsyncClient,
    run_worker: RunWorker,
    handler: str,
    args: list[int],
    error_type: str,
    message: str,
) -> None:
    async with run_worker():
        handle = await client.enqueue(handler, *args, max_retries=5)
        with pytest.raises(TaskFailedError) as failure:
            await handle.result(timeout=5)
        info = await handle.status()
    assert failure.value.error is not None
    assert failure.value.error["type"] == error_type
    assert message in failure.value.error["message"]
    assert info is not None and info.attempts == 1


@pytest.mark.parametrize("handler", ["test.sleep", "test.sync_sleep"])
async def test_timeout_stops_the_attempt(
    client: AsyncClient, run_worker: RunWorker, handler: str
) -> None:
    async with run_worker():
        start = time.monotonic()
        handle = await client.enqueue(handler, 30, timeout=0.3, max_retries=0)
        with pytest.raises(TaskFailedError) as failure:
            await handle.result(timeout=5)
    assert time.monotonic() - start < 2
    assert failure.value.error is not None
    assert failure.value.error["type"] == "TaskTimeoutError"


async def test_unique_key_refuses_duplicates_until_the_task_ends(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    first = await client.enqueue("test.record", "once", unique_for=60)
    with pytest.raises(DuplicateTaskError) as dup:
        await client.enqueue("test.record", "once", unique_for=60)
    assert dup.value.existing_id == first.id
    other = await client.enqueue("test.record", "different-args", unique_for=60)
    assert other.outcome == "queued"
    async with run_worker():
        await first.result(timeout=5)
        again = await client.enqueue("test.record", "once", unique_for=60)
        await again.result(timeout=5)
    assert again.id != first.id


async def test_cancel_a_running_task_tells_its_handler(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    async with run_worker():
        handle = await client.enqueue("test.sleep", 30)
        await wait_until(lambda: ("started", handle.id) in EVENTS)
        assert await client.cancel(handle.id) == "cancelling"
        start = time.monotonic()
        with pytest.raises(TaskFailedError) as failure:
            await handle.result(timeout=5)
        assert time.monotonic() - start < 1.5
    assert failure.value.state == "cancelled"


async def test_cancel_a_waiting_task_means_it_never_runs(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    handle = await client.enqueue("test.record", "never", delay=0.3)
    assert await client.cancel(handle.id) == "cancelled"
    async with run_worker():
        await asyncio.sleep(0.6)
    assert EVENTS == []
    info = await handle.status()
    assert info is not None and info.state == "cancelled"


async def test_weighted_queues_share_the_worker(client: AsyncClient, run_worker: RunWorker) -> None:
    await client.enqueue_many(
        [TaskRequest("test.record", [f"high-{i}"], queue="high") for i in range(200)]
        + [TaskRequest("test.record", [f"low-{i}"], queue="low") for i in range(200)]
    )
    async with run_worker("high:3,low:1", concurrency=1, max_batch=1):
        await wait_until(lambda: len(EVENTS) >= 100)
    first = [label for _, label in EVENTS[:100]]
    highs = sum(label.startswith("high") for label in first)
    assert 60 <= highs <= 90, highs  # about 75 expected
    assert highs < 100  # the low queue is not starved


async def test_strict_queues_drain_the_first_before_the_next(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    await client.enqueue_many(
        [TaskRequest("test.record", [f"low-{i}"], queue="low") for i in range(20)]
        + [TaskRequest("test.record", [f"high-{i}"], queue="high") for i in range(20)]
    )
    async with run_worker("high:2,low:1", strict_priority=True, concurrency=1):
        await wait_until(lambda: len(EVENTS) == 40)
    assert all(label.startswith("high") for _, label in EVENTS[:20])


async def test_shell_handler_exists_only_when_allowed(
    client: AsyncClient, run_worker: RunWorker
) -> None:
    async with run_worker():
        handle = await client.enqueue("kubetasks.shell", ["true"], max_retries=0)
        with pytest.raises(TaskFailedError) as failure:
            await handle.result(timeout=5)
    assert failure.value.error is not None
    assert failure.value.error["type"] == "HandlerNotFoundError"
