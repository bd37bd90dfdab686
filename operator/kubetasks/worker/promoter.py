"""Move delayed tasks and retries to their queue when their time comes.

Every worker promotes the queues it serves (the script is atomic, so several promoters do
no harm) and remembers when the next scheduled task is due, so an idle worker can sleep
exactly until then instead of polling.
"""

from __future__ import annotations

import asyncio

from kubetasks.queue import Broker
from kubetasks.settings import WorkerSettings


class Promoter:
    name = "promoter"
    wake: asyncio.Event | None = None

    def __init__(self, broker: Broker, settings: WorkerSettings) -> None:
        self.broker = broker
        self.settings = settings
        self.next_due: float | None = None
        """Epoch seconds when the earliest scheduled task of any served queue is due."""
        self.checked_at: float | None = None
        """When ``next_due`` was learned (epoch seconds)."""

    def stale(self) -> bool:
        """Whether ``next_due`` is not to be trusted: never learned, older than the promote
        interval, or already passed."""
        now = self.broker.clock.now()
        if self.checked_at is None or now - self.checked_at >= self.settings.promote_interval:
            return True
        return self.next_due is not None and self.next_due <= now

    def interval(self) -> float:
        if self.next_due is None:
            return self.settings.promote_interval
        wait = self.next_due - self.broker.clock.now()
        return min(max(wait, 0.005), self.settings.promote_interval)

    async def tick(self) -> None:
        checked_at = self.broker.clock.now()
        earliest: float | None = None
        for queue in self.settings.queues:
            moved, next_due = await self.broker.promote(queue.name)
            while moved >= 1000:  # a large backlog came due at once: keep going
                moved, next_due = await self.broker.promote(queue.name)
            if next_due is not None and (earliest is None or next_due < earliest):
                earliest = next_due
        self.next_due, self.checked_at = earliest, checked_at
