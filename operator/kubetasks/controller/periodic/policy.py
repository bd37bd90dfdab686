"""What a PeriodicTask's runner should do, decided without I/O.

:func:`plan_sync` turns one :class:`Snapshot` (the PeriodicTask, its children as the index
shows them, the clock's reading and what the runner remembers) into one :class:`SyncPlan`:
which slot's child to create, which children to cancel first and to delete after, which
warnings to post and the status to write. Time enters only as ``Snapshot.now``, so every
policy (Allow, Forbid, Replace, suspend, starting deadlines, history limits) is a function
of its arguments and is tested in fake time.

The slot arithmetic itself (cron, time zones, missed slots) is :mod:`kubetasks.scheduling`;
this module adds what needs the children: which are active, which to delete, and the last
slot run, taken as the latest of ``status.lastScheduleTime``, the slots of the children and
what the runner created, so a status write lost in a crash does not make a slot look unrun.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from kubetasks.errors import ConfigurationError
from kubetasks.scheduling import (
    InvalidTimeZoneError,
    Schedule,
    child_name,
    load_zone,
    parent_label,
    parse,
    plan,
)
from kubetasks.timestamps import parse_rfc3339, rfc3339, rfc3339_millis
from kubetasks.vocabulary import (
    API_VERSION,
    CREATED_ANNOTATION,
    FINAL_PHASES,
    PARENT_LABEL,
    SCHEDULED_ANNOTATION,
    TaskPhase,
)

#: status.active lists at most this many names (the CRD's bound); activeCount counts all.
MAX_ACTIVE_LISTED = 256
#: Seconds a child the runner created counts as active before the index shows it.
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
        return self.phase in FINAL_PHASES


def owner_uid(meta: Mapping[str, Any]) -> str | None:
    """The uid of the PeriodicTask that controls this object, if one does."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "PeriodicTask" and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def parse_time(value: Any) -> float | None:
    """An RFC 3339 time as Unix seconds; None for anything else (absent or malformed)."""
    try:
        return parse_rfc3339(value) if isinstance(value, str) else None
    except ValueError:
        return None


def child_from(meta: Mapping[str, Any], status: Mapping[str, Any]) -> Child:
    """A child Task as the index keeps it."""
    annotations = meta.get("annotations") or {}
    return Child(
        name=str(meta.get("name")),
        phase=status.get("phase"),
        slot=parse_time(annotations.get(SCHEDULED_ANNOTATION)),
        finished_at=parse_time(status.get("finishedAt")),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def history_to_delete(
    children: Iterable[Child], successful_limit: int, failed_limit: int
) -> list[str]:
    """Finished children beyond the history limits, oldest first (by slot, then name).
    Children already being deleted neither count nor are deleted again."""

    def age(child: Child) -> tuple[float, str]:
        return (child.slot or 0.0, child.name)

    finished = sorted((c for c in children if c.finished and not c.deleting), key=age)
    succeeded = [c for c in finished if c.phase == TaskPhase.SUCCEEDED]
    failed = [c for c in finished if c.phase != TaskPhase.SUCCEEDED]
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
            "lastTransitionTime": since or rfc3339_millis(now),
        }
    ]


def child_body(parent: Mapping[str, Any], slot: int, now: float) -> dict[str, Any]:
    """The child Task of ``parent`` for ``slot``: the template's spec, labels and
    annotations, plus the parent label, the slot and the controlling owner reference."""
    meta = parent["metadata"]
    template = (parent.get("spec") or {}).get("taskTemplate") or {}
    template_meta = template.get("metadata") or {}
    return {
        "apiVersion": API_VERSION,
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
                CREATED_ANNOTATION: rfc3339_millis(now),
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "PeriodicTask",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


# -- schedules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvalidSchedule:
    """A spec whose schedule or time zone does not parse: what the condition says."""

    reason: str
    """InvalidSchedule or InvalidTimeZone."""
    message: str


class ParsedSchedules:
    """Parsed schedules by (schedule, timeZone), shared by all runners: hundreds of
    PeriodicTasks often share a handful of schedules. Only valid ones are kept."""

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, str], tuple[Schedule, ZoneInfo]] = {}

    def get(self, spec: Mapping[str, Any]) -> tuple[Schedule, ZoneInfo] | InvalidSchedule:
        text, zone = str(spec.get("schedule", "")), str(spec.get("timeZone") or "UTC")
        cached = self._parsed.get((text, zone))
        if cached is None:
            try:
                cached = (parse(text), load_zone(zone))
            except ConfigurationError as exc:
                invalid = isinstance(exc, InvalidTimeZoneError)
                return InvalidSchedule(
                    "InvalidTimeZone" if invalid else "InvalidSchedule", str(exc)
                )
            self._parsed[(text, zone)] = cached
        return cached


