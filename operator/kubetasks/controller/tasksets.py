"""The TaskSet controller: a set's items into Redis in batches, its status back in aggregate.

A TaskSet never becomes one object per item. On the set's first event the operator adds its
finalizer and starts it (after its ``dependsOn`` succeeded); from then on one tick (every
:data:`TICK_SECONDS`) per running set reads the set's counters from Redis (kept by the same
Lua calls that end each item, see ``queue/scripts/lib.lua``), enqueues more items while
``parallelism`` allows, and writes the status when it changed, at most once per
:data:`STATUS_SECONDS`, plus once when the set ends. Items report to Redis only.

Redis is the fast index here as everywhere: when it loses the set's bookkeeping (FLUSHALL, a
server restarted empty) the next tick finds the set's hash gone and restores it from the
set's status (``completedIndexes`` and ``failedIndexes`` are not run again; every other
item is enqueued again under its deterministic id).

A Task or TaskSet with ``dependsOn: [taskset/<name>]`` (a chord) waits until the set ends;
:meth:`TaskSetController.outcome` is how the Task controller learns of it, and
:meth:`TaskSetController.finished` wakes the Tasks waiting on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import kopf

from kubetasks.background import isolated
from kubetasks.controller import setintake
from kubetasks.controller.dependents import Outcome
from kubetasks.controller.state import OperatorState
from kubetasks.errors import ConfigurationError, MessageTooLargeError
from kubetasks.k8s.tasksets import TaskSetApi
from kubetasks.queue import Broker, SetState
from kubetasks.queuename import is_queue_name
from kubetasks.timestamps import parse_rfc3339, rfc3339_millis
from kubetasks.vocabulary import (
    FINAL_PHASES,
    GROUP,
    TASKSET_DEPENDENCY,
    TASKSET_FINAL_PHASES,
    TASKSET_FINALIZER,
    TASKSETS,
    VERSION,
    TaskPhase,
    TaskSetPhase,
)

if TYPE_CHECKING:
    from kubetasks.controller.memo import OperatorMemo

log = logging.getLogger("kubetasks.tasksets")

#: Seconds between two looks at a running set's counters in Redis.
TICK_SECONDS = 0.2
#: Fewest seconds between two status writes of one running set (its final write is not held
#: back): a 10,000-item set costs a handful of writes a second at most, not one per item.
STATUS_SECONDS = 0.5
#: Seconds between two looks at the dependencies of a waiting set.
WAITING_SECONDS = 1.0
#: Largest JSON of a set's results passed to a chord's callback as its first argument; a
#: larger list is passed as a reference (see README, "TaskSets").
MAX_RESULTS_BYTES = 64 * 1024

Key = tuple[str, str]


@dataclass
class Tracked:
    body: dict[str, Any]
    written: dict[str, Any] = field(default_factory=dict)
    """The status fields last written (to write only what changed)."""
    written_at: float = 0.0
    looked_at: float = 0.0
    """When a waiting set's dependencies were last looked at."""
    deleting: bool = False
    """Its TTL ran out and the delete was sent."""


def queue_of(body: dict[str, Any]) -> str | None:
    queue = ((body.get("spec") or {}).get("template") or {}).get("spec", {}).get("queue")
    queue = queue or "default"
    return queue if is_queue_name(queue) else None


