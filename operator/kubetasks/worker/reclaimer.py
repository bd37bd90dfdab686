"""Take back tasks whose worker died without a word (at-least-once delivery).

A crashed or partitioned worker stops extending its leases; once a lease expires, any live
worker's reclaimer returns the task to its queue (or to the dead set when its attempts are
used up). A worker that shuts down cleanly hands its tasks back itself, so this is the path
for ``kill -9``, OOM kills and lost nodes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from kubetasks.queue import Broker, Leased
from kubetasks.settings import WorkerSettings

log = logging.getLogger("kubetasks.worker")


class Reclaimer:
    name = "reclaimer"
    wake: asyncio.Event | None = None

    def __init__(
        self,
        broker: Broker,
        settings: WorkerSettings,
        report: Callable[[Leased], Awaitable[None]] | None = None,
    ) -> None:
        self.broker = broker
        self.settings = settings
        self.report = report
        self.reclaimed = 0

    def interval(self) -> float:
        return self.settings.reclaim_interval

    async def tick(self) -> None:
        for queue in self.settings.queues:
            requeued, dead = await self.broker.reclaim(queue.name)
            if requeued or dead:
                self.reclaimed += requeued + len(dead)
                log.warning(
                    "queue %s: took back %d tasks with expired leases (%d had no attempts left)",
                    queue.name,
                    requeued + len(dead),
                    len(dead),
                )
            if self.report is not None:
                for leased in dead:
                    await self.report(leased)