# -- one sync: snapshot in, plan out ----------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """What a runner remembers between syncs that the API may not show yet."""

    unseen: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    """Children created (here or by another operator) that the index may not show yet:
    name -> (slot, when created). They count as active until the index has them, or for
    :data:`UNSEEN_GRACE` seconds."""
    last_run: int | None = None
    """The latest slot whose create this runner sent (answered created or AlreadyExists)."""
    missed: int = 0
    """``status.missedSlots`` as last planned: the status written in the background may not
    be back yet."""
    reported_late: int | None = None
    """The latest slot warned about as past its starting deadline (one warning per slot)."""


def remembered(memory: Memory, indexed: Iterable[str], now: float) -> Memory:
    """``memory`` without the unseen children the index now shows or that are too old."""
    shown = set(indexed)
    unseen = {
        name: (slot, at)
        for name, (slot, at) in memory.unseen.items()
        if name not in shown and at >= now - UNSEEN_GRACE
    }
    return replace(memory, unseen=unseen)


@dataclass(frozen=True)
class Snapshot:
    """Everything one sync decides from, read at one moment."""

    body: Mapping[str, Any]
    """The PeriodicTask as last seen (with the status this runner last wrote)."""
    now: float
    children: tuple[Child, ...]
    """Its child Tasks in the index."""
    schedule: tuple[Schedule, ZoneInfo] | InvalidSchedule
    memory: Memory
    """The runner's memory, already reconciled with ``children`` (:func:`remembered`)."""
    deletes_sent: frozenset[str] = frozenset()
    """Children whose delete was sent and that the index still lists."""


@dataclass(frozen=True)
class SyncPlan:
    """What one sync does. Only the create of :attr:`run` waits for the API; deletions and
    the status are written in the background."""

    status: dict[str, Any]
    """The status to write (fields that did not change are left out when written),
    assuming the create of :attr:`run`, if any, is answered created."""
    memory: Memory
    """The runner's memory after this sync, on the same assumption."""
    wake_at: float | None
    """When to sync again if nothing wakes the runner first (None: only when woken)."""
    run: int | None = None
    """The slot whose child Task to create now."""
    replace: tuple[str, ...] = ()
    """Active children to cancel before that create (concurrencyPolicy Replace)."""
    missed: int = 0
    """Missed slots counted before this sync: what ``missedSlots`` stays at if the create
    is answered AlreadyExists (the slot was run, and its skipped slots counted, before)."""
    delete: tuple[str, ...] = ()
    """Finished children beyond the history limits."""
    too_many_missed: str | None = None
    """A TooManyMissedTimes warning to post once the create is ours."""
    miss_schedule: str | None = None
    """A MissSchedule warning to post (a slot passed its starting deadline)."""

    def taken(self) -> tuple[dict[str, Any], Memory]:
        """Status and memory when the create of :attr:`run` met AlreadyExists: the slot
        counts as run, its skipped slots are not counted again."""
        return {**self.status, "missedSlots": self.missed}, replace(self.memory, missed=self.missed)