class TaskSetController:
    name = "tasksets"

    def __init__(
        self,
        state: OperatorState,
        api: TaskSetApi,
        *,
        on_finished: Callable[[str, str, Outcome], Awaitable[None]] | None = None,
    ) -> None:
        self.state = state
        self.broker: Broker = state.broker
        self.api = api
        self.clock = state.clock
        self.sets: dict[Key, Tracked] = {}
        self.wake: asyncio.Event | None = asyncio.Event()
        self.on_finished = on_finished

    def interval(self) -> float:
        return TICK_SECONDS

    # -- events ------------------------------------------------------------------------

    async def observe(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if meta.get("deletionTimestamp"):
            self.sets.pop(key, None)
            await self.finalize(body)
            return
        tracked = self.sets.get(key)
        if tracked is None or tracked.body["metadata"]["uid"] != meta["uid"]:
            tracked = self.sets[key] = Tracked(body)
            status = body.get("status") or {}
            tracked.written = dict(status)
        else:
            # Keep what this operator wrote last: the event may predate it.
            tracked.body = body
        if self.wake is not None:
            self.wake.set()

    def deleted(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        tracked = self.sets.get(key)
        if tracked is not None and tracked.body["metadata"]["uid"] == meta["uid"]:
            del self.sets[key]

    async def outcome(self, namespace: str, name: str) -> Outcome:
        """(phase, results) of a TaskSet, for the Tasks and sets that depend on it: the
        results list (by index, None for items without one) once it Succeeded."""
        tracked = self.sets.get((namespace, name))
        body = tracked.body if tracked is not None else await self.api.get(namespace, name)
        if body is None:
            return (None, None)
        phase = self._status(tracked, body).get("phase")
        if phase != TaskSetPhase.SUCCEEDED:
            return (phase, None)
        return (phase, await self.results(body))

    async def results(self, body: dict[str, Any], *, limit: int | None = MAX_RESULTS_BYTES) -> Any:
        """The set's results as a list by index; over ``limit`` bytes of JSON, a reference
        ``{"taskset": name, "queue": q, "uid": uid, "total": n, "resultsTooLarge": true}``
        instead, which a handler reads with ``ctx.taskset_results(reference)``."""
        queue = queue_of(body)
        total = setintake.total_of(body["spec"])
        found: dict[int, str] = {}
        if queue is not None:
            broker = self.broker.in_namespace(body["metadata"]["namespace"])
            found = await broker.taskset_results(queue, body["metadata"]["uid"])
        size = sum(len(v) + 1 for v in found.values()) + 5 * total
        if limit is not None and size > limit:
            return {
                "taskset": body["metadata"]["name"],
                "queue": queue,
                "uid": body["metadata"]["uid"],
                "total": total,
                "resultsTooLarge": True,
            }
        return [json.loads(found[i]) if i in found else None for i in range(total)]

    @staticmethod
    def _status(tracked: Tracked | None, body: dict[str, Any]) -> dict[str, Any]:
        status = dict(body.get("status") or {})
        if tracked is not None:
            status.update(tracked.written)
        return status

    # -- the loop ----------------------------------------------------------------------

    async def tick(self) -> None:
        for key, tracked in list(self.sets.items()):
            with isolated(log, "taskset %s/%s", *key):
                await self.step(tracked)

    async def step(self, tracked: Tracked) -> None:
        body = tracked.body
        meta = body["metadata"]
        spec = body.get("spec") or {}
        status = self._status(tracked, body)
        phase = status.get("phase")
        now = self.clock.now()
        if phase in TASKSET_FINAL_PHASES:
            if spec.get("ttlSecondsAfterFinished") is None:
                # Nothing left to do for it: forget it (its dependents read it from the API).
                self.sets.pop((meta["namespace"], meta["name"]), None)
                return
            await self._expire(tracked, status, now)
            return
        queue = queue_of(body)
        if queue is None:
            await self._end(tracked, TaskSetPhase.FAILED, "InvalidSpec",
                            "spec.template.spec.queue is not a valid queue name", None)  # fmt: skip
            return
        if spec.get("cancel"):
            await self._cancel(tracked, queue)
            return
        if phase in (None, TaskSetPhase.PENDING, TaskSetPhase.WAITING):
            if not await self._may_start(tracked, status, now):
                return
            try:  # checked once, before anything reaches Redis
                setintake.item_messages(body, [0], now)
            except (ConfigurationError, MessageTooLargeError) as exc:
                await self._end(tracked, TaskSetPhase.FAILED, "InvalidSpec", str(exc), None)
                return
            await self.api.add_finalizer(body, TASKSET_FINALIZER)
            await self._write(
                tracked,
                {
                    "phase": TaskSetPhase.RUNNING,
                    "startedAt": rfc3339_millis(now),
                    "total": setintake.total_of(spec),
                    "error": None,
                    "observedGeneration": meta.get("generation"),
                    "conditions": setintake.set_conditions(
                        TaskSetPhase.RUNNING, now, "Started", "items are being enqueued"
                    ),
                },
                now,
            )
        await self._run(tracked, queue, now)

    async def _may_start(self, tracked: Tracked, status: dict[str, Any], now: float) -> bool:
        body = tracked.body
        depends_on = (body.get("spec") or {}).get("dependsOn") or []
        if not depends_on:
            return True
        if status.get("phase") == TaskSetPhase.WAITING and now - tracked.looked_at < (
            WAITING_SECONDS
        ):
            return False
        tracked.looked_at = now
        namespace = body["metadata"]["namespace"]
        waiting = []
        for dep in depends_on:
            phase = await self._phase_of(namespace, dep)
            if phase == TaskPhase.SUCCEEDED:
                continue
            if phase in FINAL_PHASES:
                await self._end(tracked, TaskSetPhase.FAILED, "DependencyFailed",
                                f"dependency {dep} ended {phase}", None)  # fmt: skip
                return False
            waiting.append(dep)
        if not waiting:
            return True
        if status.get("phase") != TaskSetPhase.WAITING:
            text = f"waiting for {', '.join(waiting)}"
            await self._write(
                tracked,
                {
                    "phase": TaskSetPhase.WAITING,
                    "total": setintake.total_of(body["spec"]),
                    "error": None,
                    "conditions": setintake.set_conditions(
                        TaskSetPhase.WAITING, now, "WaitingForDependencies", text
                    ),
                },
                now,
            )
        return False

    async def _phase_of(self, namespace: str, dep: str) -> str | None:
        if dep.startswith(TASKSET_DEPENDENCY):
            name = dep[len(TASKSET_DEPENDENCY) :]
            tracked = self.sets.get((namespace, name))
            body = tracked.body if tracked is not None else await self.api.get(namespace, name)
            return None if body is None else self._status(tracked, body).get("phase")
        task = await self.state.tasks.get(namespace, dep)
        return None if task is None else (task.get("status") or {}).get("phase")

    async def _run(self, tracked: Tracked, queue: str, now: float) -> None:
        body = tracked.body
        meta, spec = body["metadata"], body["spec"]
        broker = self.broker.in_namespace(meta["namespace"])
        uid, name = meta["uid"], meta["name"]
        total = setintake.total_of(spec)
        state = await broker.taskset_state(queue, uid, indexes=False)
        if not state.exists:
            # New, or Redis lost it: what the status recorded as ended stays ended.
            status = self._status(tracked, body)
            done = setintake.parse_ranges(status.get("completedIndexes"))
            failed = setintake.parse_ranges(status.get("failedIndexes"))
            if await broker.restore_taskset(queue, uid, name, total, done, failed) and (
                done or failed or status.get("succeeded") or status.get("queued")
            ):
                log.warning("taskset %s/%s: Redis lost its items; %d ended ones kept, the"
                            " others enqueued again", meta["namespace"], name,
                            len(done) + len(failed))  # fmt: skip
            state = await broker.taskset_state(queue, uid, indexes=True)
        elif state.restored:
            state = await broker.taskset_state(queue, uid, indexes=True)
        ended = (state.done_indexes | state.failed_indexes) if state.restored else None
        decision = setintake.decide(spec, state, ended)
        if decision.enqueue or decision.upto > state.next:
            messages = setintake.item_messages(body, decision.enqueue, now)
            if await broker.enqueue_items(queue, uid, name, total, messages, decision.upto) is None:
                return  # Redis lost the set since it was read: the next tick restores it
            state.next = decision.upto
        if decision.phase in TASKSET_FINAL_PHASES:
            full = await broker.taskset_state(queue, uid, indexes=True)
            if not full.exists:
                return  # lost since it was read: the status keeps what it recorded
            full.next = state.next
            await self._leftovers(broker, queue, uid, full)
            await self._end(tracked, decision.phase, decision.reason, decision.message, full)
            return
        seen = (state.succeeded, state.failed, state.running, state.next - state.succeeded
                - state.failed - state.running, setintake.progress(spec, state))  # fmt: skip
        if seen == tuple(tracked.written.get(k) for k in ("succeeded", "failed", "running",
                                                           "queued", "progress")):  # fmt: skip
            return
        if now - tracked.written_at < STATUS_SECONDS:
            return
        full = await broker.taskset_state(queue, uid, indexes=True)
        if not full.exists:
            # Lost since it was read: an empty aggregate would erase the ends the status
            # recorded, which the next tick's restore puts back.
            return
        full.next = state.next
        await self._write(tracked, setintake.aggregate(spec, full), now)

    async def _leftovers(self, broker: Broker, queue: str, uid: str, state: SetState) -> None:
        """Items still queued or running when the set ended (its success policy was met, or
        it can no longer be): dropped, running ones told to stop."""
        ended = state.done_indexes | state.failed_indexes
        ids = [setintake.item_id(uid, i) for i in range(state.next) if i not in ended]
        if ids:
            await broker.forget_items(queue, uid, ids, drop_set=False)

    async def _cancel(self, tracked: Tracked, queue: str) -> None:
        body = tracked.body
        meta = body["metadata"]
        broker = self.broker.in_namespace(meta["namespace"])
        state = await broker.taskset_state(queue, meta["uid"], indexes=True)
        await self._leftovers(broker, queue, meta["uid"], state)
        await self._end(tracked, TaskSetPhase.CANCELLED, "Cancelled", "cancelled by spec.cancel",
                        state if state.exists else None)  # fmt: skip

    async def _end(
        self, tracked: Tracked, phase: str, reason: str, message: str, state: SetState | None
    ) -> None:
        body = tracked.body
        meta = body["metadata"]
        now = self.clock.now()
        status: dict[str, Any] = {}
        if state is not None:
            status.update(setintake.aggregate(body["spec"], state))
            status["running"] = 0
            status["queued"] = 0
        status.update(
            {
                "phase": phase,
                "total": setintake.total_of(body["spec"]),
                "finishedAt": rfc3339_millis(now),
                "observedGeneration": meta.get("generation"),
                "conditions": setintake.set_conditions(phase, now, reason, message),
            }
        )
        if phase != TaskSetPhase.SUCCEEDED:
            status["error"] = f"{reason}: {message}"
        await self._write(tracked, status, now)
        log.info("taskset %s/%s %s: %s", meta["namespace"], meta["name"], phase, message)
        if self.on_finished is not None:
            results = None
            if phase == TaskSetPhase.SUCCEEDED:
                results = await self.results(body)
            await self.on_finished(
                meta["namespace"], TASKSET_DEPENDENCY + meta["name"], (phase, results)
            )

    async def _write(self, tracked: Tracked, status: dict[str, Any], now: float) -> None:
        changed = {k: v for k, v in status.items() if tracked.written.get(k) != v}
        if not changed:
            return
        meta = tracked.body["metadata"]
        if await self.api.write_status(meta["namespace"], meta["name"], changed):
            tracked.written.update(changed)
            tracked.written_at = now

    async def _expire(self, tracked: Tracked, status: dict[str, Any], now: float) -> None:
        ttl = (tracked.body.get("spec") or {}).get("ttlSecondsAfterFinished")
        finished = status.get("finishedAt")
        if tracked.deleting or ttl is None or not finished:
            return
        if now < parse_rfc3339(finished) + float(ttl):
            return
        meta = tracked.body["metadata"]
        tracked.deleting = True
        await self.api.delete(meta["namespace"], meta["name"], meta["uid"])

    async def finalize(self, body: dict[str, Any]) -> None:
        """A deleted TaskSet: drop its items and bookkeeping from Redis, then let it go."""
        meta = body["metadata"]
        if TASKSET_FINALIZER not in (meta.get("finalizers") or []):
            return
        queue = queue_of(body)
        if queue is not None:
            broker = self.broker.in_namespace(meta["namespace"])
            state = await broker.taskset_state(queue, meta["uid"], indexes=False)
            upto = max(state.next, 0)
            ids = [setintake.item_id(meta["uid"], i) for i in range(upto)]
            await broker.forget_items(queue, meta["uid"], ids, drop_set=True)
        await self.api.remove_finalizer(body, TASKSET_FINALIZER)


@kopf.on.event(GROUP, VERSION, TASKSETS)
async def taskset_event(
    event: kopf.RawEvent, body: kopf.Body, memo: OperatorMemo, **_: Any
) -> None:
    controller = memo.tasksets
    if event.get("type") == "DELETED":
        controller.deleted(dict(body))
    else:
        await controller.observe(dict(body))
