"""Make Redis agree with the Task resources, at start-up and on a resync period.

The resources are the source of truth and Redis is a derived index. A loss of Redis's data
is noticed within a second (``epoch.py``), which runs this at once. Each tick lists the
unfinished Tasks (a page at a time, selected by the API server: finished ones cost repair
nothing) and (1) admits those the operator never handled, (2) re-enqueues every unfinished
Task that Redis has no record of (after a Redis restart without persistence, a FLUSHALL,
or a failed enqueue), keeping its attempt count, (3) copies the outcome of Tasks that ended
in Redis onto resources that still show them unfinished (the worker's own status write was
lost: API server down, RBAC missing), (4) finishes deletions whose clean-up failed (of
finished Tasks: the reaper's sweep, ``reaper.py``), and (5)
removes from Redis the live tasks whose resource is gone (deleted while the operator was
down, before they had a finalizer).
While Redis is unreachable the tick runs every few seconds instead.

Repair is a safety net, and a safety net hides the bugs it catches: every outcome it copies
is counted (``kubetasks_operator_repaired_outcomes_total``) and each sweep that copied any
says so in one log line. With workers that can report, both stay silent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from kubetasks.background import isolated
from kubetasks.controller import tasks
from kubetasks.controller.deferred import DeferredWrites
from kubetasks.controller.dependents import UNADMITTED, outcome
from kubetasks.controller.feed import TaskFeed
from kubetasks.controller.intake import build_message
from kubetasks.controller.state import OperatorState
from kubetasks.errors import BrokerUnavailableError
from kubetasks.k8s.tasks import task_paths
from kubetasks.metrics import OperatorMetrics
from kubetasks.queue import Broker
from kubetasks.status_patches import finished_patch, operator_patch
from kubetasks.timestamps import parse_rfc3339
from kubetasks.vocabulary import FINAL_PHASES, TaskPhase

log = logging.getLogger("kubetasks.operator")

#: Seconds between repair ticks while Redis is unreachable.
FAST_RETRY = 2.0
#: Seconds a new Task is left to the watch before repair admits it (a Task repair finds
#: unadmitted after this, the watch missed).
WATCH_GRACE = 30.0

#: Seconds an outcome Redis recorded is left to the worker that ran it before repair copies
#: it: a lease's worth (the workers' default). The worker's own status write follows its ack
#: within milliseconds when the API server keeps up, and can be many seconds late in a burst
#: on an overloaded machine; copying sooner would race that write, and count as lost a write
#: that was only late.
SETTLE_AFTER = 30.0


class Repairer:
    name = "repair"

    def __init__(
        self,
        state: OperatorState,
        deferred: DeferredWrites | None = None,
        metrics: OperatorMetrics | None = None,
        feed: TaskFeed | None = None,
    ) -> None:
        self.state = state
        self.deferred = deferred
        self.metrics = metrics
        self.feed = feed
        """The watch's feed: the first tick waits until its first listing is handled, so
        that the Tasks both find unadmitted are not admitted twice at start-up."""
        self.restored = 0
        self.swept = 0
        self.settled = 0
        """Outcomes copied from Redis onto Tasks that showed them unfinished."""
        self.wake: asyncio.Event | None = state.repair_soon

    def interval(self) -> float:
        return FAST_RETRY if not self.state.redis_ok else self.state.settings.resync_seconds

    async def tick(self) -> None:
        try:
            await self.state.broker.ping()
        except ConnectionError:
            self.state.redis_ok = False
            return
        self.state.redis_ok = True
        try:
            await self._repair()
        except BrokerUnavailableError:
            # Redis failed mid-sweep: after a restart each stale pooled connection fails
            # once, so a ping can pass and the next call fail. The sweep is tried again in
            # FAST_RETRY seconds, not at the next resync: after a loss of Redis's data it is
            # what queues the lost Tasks again (CI: 40 Tasks left Running for 30 s).
            self.state.redis_ok = False
            raise

    async def _repair(self) -> None:
        if self.feed is not None:
            await self.feed.settled()
        listed_at = self.state.clock.now()
        items: list[dict[str, Any]] = []  # the unfinished ones
        for path in task_paths(self.state.settings.namespaces):
            async for page in self.state.tasks.unfinished(path):
                items.extend(page.items)
        uids = {t["metadata"]["uid"] for t in items}
        known = {(t["metadata"]["namespace"], t["metadata"]["name"]): outcome(t) for t in items}
        graph = _Listed(items)

        async def lookup(namespace: str, name: str) -> tuple[str | None, Any]:
            found = known.get((namespace, name))
            if found is None:  # finished (its result was not kept), a TaskSet, or missing
                found = known[namespace, name] = await tasks.read_dependency(
                    self.state, namespace, name
                )
            return found

        by_queue: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for body in items:
            meta = body["metadata"]
            phase = (body.get("status") or {}).get("phase")
            spec = body.get("spec") or {}
            with isolated(log, "repair of task %s/%s", meta["namespace"], meta["name"]):
                if meta.get("deletionTimestamp"):
                    await tasks.finalize(self.state, body)
                elif phase in FINAL_PHASES or spec.get("cancel"):
                    continue
                elif phase is None and _young(body, listed_at, self.state.redis_lost_at):
                    # The watch admits a new Task itself; from this listing, one deleted
                    # since would be queued again after its DELETED event forgot it.
                    continue
                elif (
                    phase is None
                    or phase == TaskPhase.WAITING
                    or (phase == TaskPhase.PENDING and spec.get("dependsOn"))
                    or tasks.queue_of(body) is None  # admission fails it, naming spec.queue
                ):
                    await tasks.admit(self.state, body, lookup, self.deferred, graph=graph)
                else:
                    by_queue[meta["namespace"], spec.get("queue", "default")].append(body)
        settled: dict[str, int] = {}
        for (namespace, queue), bodies in by_queue.items():
            with isolated(log, "restore of queue %s/%s", namespace, queue):
                broker = self.state.broker.in_namespace(namespace)
                settled[f"{namespace}/{queue}"] = await self._restore(broker, queue, bodies)
        await self._sweep(uids, listed_at)
        repaired = sum(settled.values())
        self.settled += repaired
        if self.metrics is not None:
            self.metrics.repaired_outcomes.inc(repaired)
            self.metrics.repair_sweeps.inc()
        if repaired:
            log.warning(
                "repair: wrote the outcome of %d finished tasks their workers never reported"
                " (%s); %d so far",
                repaired,
                ", ".join(f"queue {q}: {n}" for q, n in sorted(settled.items()) if n),
                self.settled,
            )

    async def _restore(self, broker: Broker, queue: str, bodies: list[dict[str, Any]]) -> int:
        """Re-enqueue the Tasks of one queue that Redis does not know; settle the others.
        Returns how many outcomes were settled."""
        by_uid = {b["metadata"]["uid"]: b for b in bodies}
        missing = await broker.missing(queue, list(by_uid))
        known = [b for uid, b in by_uid.items() if uid not in missing]
        settled = await self._settle(broker, queue, known)
        if not missing:
            return settled
        now = self.state.clock.now()
        messages, spent = [], {}
        for uid in missing:
            body = by_uid[uid]
            try:
                messages.append(build_message(body, now))
            except Exception as exc:
                log.warning("cannot restore task %s: %s", body["metadata"]["name"], exc)
                continue
            spent[uid] = int((body.get("status") or {}).get("attempts") or 0)
        await broker.enqueue(messages, spent=spent)
        self.restored += len(messages)
        if self.metrics is not None:
            self.metrics.restored_tasks.inc(len(messages))
        # Pending ones were never queued (Redis was unreachable when they came): their status
        # says so, and the outage was told already. The others were queued and lost.
        lost = [m for m in messages if _phase(by_uid[m.id]) != TaskPhase.PENDING]
        log.log(
            logging.WARNING if lost else logging.DEBUG,
            "queued %d tasks of queue %s/%s again (%d that Redis had lost, %d that waited for it)",
            len(messages),
            broker.namespace,
            queue,
            len(lost),
            len(messages) - len(lost),
        )
        for message in messages:
            body = by_uid[message.id]
            if (body.get("status") or {}).get("phase") == TaskPhase.PENDING:
                meta = body["metadata"]
                patch = operator_patch(
                    TaskPhase.QUEUED,
                    now,
                    "Enqueued",
                    f"on queue {queue}",
                    extra={"attempts": spent[message.id]},
                )
                await self.state.writer.write(
                    meta["namespace"], meta["name"], patch, uid=meta["uid"]
                )
        return settled

    async def _settle(self, broker: Broker, queue: str, bodies: list[dict[str, Any]]) -> int:
        """Write the outcome Redis recorded onto unfinished resources that lack it, once
        the worker has had :data:`SETTLE_AFTER` seconds to write it itself."""
        settled = 0
        now = self.state.clock.now()
        for body in bodies:
            info = await broker.get_task(queue, body["metadata"]["uid"])
            if info is None or not info.done:
                continue
            if info.finished_at is not None and now - info.finished_at < SETTLE_AFTER:
                continue  # the worker's own write is on its way; the next sweep looks again
            at = info.finished_at or now
            patch = finished_patch(
                info.state, info.attempts, at, result=info.result, error=info.error
            )
            meta = body["metadata"]
            if await self.state.writer.write(
                meta["namespace"], meta["name"], patch, uid=meta["uid"]
            ):
                settled += 1
        return settled

    async def _sweep(self, uids: set[str], listed_at: float) -> None:
        """Forget live tasks of watched namespaces whose resource no longer exists.

        Only tasks enqueued before the listing count: one admitted since is not in it."""
        namespaces = set(self.state.settings.namespaces)
        for namespace, queue in await self.state.broker.all_queues():
            if namespaces and namespace not in namespaces:
                continue  # another operator's namespace
            with isolated(log, "sweep of queue %s/%s", namespace, queue):
                broker = self.state.broker.in_namespace(namespace)
                await self._sweep_queue(broker, queue, uids, listed_at)

    async def _sweep_queue(
        self, broker: Broker, queue: str, uids: set[str], listed_at: float
    ) -> None:
        for task_id in set(await broker.live_ids(queue)) - uids:
            info = await broker.get_task(queue, task_id)
            resource = info.message.resource if info is not None else None
            if info is None or not resource or (info.enqueued_at or listed_at) >= listed_at:
                continue  # a fast-path task (no resource), or too new to judge
            namespace, _, name = resource.partition("/")
            found = await self.state.tasks.get(namespace, name)
            if found is not None and found["metadata"]["uid"] == task_id:
                continue  # it finished since the listing (only unfinished ones are listed)
            await broker.forget(queue, task_id)
            self.swept += 1
            log.warning(
                "forgot task %s of queue %s/%s: its resource %s is gone",
                task_id,
                broker.namespace,
                queue,
                resource,
            )


class _Listed:
    """The unadmitted Tasks with dependencies of one listing, for cycle checks in repair."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self._bodies = {
            (t["metadata"]["namespace"], t["metadata"]["name"]): t
            for t in items
            if (t.get("spec") or {}).get("dependsOn")
            and (t.get("status") or {}).get("phase") in UNADMITTED
        }
        self._cycles: dict[str, str] = {}  # uid -> the cycle it was failed for

    def unadmitted(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._bodies.get((namespace, name))

    def on_cycle(self, body: dict[str, Any], cycle: str) -> None:
        meta = body["metadata"]
        self._bodies.pop((meta["namespace"], meta["name"]), None)
        self._cycles[meta["uid"]] = cycle

    def cycle_of(self, namespace: str, name: str, uid: str) -> str | None:
        return self._cycles.get(uid)


def _phase(body: dict[str, Any]) -> str | None:
    return (body.get("status") or {}).get("phase")


def _young(body: dict[str, Any], now: float, lost_at: float | None = None) -> bool:
    """Created less than :data:`WATCH_GRACE` seconds before ``now``, and after Redis last
    lost its data (``lost_at``): one created before may have been queued by the watch, its
    Queued status still to be written (``deferred.py``), and lost with the data; admitting
    it again is harmless (an enqueue of a known id changes nothing)."""
    created = body["metadata"].get("creationTimestamp")
    if not created:
        return False
    at = parse_rfc3339(created)
    # creationTimestamp has whole seconds: one in the second of the loss counts as before.
    if lost_at is not None and at <= lost_at:
        return False
    return now - at < WATCH_GRACE
