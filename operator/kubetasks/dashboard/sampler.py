"""The dashboard's memory of the last hour: a sample of every queue and WorkerPool every
few seconds, in the dashboard process (no database; a restart starts the graphs afresh).

A background component in the house style: :meth:`Sampler.tick` takes one sample,
:meth:`Sampler.run` ticks until stopped. It reads what the pages read (queue counts from
Redis, WorkerPool status from the API server) with the dashboard's own credentials; the
pages show each user only what they may see. Workers do no work for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from kubetasks.k8s.resources import ResourceReader
from kubetasks.queue.inspector import Inspector
from kubetasks.queue.message import QueueStats

log = logging.getLogger("kubetasks.dashboard")

#: Seconds of history kept.
WINDOW = 3600.0


@dataclass(frozen=True, slots=True)
class QueueSample:
    at: float
    pending: int
    scheduled: int
    active: int
    dead: int
    processed: int
    failed: int


@dataclass(frozen=True, slots=True)
class PoolSample:
    at: float
    desired: int | None
    replicas: int | None
    depth: int | None


class Sampler:
    def __init__(
        self,
        inspector: Inspector,
        resources: ResourceReader | None,
        *,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.inspector = inspector
        self.resources = resources
        self.interval = interval
        self.clock = clock
        size = max(int(WINDOW / interval) + 1, 2)
        self.queues: dict[tuple[str, str], deque[QueueSample]] = {}
        self.pools: dict[tuple[str, str], deque[PoolSample]] = {}
        self._size = size

    def add_stats(self, stats: QueueStats, at: float) -> None:
        series = self.queues.setdefault((stats.namespace, stats.queue), deque(maxlen=self._size))
        series.append(
            QueueSample(
                at,
                stats.pending,
                stats.scheduled + stats.due,
                stats.active,
                stats.dead,
                stats.processed,
                stats.failed,
            )
        )

    async def tick(self) -> None:
        now = self.clock()
        for stats in await self.inspector.queue_overview():
            self.add_stats(stats, now)
        if self.resources is None:
            return
        for pool in await self.resources.worker_pools(None):
            meta, status = pool["metadata"], pool.get("status") or {}
            key = (str(meta["namespace"]), str(meta["name"]))
            series = self.pools.setdefault(key, deque(maxlen=self._size))
            series.append(
                PoolSample(
                    now,
                    status.get("desiredReplicas"),
                    status.get("replicas"),
                    status.get("queueDepth"),
                )
            )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # an outage of Redis or the API: the next tick retries
                log.warning("dashboard sample failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
