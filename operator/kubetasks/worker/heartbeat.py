"""Keep the leases of running tasks alive, and hear about cancellations.

Every beat extends the lease of each task this worker runs, one script call per queue. The
same reply names the tasks that were cancelled (their handlers are told) and the tasks this
worker no longer holds (their lease lapsed and another worker may have them: they are
stopped without reporting, so two workers never both finish one attempt).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from kubetasks.queue import Broker
from kubetasks.settings import WorkerSettings


class Heartbeat:
    name = "heartbeat"
    wake: asyncio.Event | None = None

    def __init__(
        self,
        broker: Broker,
        settings: WorkerSettings,
        running: Callable[[], dict[str, str]],
        on_cancel: Callable[[str], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self.broker = broker
        self.settings = settings
        self.running = running
        self.on_cancel = on_cancel
        self.on_lost = on_lost

    def interval(self) -> float:
        return self.settings.beat_every

    async def tick(self) -> None:
        running = self.running()
        await self.broker.report_worker(
            self.settings.worker_id, len(running), ttl=3 * self.settings.beat_every
        )
        by_queue: dict[str, list[str]] = defaultdict(list)
        for task_id, queue in running.items():
            by_queue[queue].append(task_id)
        for queue, ids in by_queue.items():
            cancel, lost = await self.broker.heartbeat(
                queue, self.settings.worker_id, ids, self.settings.lease_seconds
            )
            for task_id in cancel:
                self.on_cancel(task_id)
            for task_id in lost:
                self.on_lost(task_id)
