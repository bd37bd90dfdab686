"""The Queue controller: a Queue resource's spec into its queue's settings in Redis, and the
queue's load back into the Queue's status.

The dequeue script reads the settings from the queue's config hash in the same atomic step
that leases, so pausing, a cap or a rate takes effect on the next dequeue of every worker,
with nothing restarted. A watch event applies a change at once; the tick (every
:data:`STATUS_SECONDS`) lists the Queues again and puts Redis back where it drifted (Redis
restarted empty, a Queue deleted while the operator was down leaves settings no resource
asks for), and writes each Queue's status: its counts, the age of its oldest pending task
and the conditions Paused and Throttled, so ``kubectl get queues -w`` reads as a live
dashboard.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import kopf

from kubetasks.background import isolated
from kubetasks.clock import Clock
from kubetasks.k8s.events import PostEvent
from kubetasks.k8s.queues import QueueApi
from kubetasks.queue import Broker, QueueSettings, QueueStats
from kubetasks.queuename import is_queue_name
from kubetasks.timestamps import rfc3339_millis
from kubetasks.vocabulary import GROUP, QUEUES, VERSION

if TYPE_CHECKING:
    from kubetasks.controller.memo import OperatorMemo

log = logging.getLogger("kubetasks.queues")

#: Seconds between two status writes of a Queue (and two drift checks of its settings).
STATUS_SECONDS = 2.0

QueueKey = tuple[str, str]


def settings_of(spec: dict[str, Any]) -> QueueSettings:
    """What a Queue's spec asks of its queue, in the terms the Lua transitions read."""
    rate = spec.get("rateLimit") or {}
    return QueueSettings(
        paused=bool(spec.get("paused")),
        max_in_flight=spec.get("maxInFlight"),
        rate=float(rate["perSecond"]) if rate.get("perSecond") else None,
        burst=rate.get("burst"),
        default_timeout=spec.get("defaultTimeoutSeconds"),
        max_timeout=spec.get("maxTimeoutSeconds"),
        retention=spec.get("retentionSeconds"),
    )


def describe(settings: QueueSettings) -> str:
    """The settings as an event message: ``paused, maxInFlight 5, rate 20/s (burst 1)``."""
    parts = ["paused"] if settings.paused else []
    if settings.max_in_flight is not None:
        parts.append(f"maxInFlight {settings.max_in_flight}")
    if settings.rate is not None:
        parts.append(f"rate {settings.rate:g}/s (burst {settings.bucket_size})")
    if settings.default_timeout is not None:
        parts.append(f"defaultTimeoutSeconds {settings.default_timeout:g}")
    if settings.max_timeout is not None:
        parts.append(f"maxTimeoutSeconds {settings.max_timeout:g}")
    if settings.retention is not None:
        parts.append(f"retentionSeconds {settings.retention}")
    return ", ".join(parts) or "the defaults"


def conditions(
    stats: QueueStats, previous: list[dict[str, Any]], now: float
) -> list[dict[str, Any]]:
    """Paused: the queue starts nothing. Throttled: tasks wait that a worker could take,
    but the queue's cap or rate limit holds them back."""
    settings = stats.settings or QueueSettings()
    waiting = stats.pending + stats.due
    if settings.paused:
        paused = ("True", "Paused", f"spec.paused: {waiting} tasks wait, none starts")
    else:
        paused = ("False", "Running", "the queue starts tasks")
    if settings.paused:
        throttled = ("False", "Paused", "the queue is paused")
    elif waiting and settings.max_in_flight and stats.active >= settings.max_in_flight:
        message = f"{stats.active} running, the most maxInFlight allows; {waiting} wait"
        throttled = ("True", "MaxInFlight", message)
    elif waiting and settings.rate is not None and (stats.tokens or 0) < 1:
        message = f"{waiting} tasks wait for the rate limit of {settings.rate:g}/s"
        throttled = ("True", "RateLimited", message)
    else:
        throttled = ("False", "NotThrottled", "no limit holds tasks back")
    since = {c["type"]: c for c in previous}
    out = []
    for kind, (truth, reason, message) in (("Paused", paused), ("Throttled", throttled)):
        before = since.get(kind)
        if before is None or before.get("status") != truth:
            at = rfc3339_millis(now)
        else:
            at = before["lastTransitionTime"]
        out.append({"type": kind, "status": truth, "reason": reason, "message": message[:1024],
                    "lastTransitionTime": at})  # fmt: skip
    return out


@dataclass
class Known:
    body: dict[str, Any]
    applied: QueueSettings | None = None
    """The settings Redis holds, as last written or read (None: not looked at yet)."""
    status: dict[str, Any] = field(default_factory=dict)
    """The status last written."""


