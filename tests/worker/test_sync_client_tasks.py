"""A task sent by the sync ``kubetasks.Client`` is leased and run by a worker exactly as one
sent by ``AsyncClient``: same message, same attempts, same result and record."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from typing import Any

from conftest import RunWorker
from kubetasks.client import AsyncClient, Client, TaskRequest
from kubetasks.errors import TaskFailedError
from kubetasks.outcome import BackoffPolicy
from kubetasks.queue.message import TaskInfo


def _comparable(info: TaskInfo | None) -> TaskInfo:
    """``info`` without what differs between two runs of one task: its id and its times."""
    assert info is not None
    message = dataclasses.replace(info.message, id="-")
    return dataclasses.replace(
        info, id="-", message=message, worker=None, enqueued_at=None, started_at=None,
        finished_at=None, next_retry_at=None,
    )  # fmt: skip


async def _outcome(result: Awaitable[Any]) -> Any:
    """The task's result, or how it failed."""
    try:
        return await result
    except TaskFailedError as exc:
        return (exc.state, exc.error and exc.error["type"])


async def test_a_task_from_the_sync_client_runs_like_one_from_the_async_client(
    client: AsyncClient, run_worker: RunWorker, redis_url: str
) -> None:
    requests: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("test.add", (2, 3), {"priority": 3, "timeout": 5}),
        ("kubetasks.echo", (1,), {"x": "y", "max_retries": 0}),
        ("test.flaky", (), {"succeed_on": 2, "backoff": BackoffPolicy(0.01, 0.01, False)}),
        ("test.permanent", (), {"max_retries": 2}),
    ]
    sync_client = Client(redis_url)
    try:
        async with run_worker():
            seen = []
            for handler, args, options in requests:
                from_sync = await asyncio.to_thread(sync_client.enqueue, handler, *args, **options)
                from_async = await client.enqueue(handler, *args, **options)
                sync_outcome = await _outcome(asyncio.to_thread(from_sync.result, 10))
                async_outcome = await _outcome(from_async.result(timeout=10))
                assert sync_outcome == async_outcome, handler
                sync_info = await asyncio.to_thread(from_sync.status)
                async_info = await from_async.status()
                assert _comparable(sync_info) == _comparable(async_info), handler
                seen.append((sync_outcome, sync_info and sync_info.attempts))
        assert seen == [
            (5, 1),
            ({"args": [1], "kwargs": {"x": "y"}}, 1),
            ({"attempt": 2}, 2),
            (("failed", "PermanentTaskError"), 1),
        ]
    finally:
        await asyncio.to_thread(sync_client.close)


async def test_a_batch_from_the_sync_client_is_drained_by_the_worker(
    run_worker: RunWorker, redis_url: str
) -> None:
    with_sync = Client(redis_url)
    try:
        handles = await asyncio.to_thread(
            with_sync.enqueue_many, [TaskRequest("test.add", [i, i]) for i in range(600)]
        )
        async with run_worker(concurrency=20):
            results = [await asyncio.to_thread(h.result, 20) for h in handles]
        assert results == [2 * i for i in range(600)]
    finally:
        await asyncio.to_thread(with_sync.close)
