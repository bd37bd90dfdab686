"""The Task controller: what the operator does on each Task event, and its actions.

Events come from the operator's own feed of Tasks (``controller/feed.py``), not from kopf:
kopf's per-object machinery made a restart cost every Task ever stored. Each event carries
the Task's whole current state, and every action is idempotent (enqueue by uid,
forward-only status), so a missed or repeated event does no harm and the repair loop
covers the rest.

A Task the operator queues costs it no write at all when a worker takes it quickly: the
finalizer and the Queued status are deferred (``controller/deferred.py``) and dropped once
a worker's status write shows they are not needed. The enqueue comes first so a worker can
start at once; a late Queued patch carries the attempt count, which the CRD's transition
rule refuses to lower, so it never overwrites a worker's faster Running.

Nothing of a finished Task stays in the operator's memory once its event is handled, except
a reaper entry while its TTL is about to run out (``controller/reaper.py``) and its outcome
while a Task that depends on it is waiting (``controller/dependents.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from kubetasks.controller import intake
from kubetasks.controller.deferred import DeferredWrites
from kubetasks.controller.dependents import Dependents, Outcome, outcome
from kubetasks.controller.state import OperatorState
from kubetasks.errors import ConfigurationError, MessageTooLargeError
from kubetasks.queuename import is_queue_name
from kubetasks.status_patches import operator_patch
from kubetasks.vocabulary import FINAL_PHASES, TASK_FINALIZER, TASKSET_DEPENDENCY, TaskPhase

if TYPE_CHECKING:
    from kubetasks.controller.memo import OperatorMemo
    from kubetasks.controller.waiting import WaitingTasks

log = logging.getLogger("kubetasks.operator")


#: (namespace, name) -> (phase, result) of a Task, for dependency checks.
PhaseLookup = Callable[[str, str], Awaitable[Outcome]]


class WaitGraph(Protocol):
    """The not yet admitted Tasks with ``dependsOn`` that the caller knows of (the watch's
    :class:`Dependents`, or the repair loop's listing): where cycles are looked for."""

    def unadmitted(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def on_cycle(self, body: dict[str, Any], cycle: str) -> None:
        """The operator is ending this Task for a dependency cycle: it waits no more."""
        ...

    def cycle_of(self, namespace: str, name: str, uid: str) -> str | None:
        """The cycle this Task was failed for, if it was."""
        ...


# -- dependencies ----------------------------------------------------------------------------


async def read_dependency(state: OperatorState, namespace: str, name: str) -> Outcome:
    """The outcome of one entry of ``spec.dependsOn`` as it stands now: a Task read from the
    API, or (``taskset/<name>``) a TaskSet as its controller knows it; ``(None, None)`` for
    one that does not exist."""
    if name.startswith(TASKSET_DEPENDENCY):
        if state.taskset_outcome is None:
            return (None, None)
        return await state.taskset_outcome(namespace, name[len(TASKSET_DEPENDENCY) :])
    body = await state.tasks.get(namespace, name)
    return outcome(body) if body is not None else (None, None)


def api_lookup(state: OperatorState, dependents: Dependents) -> PhaseLookup:
    """Look a dependency up in what the watch has shown, else read it."""

    async def lookup(namespace: str, name: str) -> Outcome:
        known = dependents.known(namespace, name)
        if known is not None:
            return known
        found = await read_dependency(state, namespace, name)
        dependents.remember(namespace, name, found)
        return found

    return lookup


# -- the event handler ------------------------------------------------------------------------


async def task_event(memo: OperatorMemo, kind: str, obj: dict[str, Any]) -> None:
    """One event of the feed: ``kind`` is ADDED, MODIFIED or DELETED; ``obj`` the Task as
    it is now (as it was last, for DELETED)."""
    state, dependents = memo.state, memo.dependents
    meta = obj["metadata"]
    status = obj.get("status") or {}
    phase = status.get("phase")
    if kind == "DELETED":
        memo.tracker.forget(meta["uid"])
        memo.waiting.forget(meta["uid"])
        memo.deferred.forget(meta["uid"])
        dependents.deleted(obj)
        if phase not in FINAL_PHASES:
            # Deleted before it got a finalizer (within the grace): clean up here.
            queue = queue_of(obj)
            if queue is not None:
                await state.broker.in_namespace(meta["namespace"]).forget(queue, meta["uid"])
        return
    ready = dependents.observe(obj)  # before admitting: see controller/dependents.py
    if phase not in (None, TaskPhase.PENDING, TaskPhase.WAITING) or meta.get("deletionTimestamp"):
        memo.waiting.forget(meta["uid"])
    if meta.get("deletionTimestamp"):
        memo.deferred.forget(meta["uid"])
        await finalize(state, obj)
        return
    memo.deferred.observe(obj)
    memo.tracker.observe(obj)
    if phase in FINAL_PHASES:
        memo.reaper.track(obj)
        for dependent in ready:
            await admit(
                state, dependent, api_lookup(state, dependents), graph=dependents,
                waiting=memo.waiting,
            )  # fmt: skip
        return
    if (obj.get("spec") or {}).get("cancel"):
        await cancel(state, obj)
    elif phase is None or phase == TaskPhase.WAITING:
        await admit(
            state, obj, api_lookup(state, dependents), memo.deferred, graph=dependents,
            waiting=memo.waiting,
        )  # fmt: skip


async def readmit(memo: OperatorMemo, body: dict[str, Any]) -> None:
    """A waiting Task whose time is up (``controller/waiting.py``), read afresh."""
    phase = (body.get("status") or {}).get("phase")
    if phase not in (None, TaskPhase.WAITING) or body["metadata"].get("deletionTimestamp"):
        return
    if (body.get("spec") or {}).get("cancel"):
        return
    lookup = api_lookup(memo.state, memo.dependents)
    await admit(memo.state, body, lookup, graph=memo.dependents, waiting=memo.waiting)


# -- actions ----------------------------------------------------------------------------------


def queue_of(body: dict[str, Any]) -> str | None:
    """The Task's queue, or None when its name is invalid (a Task stored under an older,
    looser schema): nothing of such a Task was ever written to Redis, so there is nothing
    there to cancel or forget."""
    queue = (body.get("spec") or {}).get("queue", "default")
    return queue if is_queue_name(queue) else None


async def admit(
    state: OperatorState,
    body: dict[str, Any],
    lookup: PhaseLookup,
    deferred: DeferredWrites | None = None,
    *,
    graph: WaitGraph | None = None,
    waiting: WaitingTasks | None = None,
) -> None:
    """Decide a new (or waiting) Task's fate: wait, fail, or enqueue it. With ``deferred``,
    a Task that goes straight to the queue gets its finalizer and Queued status only if no
    worker has written its status within the grace; without, at once.

    A Task that would wait is failed instead when it is on a dependency cycle (with every
    other Task on it that ``graph`` knows), when its deadline has passed, or when its
    dependency timeout has; one that waits is tracked by ``waiting`` until those times."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    now = state.clock.now()
    generation = meta.get("generation")
    results = None
    depends_on = spec.get("dependsOn") or []
    if depends_on:
        found = {d: await lookup(namespace, d) for d in depends_on}
        deps = intake.dependency_state(depends_on, found)
        # Checked after the lookups: a concurrent admission that failed a cycle through
        # this Task recorded it before failing any Task of it, so a dependency seen Failed
        # here for that cycle does not make this one DependencyFailed.
        cycle = graph.cycle_of(namespace, name, meta["uid"]) if graph is not None else None
        if cycle is not None:
            await set_phase(state, body, TaskPhase.FAILED, "DependencyCycle", cycle)
            return
        if deps.failed:
            await set_phase(state, body, TaskPhase.FAILED, "DependencyFailed", deps.failed)
            return
        if not deps.ready:
            if await fail_cycle(state, body, graph):
                return
            phases = {d: phase for d, (phase, _) in found.items()}
            verdict = intake.waiting_verdict(body, deps, phases, now)
            if verdict is not None:
                await set_phase(state, body, verdict.phase, verdict.reason, verdict.message)
                return
            if waiting is not None:
                waiting.track(body, intake.wait_until(body, now))
            if status.get("phase") != TaskPhase.WAITING:
                awaited = ", ".join(deps.waiting_for)
                await set_phase(
                    state,
                    body,
                    TaskPhase.WAITING,
                    "WaitingForDependencies",
                    f"waiting for {awaited}",
                )
            return
        results = deps.results
    try:
        message = intake.build_message(body, now, results)
    except MessageTooLargeError as exc:
        await set_phase(state, body, TaskPhase.FAILED, "MessageTooLarge", str(exc))
        return
    except ConfigurationError as exc:
        await set_phase(state, body, TaskPhase.FAILED, "InvalidSpec", str(exc))
        return
    spent = int(status.get("attempts") or 0)
    try:
        broker = state.broker.in_namespace(namespace)
        (outcome,) = await broker.enqueue([message], spent={message.id: spent})
    except ConnectionError as exc:
        state.redis_ok = False
        state.repair_soon.set()
        await set_phase(
            state,
            body,
            TaskPhase.PENDING,
            "RedisUnavailable",
            f"cannot reach Redis, will retry: {exc}",
        )
        return
    state.redis_ok = True
    if outcome.outcome == "duplicate":
        await set_phase(
            state,
            body,
            TaskPhase.FAILED,
            "DuplicateTask",
            f"uniqueKey {spec.get('uniqueKey')!r} is held by task {outcome.holder}",
        )
        # A refused duplicate keeps nothing in Redis; it is final.
        return
    phase = intake.queued_phase(message, now)
    patch = operator_patch(
        phase,
        now,
        "Enqueued",
        f"on queue {message.queue}",
        generation=generation,
        extra={"attempts": spent},
    )
    if deferred is not None and phase == TaskPhase.QUEUED:
        deferred.defer(body, patch)
        return
    await state.tasks.add_finalizer(body, TASK_FINALIZER)
    await state.writer.write(namespace, name, patch, uid=meta["uid"], fresh=not status)


async def fail_cycle(state: OperatorState, body: dict[str, Any], graph: WaitGraph | None) -> bool:
    """Fail every Task on a dependency cycle through this one (reason DependencyCycle, the
    message naming the cycle from that Task on); False when there is none."""
    if graph is None:
        return False
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]

    def depends_on(task: str) -> list[str]:
        found = body if task == name else graph.unadmitted(namespace, task)
        return list(((found or {}).get("spec") or {}).get("dependsOn") or [])

    cycle = intake.find_cycle(name, depends_on)
    if cycle is None:
        return False
    members = cycle[:-1]
    failing: list[tuple[dict[str, Any], str]] = []
    for i, task in enumerate(members):
        member = body if task == name else graph.unadmitted(namespace, task)
        if member is not None:
            text = intake.cycle_text([*members[i:], *members[:i], task])
            failing.append((member, f"dependency cycle {text}"))
    for member, message in failing:  # every member recorded before any is failed
        graph.on_cycle(member, message)
    for member, message in failing:
        await set_phase(state, member, TaskPhase.FAILED, "DependencyCycle", message)
    return True


async def set_phase(
    state: OperatorState, body: dict[str, Any], phase: str, reason: str, message: str
) -> None:
    meta = body["metadata"]
    patch = operator_patch(
        phase, state.clock.now(), reason, message, generation=meta.get("generation")
    )
    await state.writer.write(
        meta["namespace"], meta["name"], patch, uid=meta["uid"], fresh=not body.get("status")
    )


async def cancel(state: OperatorState, body: dict[str, Any]) -> None:
    """``spec.cancel: true``: a waiting task ends Cancelled now; a running one is told to
    stop, and its worker reports Cancelled."""
    queue = queue_of(body)
    meta = body["metadata"]
    broker = state.broker.in_namespace(meta["namespace"])
    result = "missing" if queue is None else await broker.cancel(queue, meta["uid"])
    if result in ("cancelled", "missing"):
        await set_phase(state, body, TaskPhase.CANCELLED, "Cancelled", "cancelled by spec.cancel")


async def finalize(state: OperatorState, body: dict[str, Any]) -> None:
    """A deleted Task: drop it from Redis (cancel it if running), then let it go."""
    if TASK_FINALIZER not in (body["metadata"].get("finalizers") or []):
        return
    queue = queue_of(body)
    meta = body["metadata"]
    if queue is not None:
        await state.broker.in_namespace(meta["namespace"]).forget(queue, meta["uid"])
    await state.tasks.remove_finalizer(body, TASK_FINALIZER)
