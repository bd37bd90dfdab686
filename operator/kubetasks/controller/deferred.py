"""The writes a just-queued Task owes, held back for a moment in case they are not needed.

After enqueueing a Task the operator owes it two writes: the finalizer (so that deleting it
cleans Redis even while the operator is down) and the Queued status. Most Tasks are taken by
a worker within milliseconds; by the time those writes land, the worker's own status write
has made them pointless, and on the API server they cost as much as the Task itself (each is
a write to etcd and an event to every watcher). So they wait ``grace`` seconds and are made
only for a Task that is still unstarted (Queued status) or still unfinished (finalizer).

A Task deleted within its grace has no finalizer; the operator's watch sees it go and
removes it from Redis, and the repair loop sweeps what a stopped operator missed.

The writes also have a budget (``per_second``, with ten seconds' worth saved up): in a burst
larger than the workers can take within the grace, writing Queued onto every waiting Task
would cost the API server as much as the Tasks themselves and slow the burst down further.
Past the budget, the oldest owed Task is served first as tokens come, and a Task that a
worker takes in the meantime owes nothing any more. Until then it shows no phase.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from dataclasses import dataclass
from typing import Any

from kubetasks.background import log_failure
from kubetasks.budget import Budget
from kubetasks.controller.state import OperatorState
from kubetasks.k8s.api import reason_text
from kubetasks.vocabulary import FINAL_PHASES

log = logging.getLogger("kubetasks.operator")


@dataclass
class _Owed:
    body: dict[str, Any]
    queued_patch: dict[str, Any] | None
    finalizer: bool = True


class DeferredWrites:
    name = "deferred-writes"
    wake: asyncio.Event | None = None

    def __init__(
        self, state: OperatorState, finalizer: str, grace: float, per_second: float = 10.0
    ) -> None:
        self.state = state
        self.finalizer = finalizer
        self.grace = grace
        self.budget = Budget(per_second, max(10 * per_second, 1.0), state.clock)
        self._owed: dict[str, _Owed] = {}
        self._due: list[tuple[float, str]] = []
        self.skipped = 0
        self.written = 0

    def defer(self, body: dict[str, Any], queued_patch: dict[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        self._owed[uid] = _Owed(body, queued_patch)
        heapq.heappush(self._due, (self.state.clock.now() + self.grace, uid))

    def observe(self, body: dict[str, Any]) -> None:
        """A watch event: a phase written by someone else settles what the Task still owes."""
        uid = body["metadata"]["uid"]
        owed = self._owed.get(uid)
        if owed is None:
            return
        phase = (body.get("status") or {}).get("phase")
        if phase is None:
            return
        owed.queued_patch = None  # a worker (or the repair loop) already wrote a phase
        if phase in FINAL_PHASES:
            del self._owed[uid]
            self.skipped += 1

    def forget(self, uid: str) -> None:
        self._owed.pop(uid, None)

    def interval(self) -> float:
        if not self._due:
            return self.grace
        until = max(self._due[0][0] - self.state.clock.now(), self.budget.wait())
        return min(max(until, 0.02), self.grace)

    def take_due(self) -> list[_Owed]:
        """The owed writes whose grace is over, oldest first, as far as the budget goes."""
        now = self.state.clock.now()
        due: list[_Owed] = []
        while self._due and self._due[0][0] <= now:
            uid = self._due[0][1]
            if uid in self._owed and not self.budget.take():
                break
            heapq.heappop(self._due)
            owed = self._owed.pop(uid, None)
            if owed is not None:
                due.append(owed)
        return due

    def owed(self) -> int:
        return len(self._owed)

    async def tick(self) -> None:
        due = self.take_due()
        if due:
            await asyncio.gather(*(self._settle(owed) for owed in due))

    async def _settle(self, owed: _Owed) -> None:
        meta = owed.body["metadata"]
        try:
            await self.state.tasks.add_finalizer(owed.body, self.finalizer)
            if owed.queued_patch is not None:
                await self.state.writer.write(
                    meta["namespace"], meta["name"], owed.queued_patch, uid=meta["uid"],
                    fresh=not owed.body.get("status"),
                )  # fmt: skip
            self.written += 1
        except Exception as exc:  # the next resync repairs what is missing
            log_failure(log, "deferred writes to task %s failed", meta["name"],
                        brief=reason_text(exc))  # fmt: skip
