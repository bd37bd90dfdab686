"""The worker's status sink for tasks that came from Task resources.

Each attempt's start and end are written onto the Task's status (Running with the attempt,
start time and worker pod; then Succeeded with the result, Retrying with the error and the
next attempt's time, or Failed). Writes run in the background so a handler never waits for
the API server, and the end of an attempt is written only after its start, or instead of it:
the end carries the start's time and worker. Every write names the Task's uid (the message
id of a task from a Task resource), so a worker's late report never lands on a re-created
Task of the same name.

A write the API server does not answer waits and is tried again (see
:mod:`kubetasks.k8s.backlog` for the rules: newest write per Task, bounded, one probe at a
time while failing), so statuses trail an outage by about a second. An outage is logged
twice, when writes begin to fail and when they succeed again, not once per write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubetasks.k8s.api import ConflictError, is_unavailable, reason_text
from kubetasks.k8s.backlog import (
    MAX_PENDING_TASKS,
    RETRY_CAP,
    Backlog,
    DropWarnings,
    Outage,
    Result,
    Write,
)
from kubetasks.k8s.status import TaskStatusWriter
from kubetasks.outcome import Outcome
from kubetasks.queue import Leased
from kubetasks.status_patches import finished_patch, running_patch
from kubetasks.timestamps import rfc3339_millis

log = logging.getLogger("kubetasks.worker")

#: Most writes on the wire at once (the API client pools 16 connections).
MAX_SENDING = 32
#: Seconds a stopping worker gives its pending writes; the worker's grace period (25 s by
#: default) and this fit in the pod's 30 s termination grace period.
CLOSE_FLUSH_SECONDS = 3.0


@dataclass
class _Start:
    worker: str
    at: float
    sent: bool = False
    """Its Running write went out (so the Task has a status by the time the end goes)."""


def end_patch(leased: Leased, outcome: Outcome, at: float, start: _Start | None) -> dict[str, Any]:
    """The status when an attempt ends, with its start's time and worker when known: so the
    end says all its start (Running) would have said, and may be written instead of it."""
    patch = finished_patch(
        outcome.kind,
        leased.attempt,
        at,
        result=json.loads(outcome.result) if outcome.result is not None else None,
        error=outcome.error,
        retry_at=outcome.retry_at,
    )
    if start is not None:
        patch["status"].update(startedAt=rfc3339_millis(start.at), worker=start.worker)
    return patch


class ResourceStatusSink:
    """``running_delay``: an attempt that ends sooner than this is never reported Running;
    its final status carries the start time and worker instead. Short tasks then cost one
    API write instead of two, which is what bounds throughput through the API server.
    ``clock``: monotonic seconds, for the delay and the retries."""

    def __init__(
        self,
        writer: TaskStatusWriter,
        *,
        running_delay: float = 0.05,
        progress_interval: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.writer = writer
        self.running_delay = running_delay
        self.progress_interval = progress_interval
        self._progress: dict[tuple[str, int], tuple[dict[str, Any], float]] = {}
        """Per running attempt: the last progress reported and when its write is due."""
        self.clock = clock
        self.backlog = Backlog()
        self.outage = Outage()
        self._drop_warnings = DropWarnings()
        self._started: dict[tuple[str, int], _Start] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._closing = False

    @staticmethod
    def _where(leased: Leased) -> tuple[str, str] | None:
        resource = leased.message.resource
        # A TaskSet item has no resource of its own: it reports to Redis only, and the
        # operator writes the set's status in aggregate.
        if not resource or leased.message.taskset is not None:
            return None
        namespace, _, name = resource.partition("/")
        return namespace, name

    async def started(self, leased: Leased, worker: str, at: float) -> None:
        where = self._where(leased)
        if where is None:
            return
        uid, attempt = leased.message.id, leased.attempt
        self._started[(uid, attempt)] = _Start(worker, at)
        patch = running_patch(attempt, worker, at)
        due = self.clock() + self.running_delay
        self._submit(Write(*where, uid, attempt, False, patch, fresh=attempt == 1, due=due))

    def progress(self, leased: Leased, fraction: float, message: str, at: float) -> None:
        """A progress write, coalesced: it replaces the attempt's pending write (it says
        all a Running write says), and is due no sooner than ``progress_interval`` after
        the previous one, so a handler reporting often costs one write per interval."""
        where = self._where(leased)
        uid, attempt = leased.message.id, leased.attempt
        start = self._started.get((uid, attempt))
        if where is None or start is None:
            return  # not a Task resource's, or the attempt has ended already
        value = {"fraction": fraction, "message": message, "updatedAt": rfc3339_millis(at)}
        previous = self._progress.get((uid, attempt))
        now = self.clock()
        due = now if previous is None else max(now, previous[1] + self.progress_interval)
        self._progress[(uid, attempt)] = (value, due)
        patch = running_patch(attempt, start.worker, start.at)
        patch["status"]["progress"] = value
        fresh = attempt == 1 and not start.sent
        self._submit(Write(*where, uid, attempt, False, patch, fresh=fresh, due=due))

    async def finished(self, leased: Leased, outcome: Outcome, at: float) -> None:
        where = self._where(leased)
        if where is None:
            return
        uid, attempt = leased.message.id, leased.attempt
        start = self._started.pop((uid, attempt), None)
        patch = end_patch(leased, outcome, at, start)
        last = self._progress.pop((uid, attempt), None)
        if last is not None:
            patch["status"]["progress"] = last[0]  # the last value, with the final status
        # A first attempt that was never reported Running most likely finds no status yet.
        fresh = attempt == 1 and (start is None or not start.sent)
        self._submit(Write(*where, uid, attempt, True, patch, fresh=fresh, due=self.clock()))

    async def close(self, timeout: float = CLOSE_FLUSH_SECONDS) -> None:
        """Send what is pending (Running writes without their delay) for up to ``timeout``
        seconds; what is left then is the operator's repair's to set."""
        self._closing = True
        if self._dispatcher is None:
            return
        self._wake.set()
        done, _ = await asyncio.wait({self._dispatcher}, timeout=timeout)
        if done:
            if not self._dispatcher.cancelled():
                self._dispatcher.result()  # a bug in the dispatcher is not kept quiet
            return
        left = len(self.backlog)
        for task in (self._dispatcher, *self._sending):
            task.cancel()
        await asyncio.gather(self._dispatcher, *self._sending, return_exceptions=True)
        log.warning(
            "%d Task status writes not made at shutdown (the API server did not take them "
            "within %gs); the operator's repair sets those statuses",
            left,
            timeout,
        )

    def _submit(self, write: Write) -> None:
        self.outage.submitted()
        self._dropped(self.backlog.add(write))
        self._wake.set()
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch(), name="status-writes")

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            now = self.clock()
            room = MAX_SENDING - len(self._sending)
            due_by = math.inf if self._closing else now
            for write in self.backlog.take(due_by, self.outage.allowance(now, room)):
                self.outage.sent(write)
                task = asyncio.create_task(self._send(write))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
            if self._closing and not self.backlog:
                return
            next_due = self.backlog.next_due()
            if self._closing and next_due is not None:
                next_due = now  # at shutdown no write waits for its delay
            full = len(self._sending) >= MAX_SENDING
            wake_at = None if full else self.outage.wake_at(next_due)
            timeout = None if wake_at is None else max(0.0, wake_at - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _send(self, write: Write) -> None:
        start = None if write.final else self._started.get((write.uid, write.attempt))
        if start is not None:
            start.sent = True
        result: Result
        reason = ""
        try:
            landed = await self.writer.write(
                write.namespace, write.name, write.patch, uid=write.uid, fresh=write.fresh
            )
            result = "landed" if landed else "dropped"
        except ConflictError:
            result = "dropped"  # the uid precondition: the Task was replaced
        except Exception as exc:
            if is_unavailable(exc):
                result = "failed"
                reason = reason_text(exc)
            else:
                log.warning(
                    "status write to %s/%s dropped: %s", write.namespace, write.name,
                    reason_text(exc),
                )  # fmt: skip
                result = "dropped"
        now = self.clock()
        self._dropped(self.backlog.done(write, result))
        if result == "failed":
            if self.outage.failed(now, write, len(self.backlog)):
                log.warning(
                    "Task status writes are failing (%s); each Task's latest status is kept "
                    "(up to %d Tasks) and retried about every %gs until the API server answers",
                    reason,
                    MAX_PENDING_TASKS,
                    RETRY_CAP,
                )
        elif recovery := self.outage.answered(now, write):
            log.warning(
                "Task status writes succeed again after %.1fs of failures; %d writes waited, "
                "%d dropped for want of room",
                recovery.seconds,
                recovery.waited,
                recovery.dropped,
            )
        self._wake.set()

    def _dropped(self, writes: list[Write]) -> None:
        if not writes:
            return
        self.outage.lost(len(writes))
        count = self._drop_warnings.dropped(self.clock(), len(writes))
        if count:
            log.warning(
                "%d Task status writes dropped: more than %d Tasks had writes pending (oldest "
                "first, e.g. %s/%s); the operator's repair sets those statuses",
                count,
                MAX_PENDING_TASKS,
                writes[0].namespace,
                writes[0].name,
            )