class QueueController:
    name = "queues"
    wake: asyncio.Event | None = None

    def __init__(
        self,
        broker: Broker,
        queues: QueueApi,
        clock: Clock,
        *,
        namespaces: tuple[str, ...] = (),
        interval: float = STATUS_SECONDS,
        events: PostEvent | None = None,
    ) -> None:
        self.events = events
        """Posts the Queues' Events (None: none are posted, as in tests)."""
        self.broker = broker
        self.api = queues
        self.clock = clock
        self.namespaces = namespaces
        self._interval = interval
        self.known: dict[QueueKey, Known] = {}
        self.cleared = 0
        """Settings removed from Redis because no Queue asked for them any more."""

    def interval(self) -> float:
        return self._interval

    def ttl_for(self, namespace: str, queue: str) -> int | None:
        """The ``ttlSecondsAfterFinished`` a Task of this queue gets when it sets none."""
        known = self.known.get((namespace, queue))
        spec = (known.body.get("spec") or {}) if known else {}
        value = spec.get("ttlSecondsAfterFinished")
        return None if value is None else int(value)

    # -- spec to Redis -----------------------------------------------------------------------

    def _event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        if self.events is not None:
            self.events(body, kind, reason, message)

    async def observe(self, body: dict[str, Any]) -> None:
        """A Queue was seen (created, changed, or listed): apply its settings if they
        changed, and say so with an event."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        known = self.known.get(key)
        if known is None:
            known = self.known[key] = Known(body)
        known.body = body
        if not is_queue_name(meta["name"]):
            if known.applied is None:
                problem = f"{meta['name']!r} is not a valid queue name: the Queue has no effect"
                self._event(body, "Warning", "InvalidName", problem)
                known.applied = QueueSettings()
            return
        wanted = settings_of(body.get("spec") or {})
        broker = self.broker.in_namespace(key[0])
        if known.applied is None:
            # First sight (a new Queue, or this operator just started): compare with what
            # Redis holds, so that a restart neither rewrites nor announces anything.
            known.applied = await broker.settings(key[1]) or QueueSettings()
        if wanted == known.applied:
            return
        await broker.configure(key[1], wanted)
        before, known.applied = known.applied, wanted
        if before.paused != wanted.paused:
            reason = "Paused" if wanted.paused else "Resumed"
        else:
            reason = "Configured"
        log.info("queue %s/%s: %s", *key, describe(wanted))
        self._event(body, "Normal", reason, describe(wanted))

    async def deleted(self, body: dict[str, Any]) -> None:
        """A Queue was deleted: its queue runs with the defaults again."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        self.known.pop(key, None)
        if is_queue_name(meta["name"]):
            await self.broker.in_namespace(key[0]).configure(key[1], None)
            log.info("queue %s/%s: Queue deleted, back to the defaults", *key)

    # -- the tick: drift, orphans, status ---------------------------------------------------

    async def tick(self) -> None:
        listed = await self._list()
        for body in listed:
            meta = body["metadata"]
            with isolated(log, "queue %s/%s", meta["namespace"], meta["name"]):
                await self._check(body)
        present = {(b["metadata"]["namespace"], b["metadata"]["name"]) for b in listed}
        for key in set(self.known) - present:
            self.known.pop(key, None)
        for namespace, queue in await self.broker.all_queues():
            if (namespace, queue) in present or not self._watched(namespace):
                continue
            with isolated(log, "settings of queue %s/%s", namespace, queue):
                broker = self.broker.in_namespace(namespace)
                if await broker.settings(queue) is not None:
                    await broker.configure(queue, None)
                    self.cleared += 1
                    log.warning("queue %s/%s: settings without a Queue removed", namespace,
                                queue)  # fmt: skip

    async def _list(self) -> list[dict[str, Any]]:
        if not self.namespaces:
            return await self.api.list()
        return [body for ns in self.namespaces for body in await self.api.list(ns)]

    def _watched(self, namespace: str) -> bool:
        return not self.namespaces or namespace in self.namespaces

    async def _check(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if not is_queue_name(key[1]):
            await self.observe(body)
            return
        broker = self.broker.in_namespace(key[0])
        stats = await broker.stats(key[1], detail=True)
        known = self.known.get(key)
        wanted = settings_of(body.get("spec") or {})
        if known is None or (stats.settings or QueueSettings()) != wanted:
            # Redis lost them (or they were never written): write them again.
            if known is not None:
                known.applied = None
            await self.observe(body)
            stats = await broker.stats(key[1], detail=True)
            known = self.known[key]
        status = self._status(stats, body, known)
        if status != known.status:
            await self.api.write_status(*key, status)
            known.status = status

    def _status(self, stats: QueueStats, body: dict[str, Any], known: Known) -> dict[str, Any]:
        previous = (known.status or body.get("status") or {}).get("conditions") or []
        return {
            "pending": stats.pending + stats.due,
            "scheduled": stats.scheduled,
            "running": stats.active,
            "dead": stats.dead,
            "processed": stats.processed,
            "failed": stats.failed,
            "oldestPendingSeconds": round(stats.oldest_pending or 0.0),
            "observedGeneration": body["metadata"].get("generation"),
            "conditions": conditions(stats, previous, self.clock.now()),
        }


@kopf.on.event(GROUP, VERSION, QUEUES)
async def queue_event(event: kopf.RawEvent, body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    controller = memo.queues
    if event.get("type") == "DELETED":
        await controller.deleted(dict(body))
    else:
        await controller.observe(dict(body))