def plan_sync(snapshot: Snapshot) -> SyncPlan:
    """Decide one sync of a PeriodicTask (level-triggered: whatever woke the runner, the
    answer depends only on the snapshot)."""
    body, now, memory, children = snapshot.body, snapshot.now, snapshot.memory, snapshot.children
    meta, spec = body["metadata"], body.get("spec") or {}
    status = body.get("status") or {}
    conditions = status.get("conditions") or []
    running = {c.name for c in children if not c.finished and not c.deleting}
    active = sorted(running | set(memory.unseen))

    if isinstance(snapshot.schedule, InvalidSchedule):
        invalid = snapshot.schedule
        return SyncPlan(
            status={
                "nextScheduleTime": None,
                "active": active[:MAX_ACTIVE_LISTED] or None,
                "activeCount": len(active),
                "conditions": schedule_condition(
                    conditions, False, invalid.reason, invalid.message, now
                ),
                "observedGeneration": meta.get("generation"),
            },
            memory=memory,
            wake_at=None,
        )

    schedule, zone = snapshot.schedule
    slots = [c.slot for c in children if c.slot is not None]
    slots += [slot for slot, _ in memory.unseen.values()]
    recorded = parse_time(status.get("lastScheduleTime"))
    last = max([t for t in (recorded, memory.last_run, *slots) if t is not None], default=None)
    decision = plan(
        schedule,
        zone,
        last=last,
        created=parse_time(meta.get("creationTimestamp")) or now,
        now=now,
        starting_deadline=spec.get("startingDeadlineSeconds"),
        policy=spec.get("concurrencyPolicy", "Allow"),
        active=active,
        suspend=bool(spec.get("suspend")),
    )
    missed = max(int(status.get("missedSlots") or 0), memory.missed)
    missed_after = missed
    too_many_missed = miss_schedule = None
    if decision.run is not None:
        unseen = {**memory.unseen, child_name(meta["name"], decision.run): (decision.run, now)}
        missed_after = missed + decision.missed
        memory = replace(memory, unseen=unseen, last_run=decision.run, missed=missed_after)
        # Replaced runs stay active until the Task controller has cancelled them.
        active = sorted(set(active) | set(unseen))
        last = decision.run
        if decision.too_many_missed:
            too_many_missed = (
                f"{decision.missed} slots were missed before {rfc3339(decision.run)}; only that "
                "one ran. Set or lower startingDeadlineSeconds, or check the clocks."
            )
    elif decision.reason == "TooLate" and decision.late_slot != memory.reported_late:
        memory = replace(memory, reported_late=decision.late_slot)
        miss_schedule = (
            f"missed the slot {rfc3339(decision.late_slot or 0)}: more than "
            f"startingDeadlineSeconds ({spec.get('startingDeadlineSeconds')}) late"
        )

    doomed = history_to_delete(
        children,
        int(spec.get("successfulTasksHistoryLimit", 3)),
        int(spec.get("failedTasksHistoryLimit", 1)),
    )
    succeeded = [
        c.finished_at for c in children if c.phase == TaskPhase.SUCCEEDED and c.finished_at
    ]
    last_success = max(
        [t for t in (parse_time(status.get("lastSuccessfulTime")), *succeeded) if t],
        default=None,
    )
    next_time = decision.next_time
    return SyncPlan(
        status={
            "lastScheduleTime": rfc3339(last) if last is not None else None,
            "nextScheduleTime": rfc3339(next_time) if next_time is not None else None,
            "lastSuccessfulTime": rfc3339_millis(last_success) if last_success else None,
            "active": active[:MAX_ACTIVE_LISTED] or None,
            "activeCount": len(active),
            "missedSlots": missed_after,
            "conditions": schedule_condition(conditions, True, "Valid", "", now),
            "observedGeneration": meta.get("generation"),
        },
        memory=memory,
        wake_at=None if next_time is None else float(next_time),
        run=decision.run,
        replace=decision.replace,
        missed=missed,
        delete=tuple(name for name in doomed if name not in snapshot.deletes_sent),
        too_many_missed=too_many_missed,
        miss_schedule=miss_schedule,
    )
