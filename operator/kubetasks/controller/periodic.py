"""The PeriodicTask controller: one timer per PeriodicTask, one child Task per slot.

Each PeriodicTask gets a small asyncio task (:class:`PeriodicRunner`) that sleeps until its
next slot, asks :func:`kubetasks.scheduling.plan` what to do, does it and writes status.
Sleeping until the slot, rather than polling, is what puts a child Task on the API server
within milliseconds of its slot while hundreds of idle schedules cost nothing.

Exactly once per slot: the child's name is ``<periodic task>-<slot in Unix seconds>``, so
the API server's AlreadyExists makes a second create of the same slot impossible, whether
it comes from this operator after a restart or from another operator running beside it.
The last slot run is taken as the latest of ``status.lastScheduleTime``, the slots of the
existing children and what this process created, so a status write lost in a crash does
not make a slot look unrun.

Children are followed through a kopf index of Tasks labelled ``kubetasks.dev/periodic-task``
and keyed by their controlling owner's uid; every change of a child wakes its parent's
runner, which then updates ``active``, ``lastSuccessfulTime`` and deletes finished children
beyond the history limits. The runner is level-triggered: whatever woke it, it recomputes
everything from the current PeriodicTask, the index and the clock, and writes status only
when it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import kopf

from kubetasks.clock import SYSTEM_CLOCK, Clock
from kubetasks.errors import ConfigurationError
from kubetasks.k8s.api import GROUP, PERIODIC_TASKS, TASKS, VERSION, reason_text
from kubetasks.k8s.periodic import PeriodicApi
from kubetasks.scheduling import (
    InvalidTimeZoneError,
    Plan,
    Schedule,
    child_name,
    load_zone,
    parent_label,
    parse,
    parse_rfc3339,
    plan,
    rfc3339,
)
from kubetasks.transitions import SUCCEEDED, TERMINAL, timestamp

log = logging.getLogger("kubetasks.periodic")

#: Label on every child Task; its value is the PeriodicTask's name (hashed if over 63).
PARENT_LABEL = "kubetasks.dev/periodic-task"
#: Annotation on every child Task: its slot, RFC 3339 in UTC.
SCHEDULED_ANNOTATION = "kubetasks.dev/scheduled-time"
#: Annotation on every child Task: when the operator sent the create, with milliseconds
#: (creationTimestamp has whole seconds only; this is what lateness is measured with).
CREATED_ANNOTATION = "kubetasks.dev/created-at"
#: status.active lists at most this many names (the CRD's bound); activeCount counts all.
MAX_ACTIVE_LISTED = 256
#: Seconds before a failed sync (API unreachable, refused write) is tried again.
RETRY_SECONDS = 2.0
#: Seconds a child's change waits before its parent syncs, so that a burst of changes
#: makes one sync (and at most one status write).
CHILD_COALESCE = 0.2
#: Seconds a child this process created counts as active before the index shows it.
UNSEEN_GRACE = 30.0


# -- children, as the index sees them ---------------------------------------------------------


@dataclass(frozen=True)
class Child:
    name: str
    phase: str | None
    slot: float | None
    finished_at: float | None
    deleting: bool = False

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL


def owner_uid(meta: dict[str, Any]) -> str | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "PeriodicTask" and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _time(value: Any) -> float | None:
    try:
        return parse_rfc3339(value) if isinstance(value, str) else None
    except ValueError:
        return None


@kopf.index(GROUP, VERSION, TASKS, labels={PARENT_LABEL: kopf.PRESENT})
def periodic_children(
    namespace: str | None, name: str, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], Child] | None:
    uid = owner_uid(dict(meta))
    if uid is None:
        return None
    child = Child(
        name=name,
        phase=status.get("phase"),
        slot=_time(meta.annotations.get(SCHEDULED_ANNOTATION)),
        finished_at=_time(status.get("finishedAt")),
        deleting=bool(meta.get("deletionTimestamp")),
    )
    return {(namespace or "", uid): child}


# -- decisions that are not about time (pure) -------------------------------------------------


def history_to_delete(
    children: Iterable[Child], successful_limit: int, failed_limit: int
) -> list[str]:
    """Finished children beyond the history limits, oldest first (by slot, then name).
    Children already being deleted neither count nor are deleted again."""

    def age(child: Child) -> tuple[float, str]:
        return (child.slot or 0.0, child.name)

    finished = sorted((c for c in children if c.finished and not c.deleting), key=age)
    succeeded = [c for c in finished if c.phase == SUCCEEDED]
    failed = [c for c in finished if c.phase != SUCCEEDED]
    doomed = succeeded[: max(0, len(succeeded) - successful_limit)]
    doomed += failed[: max(0, len(failed) - failed_limit)]
    return [c.name for c in sorted(doomed, key=age)]


def schedule_condition(
    previous: list[dict[str, Any]], ok: bool, reason: str, message: str, now: float
) -> list[dict[str, Any]]:
    """The ScheduleValid condition, keeping its transition time while its status holds."""
    status = "True" if ok else "False"
    old = next((c for c in previous if c.get("type") == "ScheduleValid"), None)
    since = (old or {}).get("lastTransitionTime") if (old or {}).get("status") == status else None
    return [
        {
            "type": "ScheduleValid",
            "status": status,
            "reason": reason,
            "message": message[:2048],
            "lastTransitionTime": since or timestamp(now),
        }
    ]


def child_body(parent: dict[str, Any], slot: int, now: float) -> dict[str, Any]:
    """The child Task of ``parent`` for ``slot``: the template's spec, labels and
    annotations, plus the parent label, the slot and the controlling owner reference."""
    meta = parent["metadata"]
    template = (parent.get("spec") or {}).get("taskTemplate") or {}
    template_meta = template.get("metadata") or {}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Task",
        "metadata": {
            "name": child_name(meta["name"], slot),
            "namespace": meta["namespace"],
            "labels": {
                **(template_meta.get("labels") or {}),
                PARENT_LABEL: parent_label(meta["name"]),
            },
            "annotations": {
                **(template_meta.get("annotations") or {}),
                SCHEDULED_ANNOTATION: rfc3339(slot),
                CREATED_ANNOTATION: timestamp(now),
            },
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "PeriodicTask",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


# -- one runner per PeriodicTask --------------------------------------------------------------


class PeriodicRunner:
    """Sleeps until the next slot or until woken, then syncs the PeriodicTask."""

    def __init__(self, scheduling: Scheduling, body: dict[str, Any]) -> None:
        self.scheduling = scheduling
        self.body = body
        self.wake = asyncio.Event()
        self.unseen: dict[str, tuple[int, float]] = {}
        """Children created (here or by another operator) that the index may not show yet:
        name -> (slot, when created). They count as active until the index has them."""
        self.last_run: int | None = None
        self.reported_late: int | None = None
        self.poked = False
        self.missed = 0
        self.pending: tuple[list[str], dict[str, Any]] | None = None
        """Deletions and status waiting for the housekeeper (only the latest counts)."""
        self.deleted: set[str] = set()
        """Children whose delete was sent and that the index still lists."""
        self.housekeeper: asyncio.Task[None] | None = None
        self.task = asyncio.create_task(self.run(), name=f"periodic {self.key}")

    @property
    def key(self) -> str:
        meta = self.body["metadata"]
        return f"{meta['namespace']}/{meta['name']}"

    def update(self, body: dict[str, Any]) -> None:
        self.body = body
        self.wake.set()

    def poked_now(self) -> None:
        self.poked = False
        self.wake.set()

    async def run(self) -> None:
        clock = self.scheduling.clock
        while True:
            self.wake.clear()
            try:
                wake_at = await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "periodic task %s: sync failed, retrying: %s", self.key, reason_text(exc)
                )
                wake_at = clock.now() + RETRY_SECONDS
            timeout = None if wake_at is None else max(0.0, wake_at - clock.now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def sync(self) -> float | None:
        """Plan, act, write status; return when to look again (None: when woken)."""
        body = self.body
        meta, spec = body["metadata"], body.get("spec") or {}
        status = body.get("status") or {}
        scheduling = self.scheduling
        now = scheduling.clock.now()
        namespace = meta["namespace"]
        children = scheduling.children(namespace, meta["uid"])
        indexed = {c.name for c in children}
        for unseen, (_, at) in list(self.unseen.items()):
            if unseen in indexed or at < now - UNSEEN_GRACE:
                del self.unseen[unseen]
        running = {c.name for c in children if not c.finished and not c.deleting}
        active = sorted(running | set(self.unseen))

        try:
            schedule, zone = self.schedule(spec)
        except ConfigurationError as exc:
            reason = (
                "InvalidTimeZone" if isinstance(exc, InvalidTimeZoneError) else "InvalidSchedule"
            )
            self.tidy(
                [],
                {
                    "nextScheduleTime": None,
                    "active": active[:MAX_ACTIVE_LISTED] or None,
                    "activeCount": len(active),
                    "conditions": schedule_condition(
                        status.get("conditions") or [], False, reason, str(exc), now
                    ),
                    "observedGeneration": meta.get("generation"),
                },
            )
            return None

        slots = [c.slot for c in children if c.slot is not None]
        slots += [slot for slot, _ in self.unseen.values()]
        recorded = _time(status.get("lastScheduleTime"))
        last = max([t for t in (recorded, self.last_run, *slots) if t is not None], default=None)
        decision = plan(
            schedule,
            zone,
            last=last,
            created=_time(meta.get("creationTimestamp")) or now,
            now=now,
            starting_deadline=spec.get("startingDeadlineSeconds"),
            policy=spec.get("concurrencyPolicy", "Allow"),
            active=active,
            suspend=bool(spec.get("suspend")),
        )
        # Kept in memory too: the status written in the background may not be back yet.
        missed = max(int(status.get("missedSlots") or 0), self.missed)
        if decision.run is not None:
            if await self.start(body, decision, now):
                missed += decision.missed
            self.missed = missed
            # Replaced runs stay active until the Task controller has cancelled them.
            active = sorted(set(active) | set(self.unseen))
            last = decision.run
        elif decision.reason == "TooLate" and decision.late_slot != self.reported_late:
            self.reported_late = decision.late_slot
            self.event(
                "Warning",
                "MissSchedule",
                f"missed the slot {rfc3339(decision.late_slot or 0)}: more than "
                f"startingDeadlineSeconds ({spec.get('startingDeadlineSeconds')}) late",
            )

        self.deleted &= indexed
        doomed = [
            name
            for name in history_to_delete(
                children,
                int(spec.get("successfulTasksHistoryLimit", 3)),
                int(spec.get("failedTasksHistoryLimit", 1)),
            )
            if name not in self.deleted
        ]

        succeeded = [c.finished_at for c in children if c.phase == SUCCEEDED and c.finished_at]
        last_success = max([t for t in (_time(status.get("lastSuccessfulTime")), *succeeded) if t],
                           default=None)  # fmt: skip
        self.tidy(
            doomed,
            {
                "lastScheduleTime": rfc3339(last) if last is not None else None,
                "nextScheduleTime": rfc3339(decision.next_time)
                if decision.next_time is not None
                else None,
                "lastSuccessfulTime": timestamp(last_success) if last_success else None,
                "active": active[:MAX_ACTIVE_LISTED] or None,
                "activeCount": len(active),
                "missedSlots": missed,
                "conditions": schedule_condition(
                    status.get("conditions") or [], True, "Valid", "", now
                ),
                "observedGeneration": meta.get("generation"),
            },
        )
        return None if decision.next_time is None else float(decision.next_time)

    def schedule(self, spec: dict[str, Any]) -> tuple[Schedule, Any]:
        text, zone = str(spec.get("schedule", "")), str(spec.get("timeZone") or "UTC")
        cached = self.scheduling.parsed.get((text, zone))
        if cached is None:
            cached = (parse(text), load_zone(zone))
            self.scheduling.parsed[(text, zone)] = cached
        return cached

    async def start(self, body: dict[str, Any], decision: Plan, now: float) -> bool:
        """Cancel what Replace replaces, then create the slot's child; False if it existed."""
        assert decision.run is not None
        meta = body["metadata"]
        api = self.scheduling.api
        for name in decision.replace:
            await api.cancel_child(meta["namespace"], name)
        child = child_body(body, decision.run, self.scheduling.clock.now())
        created = await api.create_child(meta["namespace"], child)
        self.last_run = decision.run
        self.unseen[child["metadata"]["name"]] = (decision.run, now)
        if not created:
            log.info("periodic task %s: slot %s already ran", self.key, rfc3339(decision.run))
            return False
        if decision.too_many_missed:
            message = (
                f"{decision.missed} slots were missed before {rfc3339(decision.run)}; only that "
                "one ran. Set or lower startingDeadlineSeconds, or check the clocks."
            )
            log.warning("periodic task %s: %s", self.key, message)
            self.event("Warning", "TooManyMissedTimes", message)
        return True

    def tidy(self, doomed: list[str], desired: dict[str, Any]) -> None:
        """Hand deletions and the desired status to the housekeeper, which writes them in
        the background: a slow API server must not hold back the next slot's create."""
        self.pending = (doomed, desired)
        if self.housekeeper is None or self.housekeeper.done():
            self.housekeeper = asyncio.create_task(self.housekeep())

    async def housekeep(self) -> None:
        api = self.scheduling.api
        while self.pending is not None:
            (doomed, desired), self.pending = self.pending, None
            meta = self.body["metadata"]
            try:
                for name in doomed:
                    self.deleted.add(name)
                    try:
                        await api.delete_child(meta["namespace"], name)
                    except Exception:
                        self.deleted.discard(name)
                        raise
                # Compared with the newest status seen (ours included), not the one the
                # sync started from.
                current = self.body.get("status") or {}
                changed = {k: v for k, v in desired.items() if current.get(k) != v}
                if changed:
                    await api.write_status(meta["namespace"], meta["name"], changed)
                    # Our write comes back through the watch; until then, do not repeat it.
                    self.body = {**self.body, "status": {**current, **changed}}
            except Exception as exc:
                log.warning(
                    "periodic task %s: status or history update failed, retrying: %s",
                    self.key,
                    reason_text(exc),
                )
                asyncio.get_running_loop().call_later(RETRY_SECONDS, self.wake.set)

    def event(self, kind: str, reason: str, message: str) -> None:
        try:
            kopf.event(cast(kopf.Body, self.body), type=kind, reason=reason, message=message)
        except Exception as exc:  # events are best effort
            log.debug("event %s on %s not posted: %s", reason, self.key, exc)

    async def stop(self) -> None:
        tasks = [t for t in (self.task, self.housekeeper) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Scheduling:
    """All runners of this operator, and what they share."""

    def __init__(self, api: PeriodicApi, clock: Clock = SYSTEM_CLOCK) -> None:
        self.api = api
        self.clock = clock
        self.runners: dict[str, PeriodicRunner] = {}
        self.index: kopf.Index[tuple[str, str], Child] | None = None
        self.parsed: dict[tuple[str, str], tuple[Schedule, Any]] = {}

    def children(self, namespace: str, uid: str) -> list[Child]:
        if self.index is None:
            return []
        return list(self.index.get((namespace, uid), []))

    def observe(self, body: dict[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        runner = self.runners.get(uid)
        if runner is None:
            self.runners[uid] = PeriodicRunner(self, body)
        else:
            runner.update(body)

    def poke(self, uid: str) -> None:
        """A child changed: sync its parent shortly. The short delay folds the several
        events of one child's life (admitted, queued, running, finished) into one sync."""
        runner = self.runners.get(uid)
        if runner is not None and not runner.poked:
            runner.poked = True
            asyncio.get_running_loop().call_later(CHILD_COALESCE, runner.poked_now)

    async def forget(self, uid: str) -> None:
        runner = self.runners.pop(uid, None)
        if runner is not None:
            await runner.stop()

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.runners.values()), return_exceptions=True)
        self.runners.clear()


# -- kopf handlers ----------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, PERIODIC_TASKS)
async def periodic_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    scheduling: Scheduling = memo.periodic
    scheduling.index = kwargs["periodic_children"]
    uid = body["metadata"]["uid"]
    if event.get("type") == "DELETED" or body["metadata"].get("deletionTimestamp"):
        await scheduling.forget(uid)
        return
    # Each watch event brings a freshly decoded object and the runner never mutates it, so a
    # shallow copy is enough (a deep copy, managedFields and all, cost ~2 ms per event).
    scheduling.observe(dict(body))


@kopf.on.event(GROUP, VERSION, TASKS, labels={PARENT_LABEL: kopf.PRESENT})
async def periodic_child_event(body: kopf.Body, memo: Any, **_: Any) -> None:
    uid = owner_uid(dict(body["metadata"]))
    if uid is not None:
        memo.periodic.poke(uid)
