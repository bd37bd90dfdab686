"""Queued Tasks whose deadline passes end DeadlineExceeded at their deadline, served or not.

A worker that dequeues a Task past its deadline ends it without running it; but a queue no
pool serves (none yet, scaled to zero and unable to start, paused, capped) has no worker to
look. Each tick (every second) runs the ``expire`` transition on every queue of the watched
namespaces: it ends in Redis the waiting Tasks whose deadline passed, and their status is
written here as a worker would have (``report``). A Task that started is its worker's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from kubetasks.background import isolated
from kubetasks.queue import Broker, Leased

log = logging.getLogger("kubetasks.operator")

#: Seconds between two looks: how late after its deadline a waiting Task may end.
INTERVAL = 1.0

Report = Callable[[Leased], Awaitable[None]]


class DeadlineExpiry:
    name = "deadline expiry"
    wake: asyncio.Event | None = None

    def __init__(self, broker: Broker, report: Report, *, namespaces: tuple[str, ...] = ()) -> None:
        self.broker = broker
        self.report = report
        self.namespaces = namespaces
        self.expired = 0

    def interval(self) -> float:
        return INTERVAL

    async def tick(self) -> None:
        for namespace, queue in await self.broker.all_queues():
            if self.namespaces and namespace not in self.namespaces:
                continue
            with isolated(log, "deadlines of queue %s/%s", namespace, queue):
                for leased in await self.broker.in_namespace(namespace).expire(queue):
                    self.expired += 1
                    log.info("task %s: the deadline passed while it waited", leased.message.id)
                    with isolated(log, "report of task %s", leased.message.id):
                        await self.report(leased)
