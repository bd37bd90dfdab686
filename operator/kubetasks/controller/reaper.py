"""Delete finished Tasks once their ``ttlSecondsAfterFinished`` has passed: the Task's own,
else its Queue's, else the operator-wide default (``KUBETASKS_DEFAULT_TTL_SECONDS_AFTER_FINISHED``,
chart value ``operator.defaultTtlSecondsAfterFinished``), so history need not grow forever.

Finished Tasks with a TTL are kept in a heap by due time; one tick deletes those that are
due (with the uid as a precondition, so a re-created Task of the same name is safe). The
heap is rebuilt from the watch after a restart, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable
from typing import Any

from kubetasks.controller.state import OperatorState
from kubetasks.k8s.api import reason_text
from kubetasks.timestamps import parse_rfc3339

log = logging.getLogger("kubetasks.operator")


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
        self._tracked.add(meta["uid"])
        due = parse_rfc3339(finished) + float(ttl)
        heapq.heappush(self._heap, (due, meta["namespace"], meta["name"], meta["uid"]))

    def interval(self) -> float:
        if not self._heap:
            return 1.0
        return min(max(self._heap[0][0] - self.state.clock.now(), 0.05), 1.0)

    async def tick(self) -> None:
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
