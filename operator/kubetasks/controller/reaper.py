"""Delete finished Tasks once their ``ttlSecondsAfterFinished`` has passed: the Task's own,
else its Queue's, else the operator-wide default (``KUBETASKS_DEFAULT_TTL_SECONDS_AFTER_FINISHED``,
chart value ``operator.defaultTtlSecondsAfterFinished``), so history need not grow forever.

A Task seen finishing whose TTL runs out before the next sweep goes into a heap by due
time; one tick deletes those that are due (with the uid as a precondition, so a re-created
Task of the same name is safe). Every ``KUBETASKS_HISTORY_SWEEP_SECONDS`` (ten minutes; the
first :data:`FIRST_SWEEP_SECONDS` after start-up, so that a restart's own work comes first)
a sweep pages through the finished Tasks: it deletes those that are due, puts those due
before the next sweep into the heap, and finishes the deletion of a finished Task that was
deleted while no operator ran (its finalizer). So the operator keeps nothing of a finished
Task for longer than a sweep period: a heap entry (a tuple of a float and three short
strings, about 300 bytes) only while its TTL is about to run out. A sweep costs a listing
of the finished Tasks, paged, from the API server.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable
from typing import Any

from kubetasks.background import isolated
from kubetasks.controller.state import OperatorState
from kubetasks.controller.tasks import finalize
from kubetasks.k8s.api import reason_text
from kubetasks.k8s.tasks import task_paths
from kubetasks.timestamps import parse_rfc3339

log = logging.getLogger("kubetasks.operator")

#: Seconds from start-up to the first sweep (the period, if that is shorter).
FIRST_SWEEP_SECONDS = 60.0


class Reaper:
    name = "reaper"
    wake: asyncio.Event | None = None

    def __init__(
        self, state: OperatorState, default_ttl: Callable[[str, str], int | None] | None = None
    ) -> None:
        self.state = state
        self.default_ttl = default_ttl
        """(namespace, queue) -> the TTL of a Task of that queue that sets none (its Queue's
        ``ttlSecondsAfterFinished``)."""
        self._heap: list[tuple[float, str, str, str]] = []
        self._tracked: set[str] = set()
        self.deleted = 0
        self.period = state.settings.history_sweep_seconds
        self.next_sweep = state.clock.now() + min(FIRST_SWEEP_SECONDS, self.period)
        self.sweeps = 0

    def track(self, body: dict[str, Any]) -> None:
        spec = body.get("spec") or {}
        ttl = spec.get("ttlSecondsAfterFinished")
        finished = (body.get("status") or {}).get("finishedAt")
        meta = body["metadata"]
        if ttl is None and self.default_ttl is not None:
            ttl = self.default_ttl(meta["namespace"], spec.get("queue", "default"))
        if ttl is None:  # the operator-wide default, last
            ttl = self.state.settings.default_ttl_seconds_after_finished
        if ttl is None or not finished or meta["uid"] in self._tracked:
            return
        due = parse_rfc3339(finished) + float(ttl)
        if due > self.next_sweep:
            return  # the next sweep finds it
        self._tracked.add(meta["uid"])
        heapq.heappush(self._heap, (due, meta["namespace"], meta["name"], meta["uid"]))

    def interval(self) -> float:
        if not self._heap:
            return 1.0
        return min(max(self._heap[0][0] - self.state.clock.now(), 0.05), 1.0)

    async def tick(self) -> None:
        if self.state.clock.now() >= self.next_sweep:
            await self.sweep()
        now = self.state.clock.now()
        while self._heap and self._heap[0][0] <= now:
            _, namespace, name, uid = heapq.heappop(self._heap)
            self._tracked.discard(uid)
            try:
                if await self.state.tasks.delete(namespace, name, uid):
                    self.deleted += 1
            except Exception as exc:
                log.warning(
                    "deleting finished task %s/%s failed: %s", namespace, name, reason_text(exc)
                )

    async def sweep(self) -> None:
        """Page through the finished Tasks: track those due before the sweep after this one
        and finish the deletions no operator saw (deleted are the due ones at the tick)."""
        self.next_sweep = self.state.clock.now() + self.period
        self.sweeps += 1
        for path in task_paths(self.state.settings.namespaces):
            async for page in self.state.tasks.finished(path):
                for body in page.items:
                    meta = body["metadata"]
                    with isolated(log, "sweep of task %s/%s", meta["namespace"], meta["name"]):
                        if meta.get("deletionTimestamp"):
                            await finalize(self.state, body)
                        else:
                            self.track(body)
                await asyncio.sleep(0)  # a page at a time: the operator's work goes on
