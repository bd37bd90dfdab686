from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import handlers_for_tests
from kubetasks.client import AsyncClient
from kubetasks.queue import Broker
from kubetasks.settings import WorkerSettings, parse_queues
from kubetasks.worker import Worker

RunWorker = Callable[..., contextlib.AbstractAsyncContextManager[Worker]]


@pytest.fixture(autouse=True)
def _clear_events() -> None:
    handlers_for_tests.EVENTS.clear()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(redis_url) as c:
        yield c


@pytest.fixture
def run_worker(redis_url: str) -> RunWorker:
    """Start a real worker in this event loop (real Redis, real time) for a block."""

    @contextlib.asynccontextmanager
    async def start(queues: str = "default", **options: Any) -> AsyncIterator[Worker]:
        defaults: dict[str, Any] = {
            "concurrency": 4,
            "lease_seconds": 5.0,
            "heartbeat_interval": 0.2,
            "grace_period": 2.0,
            "reclaim_interval": 0.2,
        }
        settings = WorkerSettings(queues=parse_queues(queues), **(defaults | options))
        broker = Broker.from_url(redis_url)
        worker = Worker(broker, settings)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            yield worker
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
            await broker.close()

    return start
