"""Waiting Tasks looked at again when their time is up, even if no event comes.

A Task that waits for its ``dependsOn`` is admitted again on every event of a dependency;
a dependency that is never created, or never finishes, sends none. So each waiting Task is
kept here with the time it must be looked at again (the earlier of its deadline and the end
of its ``dependencyTimeoutSeconds``, from ``intake.wait_until``), and a tick re-admits those
that are due, read afresh from the API: admission then ends them DeadlineExceeded or
DependencyTimeout. A Task that stops waiting (queued, failed, deleted) is forgotten.
After a restart the watch shows every waiting Task again, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubetasks.background import log_failure
from kubetasks.clock import Clock

log = logging.getLogger("kubetasks.operator")

#: Seconds before a Task whose re-admission failed (API server unreachable) is tried again.
RETRY_AFTER = 5.0

#: Re-admit one Task (its fresh body).
Readmit = Callable[[dict[str, Any]], Awaitable[None]]
#: Read a Task afresh: (namespace, name) -> body, or None when it is gone.
Read = Callable[[str, str], Awaitable[dict[str, Any] | None]]


class WaitingTasks:
    name = "waiting"
    wake: asyncio.Event | None = None

    def __init__(self, clock: Clock, read: Read, readmit: Readmit) -> None:
        self.clock = clock
        self.read = read
        self.readmit = readmit
        self._due: list[tuple[float, str]] = []  # (due, uid), earliest first
        self._where: dict[str, tuple[str, str, float]] = {}  # uid -> namespace, name, due
        self.expired = 0

    def track(self, body: dict[str, Any], due: float) -> None:
        meta = body["metadata"]
        self._track(meta["namespace"], meta["name"], meta["uid"], due)

    def _track(self, namespace: str, name: str, uid: str, due: float) -> None:
        known = self._where.get(uid)
        self._where[uid] = (namespace, name, due)
        if known is None or known[2] != due:
            heapq.heappush(self._due, (due, uid))

    def forget(self, uid: str) -> None:
        self._where.pop(uid, None)

    def waiting(self) -> int:
        return len(self._where)

    def take_due(self, now: float) -> list[tuple[str, str, str]]:
        """(namespace, name, uid) of the tracked Tasks whose time is up, earliest first;
        they are no longer tracked (admission tracks one again if it still waits)."""
        due: list[tuple[str, str, str]] = []
        while self._due and self._due[0][0] <= now:
            at, uid = heapq.heappop(self._due)
            where = self._where.get(uid)
            if where is None or where[2] != at:
                continue  # forgotten, or tracked again with another time
            del self._where[uid]
            due.append((where[0], where[1], uid))
        return due

    def interval(self) -> float:
        if not self._due:
            return 1.0
        return min(max(self._due[0][0] - self.clock.now(), 0.05), 1.0)

    async def tick(self) -> None:
        for namespace, name, uid in self.take_due(self.clock.now()):
            try:
                body = await self.read(namespace, name)
                if body is None or body["metadata"]["uid"] != uid:
                    continue  # gone, or re-created: the new one has its own events
                self.expired += 1
                await self.readmit(body)
            except Exception:
                log_failure(log, "re-admitting waiting task %s/%s failed", namespace, name)
                self._track(namespace, name, uid, self.clock.now() + RETRY_AFTER)
