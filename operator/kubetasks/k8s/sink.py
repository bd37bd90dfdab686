"""The worker's status sink for tasks that came from Task resources.

Each attempt's start and end are written onto the Task's status (Running with the attempt,
start time and worker pod; then Succeeded with the result, Retrying with the error and the
next attempt's time, or Failed). Writes run in the background so a handler never waits for
the API server, and the end of an attempt is written only after its start. Every write
names the Task's uid (the message id of a task from a Task resource), so a worker's late
report never lands on a re-created Task of the same name.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from kubetasks.k8s.status import TaskStatusWriter
from kubetasks.outcome import Outcome
from kubetasks.queue import Leased
from kubetasks.status_patches import finished_patch, running_patch
from kubetasks.timestamps import rfc3339_millis

log = logging.getLogger("kubetasks.worker")


@dataclass
class _Start:
    worker: str
    at: float
    task: asyncio.Task[bool] | None = None
    sending: bool = False


class ResourceStatusSink:
    """``running_delay``: an attempt that ends sooner than this is never reported Running;
    its final status carries the start time and worker instead. Short tasks then cost one
    API write instead of two, which is what bounds throughput through the API server."""

    def __init__(self, writer: TaskStatusWriter, *, running_delay: float = 0.05) -> None:
        self.writer = writer
        self.running_delay = running_delay
        self._started: dict[tuple[str, int], _Start] = {}
        self._pending: set[asyncio.Task[bool]] = set()

    @staticmethod
    def _where(leased: Leased) -> tuple[str, str] | None:
        resource = leased.message.resource
        if not resource:
            return None
        namespace, _, name = resource.partition("/")
        return namespace, name

    def _spawn(self, coro: Coroutine[Any, Any, bool]) -> asyncio.Task[bool]:
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def started(self, leased: Leased, worker: str, at: float) -> None:
        where = self._where(leased)
        if where is None:
            return
        patch = running_patch(leased.attempt, worker, at)
        key = (leased.message.id, leased.attempt)

        start = _Start(worker, at)

        uid, fresh = leased.message.id, leased.attempt == 1

        async def write_unless_finished() -> bool:
            await asyncio.sleep(self.running_delay)
            start.sending = True
            return await self.writer.write_quietly(*where, patch, uid=uid, fresh=fresh)

        start.task = self._spawn(write_unless_finished())
        self._started[key] = start

    async def finished(self, leased: Leased, outcome: Outcome, at: float) -> None:
        where = self._where(leased)
        if where is None:
            return
        started = self._started.pop((leased.message.id, leased.attempt), None)
        result = json.loads(outcome.result) if outcome.result is not None else None
        patch = finished_patch(
            outcome.kind,
            leased.attempt,
            at,
            result=result,
            error=outcome.error,
            retry_at=outcome.retry_at,
        )
        before = None
        # A first attempt that was never reported Running most likely finds no status yet.
        fresh = leased.attempt == 1
        if started is not None and started.task is not None:
            patch["status"].update(startedAt=rfc3339_millis(started.at), worker=started.worker)
            if started.sending:
                before = started.task  # the Running write is on its way: let it land first
                fresh = False
            else:
                started.task.cancel()

        async def write_after_start() -> bool:
            if before is not None:
                await before
            return await self.writer.write_quietly(
                *where, patch, uid=leased.message.id, fresh=fresh
            )

        self._spawn(write_after_start())

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=10)
