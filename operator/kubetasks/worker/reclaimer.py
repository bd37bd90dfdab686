"""Take back tasks whose worker died without a word (at-least-once delivery).

A crashed or partitioned worker stops extending its leases; once a lease expires, any live
worker's reclaimer returns the task to its queue (or to the dead set when its attempts are
used up). A worker that shuts down cleanly hands its tasks back itself, so this is the path
for ``kill -9``, OOM kills and lost nodes.
"""

from __future__ import annotations

import asyncio
import logging

from kubetasks.queue import Broker
from kubetasks.settings import WorkerSettings

log = logging.getLogger("kubetasks.worker")


class Reclaimer:
    name = "reclaimer"
    wake: asyncio.Event | None = None

    def __init__(self, broker: Broker, settings: WorkerSettings) -> None:
        self.broker = broker
        self.settings = settings
        self.reclaimed = 0

    def interval(self) -> float:
        return self.settings.reclaim_interval

    async def tick(self) -> None:
        for queue in self.settings.queues:
            requeued, dead = await self.broker.reclaim(queue.name)
            if requeued or dead:
                self.reclaimed += requeued + dead
                log.warning(
                    "queue %s: took back %d tasks with expired leases (%d had no attempts left)",
                    queue.name,
                    requeued + dead,
                    dead,
                )
