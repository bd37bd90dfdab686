"""Take back tasks whose worker died without a word (at-least-once delivery).

A crashed or partitioned worker stops extending its leases; once a lease expires, any live
worker's reclaimer returns the task to its queue (or to the dead set when its attempts are
used up). A worker that shuts down cleanly hands its tasks back itself, so this is the path
for ``kill -9``, OOM kills and lost nodes.

Two faster paths need no lease to expire. A worker that starts under an identity takes
back, before it leases anything, every task still leased to that identity: in a pod the
identity is the pod's, so a container the kubelet restarts after a crash or an OOM kill
returns its previous incarnation's tasks at once (``take_back_own``). And the operator does
the same for a pod that is deleted. Either way the interrupted attempt counts, as it does
when a lease expires (asynq's recoverer and a Job's backoffLimit count it too): a task that
kills its worker every time ends failed after ``maxRetries`` instead of looping forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from kubetasks.background import isolated
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
            with isolated(log, "reclaim on queue %s", queue.name):
                await self._reclaim_expired(queue.name)

    async def _reclaim_expired(self, queue: str) -> None:
        requeued, dead = await self.broker.reclaim(queue)
        if requeued or dead:
            self.reclaimed += requeued + len(dead)
            log.warning(
                "queue %s: took back %d tasks with expired leases (%d had no attempts left)",
                queue,
                requeued + len(dead),
                len(dead),
            )
        if self.report is not None:
            for leased in dead:
                with isolated(log, "report of task %s", leased.message.id):
                    await self.report(leased)

    async def take_back_own(self) -> int:
        """Return to their queues the tasks still leased to this worker's identity: they
        belonged to a previous incarnation that died holding them. Call it before leasing
        anything, or it would take back this incarnation's own tasks."""
        worker_id = self.settings.worker_id
        total = 0
        for queue in self.settings.queues:
            requeued, dead = await self.broker.reclaim(queue.name, worker_id=worker_id)
            total += requeued + len(dead)
            if requeued or dead:
                log.warning(
                    "queue %s: took back %d tasks that %s held before it restarted"
                    " (%d had no attempts left)",
                    queue.name,
                    requeued + len(dead),
                    worker_id,
                    len(dead),
                )
            if self.report is not None:
                for leased in dead:
                    await self.report(leased)
        self.reclaimed += total
        return total
