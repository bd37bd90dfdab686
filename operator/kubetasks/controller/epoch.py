"""A loss of Redis's data noticed within half a second, not at the next resync.

Redis is a derived index of the Task resources; when it loses its data (restarted without
persistence, flushed, replaced by a new empty server) the repair loop rebuilds it, but the
repair runs on a long period. Every half second this component reads the server's epoch marker
(``kubetasks:epoch``, written when absent): a marker that vanished or changed means the data
went with it, and the components that rebuild Redis are woken at once (the repair, which
re-enqueues the unfinished Tasks and so refills the queue registry; the Queue settings; the
pool users). Each process remembers which queues it registered, so that memory is dropped
too. The same tick ends the repair's wait after an outage: when Redis answers again, the
Tasks left Pending while it was gone are queued at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence

from kubetasks.controller.state import OperatorState

log = logging.getLogger("kubetasks.operator")

#: Seconds between two looks at the marker.
INTERVAL = 0.5
#: Seconds the repair waits after a loss is noticed, so that the status writes workers had
#: on their way when the data went (Tasks that finished just before) land first: a Task
#: whose resource shows its outcome is not queued again.
SETTLE_SECONDS = 0.5


class RedisEpoch:
    name = "redis epoch"
    wake: asyncio.Event | None = None

    def __init__(self, state: OperatorState, rebuild: Sequence[asyncio.Event] = ()) -> None:
        self.state = state
        self.rebuild = list(rebuild)
        """Set on a loss (the repair's own wake-up always is)."""
        self.seen: str | None = None
        self.losses = 0

    def interval(self) -> float:
        return INTERVAL

    async def tick(self) -> None:
        # A new token each time: one this tick writes differs from any seen before.
        current = await self.state.broker.epoch(uuid.uuid4().hex)
        lost = self.seen is not None and current != self.seen
        self.seen = current
        if not lost:
            if not self.state.redis_ok:
                self.state.repair_soon.set()  # Redis answers again: queue what waited for it
            return
        self.losses += 1
        log.warning(
            "Redis lost its data (restarted empty, flushed or replaced): rebuilding it from "
            "the Task resources now"
        )
        self.state.broker.forget_registered()
        self.state.redis_lost_at = self.state.clock.now()
        for event in self.rebuild:
            event.set()
        await asyncio.sleep(SETTLE_SECONDS)
        self.state.repair_soon.set()
