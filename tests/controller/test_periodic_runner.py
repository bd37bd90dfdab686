"""The PeriodicTask runner in fake time: every policy, driven sync by sync in milliseconds.

A :class:`World` stands in for what surrounds one runner: a fake API that keeps the child
Tasks in a dict (and answers AlreadyExists as the API server does), the index over them, the
Events posted, an optional worker that runs each child for a given time, and a
:class:`~kubetasks.clock.FakeClock`. :meth:`World.run_until` wakes the runner as its loop
does: at the time its last sync asked for, after a failed sync :data:`RETRY_SECONDS` later,
and :data:`CHILD_COALESCE` after any change of a child (as the child event handler pokes it).

The tests assert what a user would see: the child Tasks by slot (``kubectl get tasks``),
the PeriodicTask's status and its Events. The end-to-end tier (tests/controller/
test_periodic.py) keeps what only the real control plane shows: lateness in real time, a
killed and restarted operator process, two operator processes racing.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest

from kubetasks.clock import FakeClock
from kubetasks.controller.periodic import PeriodicRunners
from kubetasks.controller.periodic.policy import (
    UNSEEN_GRACE,
    Child,
    ParsedSchedules,
    child_from,
    owner_uid,
    plan_sync,
)
from kubetasks.controller.periodic.runner import CHILD_COALESCE, RETRY_SECONDS, PeriodicRunner
from kubetasks.scheduling import load_zone
from kubetasks.timestamps import parse_rfc3339, rfc3339, rfc3339_millis
from kubetasks.vocabulary import API_VERSION, CREATED_ANNOTATION, PARENT_LABEL, SCHEDULED_ANNOTATION

NAMESPACE, NAME, UID = "team-a", "tick", "0b7f-uid"
ECHO = {"handler": "kubetasks.echo", "args": ["tick"]}
T0 = int(datetime.fromisoformat("2026-01-01T00:00:00+00:00").timestamp())
NEW_YORK = load_zone("America/New_York")


class ApiDownError(Exception):
    pass


class World:
    """One PeriodicTask, its child Tasks and the clock, as the API server, the Task
    controller and the workers would show them to the runner."""

    def __init__(self, schedule: str, *, at: float, work: float | None = None, **spec: Any) -> None:
        self.clock = FakeClock(at)
        self.parent: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": "PeriodicTask",
            "metadata": {
                "name": NAME,
                "namespace": NAMESPACE,
                "uid": UID,
                "generation": 1,
                "creationTimestamp": rfc3339(at),
            },
            "spec": {
                "schedule": schedule,
                "taskTemplate": {"metadata": {"labels": {"team": "a"}}, "spec": ECHO},
                **spec,
            },
        }
        self.status: dict[str, Any] = {}
        """The PeriodicTask's status as stored."""
        self.tasks: dict[str, dict[str, Any]] = {}
        """Child Tasks by name."""
        self.created: list[str] = []
        self.creates = asyncio.Event()
        self.running_at_create: list[int] = []
        """How many children were running when each child was created."""
        self.already_existed: list[str] = []
        self.cancelled: list[str] = []
        self.deleted: list[str] = []
        self.status_writes = 0
        self.events: list[tuple[str, str, str]] = []
        self.work = work
        """Seconds a worker runs each child from its create (None: no worker, children stay
        queued)."""
        self.outcome = "Succeeded"
        self.ends: dict[str, tuple[float, str]] = {}
        """Children that will end: name -> (when, phase)."""
        self.lagging = False
        """The index does not show children created while this is set."""
        self.hidden: set[str] = set()
        self.down_until: float | None = None
        """The API refuses every request before this time."""
        self.status_refused = False
        """Status writes fail (time out) while every other request succeeds."""
        self.poke_at: float | None = None
        self.schedules = ParsedSchedules()
        self.runners: list[PeriodicRunner] = []
        self.runner = self.new_runner()
        self.wake: dict[PeriodicRunner, float | None] = {}

    # -- the runner's dependencies ----------------------------------------------------------

    def new_runner(self) -> PeriodicRunner:
        """A runner as a (re)started operator makes one: from the PeriodicTask as stored."""
        runner = PeriodicRunner(
            self.stored(),
            api=self,
            clock=self.clock,
            children=self.children,
            events=self.post,
            schedules=self.schedules,
        )
        self.runners.append(runner)
        return runner

    def stored(self) -> dict[str, Any]:
        return {**copy.deepcopy(self.parent), "status": copy.deepcopy(self.status)}

    def children(self, namespace: str, uid: str) -> list[Child]:
        return [
            child_from(task["metadata"], task["status"])
            for name, task in self.tasks.items()
            if name not in self.hidden
            and task["metadata"]["namespace"] == namespace
            and owner_uid(task["metadata"]) == uid
        ]

    def post(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        assert body["metadata"]["uid"] == UID
        self.events.append((kind, reason, message))

    def check_up(self) -> None:
        if self.down_until is not None and self.clock.now() < self.down_until:
            raise ApiDownError("connection refused")

    async def create_child(self, namespace: str, body: dict[str, Any]) -> bool:
        self.check_up()
        name = body["metadata"]["name"]
        if name in self.tasks:
            self.already_existed.append(name)
            return False
        self.running_at_create.append(
            sum(t["status"]["phase"] == "Running" for t in self.tasks.values())
        )
        self.tasks[name] = {**copy.deepcopy(body), "status": {"phase": "Queued"}}
        self.created.append(name)
        self.creates.set()
        if self.lagging:
            self.hidden.add(name)
        if self.work is not None:
            self.tasks[name]["status"] = {"phase": "Running"}
            self.ends[name] = (self.clock.now() + self.work, self.outcome)
        self.changed()
        return True

    async def cancel_child(self, namespace: str, name: str) -> None:
        self.check_up()
        if name in self.tasks:
            self.tasks[name]["spec"]["cancel"] = True
            self.cancelled.append(name)
            self.ends[name] = (self.clock.now(), "Cancelled")  # the Task controller's part

    async def delete_child(self, namespace: str, name: str) -> None:
        self.check_up()
        if self.tasks.pop(name, None) is not None:
            self.deleted.append(name)
            self.changed()

    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.check_up()
        if self.status_refused:
            raise ApiDownError("status write timed out")
        assert (namespace, name) == (NAMESPACE, NAME)
        for key, value in status.items():
            if value is None:
                self.status.pop(key, None)
            else:
                self.status[key] = copy.deepcopy(value)
        self.status_writes += 1

    # -- driving it -------------------------------------------------------------------------

    def changed(self) -> None:
        """A child changed: the child event handler pokes the runner (coalesced)."""
        if self.poke_at is None:
            self.poke_at = self.clock.now() + CHILD_COALESCE

    def finish_due(self) -> None:
        now = self.clock.now()
        for name, (when, phase) in list(self.ends.items()):
            if when <= now:
                del self.ends[name]
                if name in self.tasks:
                    self.tasks[name]["status"] = {
                        "phase": phase,
                        "finishedAt": rfc3339_millis(when),
                    }
                    self.changed()

    async def sync(self, runner: PeriodicRunner | None = None) -> float | None:
        """One sync, and its background writes; when the runner asks to be woken."""
        runner = runner or self.runner
        self.finish_due()
        try:
            wake = await runner.sync()
        except ApiDownError:
            wake = self.clock.now() + RETRY_SECONDS
        await runner.housekept()
        self.wake[runner] = wake
        return wake

    async def run_until(self, end: float) -> None:
        """Let time pass until ``end``, waking the runner as its loop would."""
        wake = await self.sync()
        while True:
            ending = min((when for when, _ in self.ends.values()), default=None)
            due = [t for t in (wake, ending, self.poke_at) if t is not None]
            if not due or min(due) > end:
                break
            self.clock.set(max(min(due), self.clock.now()))
            if ending is not None and ending <= self.clock.now():
                self.finish_due()
                continue
            if self.poke_at is not None and self.poke_at <= self.clock.now():
                self.poke_at = None
            wake = await self.sync()
        self.clock.set(end)
        self.finish_due()

    async def patch(self, **spec: Any) -> None:
        """``kubectl patch`` of the spec: the watch hands the runner the new body at once."""
        self.parent["spec"].update(spec)
        self.parent["metadata"]["generation"] += 1
        self.runner.update(self.stored())
        await self.sync()

    # -- what a user sees -------------------------------------------------------------------

    def slots(self, names: list[str] | None = None) -> list[int]:
        """Slots of the children that exist (or of ``names``), in order."""
        names = sorted(self.tasks) if names is None else names
        return sorted(int(name.rsplit("-", 1)[1]) for name in names)

    def phases(self) -> dict[int, str]:
        return {self.slots([n])[0]: t["status"]["phase"] for n, t in self.tasks.items()}

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]

    def condition(self) -> dict[str, Any]:
        [condition] = [c for c in self.status["conditions"] if c["type"] == "ScheduleValid"]
        return dict(condition)


def name(slot: float) -> str:
    return f"{NAME}-{int(slot)}"


def local(slots: list[int], zone: Any = NEW_YORK) -> list[str]:
    return [datetime.fromtimestamp(s, zone).strftime("%m-%d %H:%M %Z") for s in slots]


# -- on time, once per slot ---------------------------------------------------------------------


async def test_every_slot_gets_one_child_at_its_slot_with_the_template_and_owner() -> None:
    world = World("*/2 * * * * *", at=T0 + 0.5)
    await world.run_until(T0 + 8.5)
    assert world.slots() == [T0 + 2, T0 + 4, T0 + 6, T0 + 8]
    child = world.tasks[name(T0 + 2)]
    meta = child["metadata"]
    assert meta["labels"] == {"team": "a", PARENT_LABEL: NAME}
    assert meta["annotations"][SCHEDULED_ANNOTATION] == rfc3339(T0 + 2)
    assert parse_rfc3339(meta["annotations"][CREATED_ANNOTATION]) == T0 + 2  # on the slot
    assert meta["ownerReferences"] == [
        {"apiVersion": API_VERSION, "kind": "PeriodicTask", "name": NAME,
         "uid": UID, "controller": True}
    ]  # fmt: skip
    assert child["spec"] == ECHO
    # No workers: every run is still queued, so active lists them all.
    assert world.status == {
        "lastScheduleTime": rfc3339(T0 + 8),
        "nextScheduleTime": rfc3339(T0 + 10),
        "active": [name(T0 + s) for s in (2, 4, 6, 8)],
        "activeCount": 4,
        "missedSlots": 0,
        "conditions": [
            {"type": "ScheduleValid", "status": "True", "reason": "Valid", "message": "",
             "lastTransitionTime": rfc3339_millis(T0 + 0.5)}
        ],
        "observedGeneration": 1,
    }  # fmt: skip
    assert world.already_existed == [] and world.events == []


async def test_status_is_written_only_when_it_changes() -> None:
    world = World("* * * * *", at=T0 + 0.5)
    await world.run_until(T0 + 60.5)
    writes = world.status_writes
    for later in (61, 62.5, 90):
        world.clock.set(T0 + later)
        assert await world.sync() == T0 + 120
    assert world.status_writes == writes
    assert world.slots() == [T0 + 60]


async def test_start_syncs_at_once_an_update_wakes_it_and_forget_stops_it() -> None:
    world = World("* * * * *", at=T0 + 0.5)
    world.clock.set(T0 + 60.25)
    periodic = PeriodicRunners(world, world.clock)

    async def created(count: int) -> None:
        while len(world.created) < count:
            world.creates.clear()
            await world.creates.wait()

    periodic.observe(world.stored())
    await asyncio.wait_for(created(1), 1.0)
    assert world.slots() == [T0 + 60]
    # The loop now sleeps until T0 + 120; a change of the PeriodicTask wakes it sooner.
    world.clock.set(T0 + 120.25)
    periodic.observe(world.stored())
    await asyncio.wait_for(created(2), 1.0)
    assert world.slots() == [T0 + 60, T0 + 120]
    runner = periodic.runners[UID]
    await periodic.forget(UID)
    assert runner.task is not None and runner.task.done() and periodic.runners == {}


async def test_a_constructed_runner_does_nothing_until_started() -> None:
    world = World("* * * * *", at=T0 + 0.5)
    world.clock.set(T0 + 60.25)
    await asyncio.sleep(0)
    assert world.runner.task is None and world.created == []


# -- concurrency policies -----------------------------------------------------------------------


async def test_allow_runs_every_slot_while_earlier_runs_are_still_active() -> None:
    world = World("*/2 * * * * *", at=T0 + 0.5, work=5, concurrencyPolicy="Allow")
    await world.run_until(T0 + 8.5)
    assert world.slots() == [T0 + 2, T0 + 4, T0 + 6, T0 + 8]
    # Runs take 5 s: three overlap (slot 2's ended at 7).
    assert world.status["active"] == [name(T0 + 4), name(T0 + 6), name(T0 + 8)]


async def test_forbid_skips_slots_while_a_run_is_active() -> None:
    world = World(
        "*/2 * * * * *", at=T0 + 0.5, work=5, concurrencyPolicy="Forbid", startingDeadlineSeconds=0
    )
    await world.run_until(T0 + 30)
    # Each run takes 5 s: the two slots under it are held, and when it ends the latest held
    # one is past its starting deadline, so the next run is 6 s later.
    assert world.slots(world.created) == [T0 + 2, T0 + 8, T0 + 14, T0 + 20, T0 + 26]
    assert world.running_at_create == [0] * 5  # never two at once
    assert world.reasons() == ["MissSchedule"] * 4  # slots 6, 12, 18, 24: one warning each
    assert rfc3339(T0 + 6) in world.events[0][2]


async def test_forbid_runs_the_held_slot_when_the_run_ends_within_the_deadline() -> None:
    world = World(
        "* * * * *", at=T0 + 0.5, work=70, concurrencyPolicy="Forbid", startingDeadlineSeconds=20
    )
    await world.run_until(T0 + 200)
    # 60 runs until 130: 120 is held, and runs at 130.2, 10 s late, as CronJob would.
    assert world.slots() == [T0 + 60, T0 + 120]
    created = world.tasks[name(T0 + 120)]["metadata"]["annotations"][CREATED_ANNOTATION]
    assert parse_rfc3339(created) == pytest.approx(T0 + 130 + CHILD_COALESCE)


async def test_replace_cancels_the_active_run_and_starts_the_new_one() -> None:
    world = World(
        "*/3 * * * * *", at=T0 + 0.5, work=30, concurrencyPolicy="Replace",
        failedTasksHistoryLimit=10,
    )  # fmt: skip
    await world.run_until(T0 + 6.1)
    assert world.cancelled == [name(T0 + 3)]
    # Until the Task controller has cancelled it, the replaced run still counts as active.
    assert world.status["active"] == [name(T0 + 3), name(T0 + 6)]
    await world.run_until(T0 + 9.5)
    assert world.cancelled == [name(T0 + 3), name(T0 + 6)]
    assert world.phases() == {T0 + 3: "Cancelled", T0 + 6: "Cancelled", T0 + 9: "Running"}
    assert world.status["active"] == [name(T0 + 9)]


# -- suspend, missed slots, deadlines ---------------------------------------------------------


async def test_suspend_stops_runs_and_resuming_runs_one_catch_up_not_a_flood() -> None:
    world = World("* * * * * *", at=T0 + 0.5, suspend=True)
    await world.run_until(T0 + 4.5)
    assert world.tasks == {}
    assert "nextScheduleTime" not in world.status and world.condition()["status"] == "True"
    await world.patch(suspend=False)
    assert world.slots() == [T0 + 4]  # the latest slot only
    assert world.status["missedSlots"] == 3  # 1, 2 and 3 never run
    await world.run_until(T0 + 6.5)
    assert world.slots() == [T0 + 4, T0 + 5, T0 + 6]
    assert world.status["missedSlots"] == 3
    await world.patch(suspend=True)
    await world.run_until(T0 + 10.5)
    assert world.slots() == [T0 + 4, T0 + 5, T0 + 6]
    assert "nextScheduleTime" not in world.status


async def test_a_slot_past_its_starting_deadline_is_skipped_with_one_warning() -> None:
    world = World("* * * * *", at=T0 + 0.5, startingDeadlineSeconds=10)
    await world.sync()
    world.clock.set(T0 + 60 + 30)  # the runner was held up past the slot's deadline
    assert await world.sync() == T0 + 120
    await world.sync()  # no second warning for the same slot
    assert world.tasks == {}
    assert world.events == [
        ("Warning", "MissSchedule",
         f"missed the slot {rfc3339(T0 + 60)}: more than startingDeadlineSeconds (10) late")
    ]  # fmt: skip
    await world.run_until(T0 + 120.5)
    assert world.slots() == [T0 + 120]


async def test_more_than_a_hundred_missed_slots_run_once_with_a_warning() -> None:
    world = World("* * * * *", at=T0 + 0.5)
    await world.run_until(T0 + 60.5)
    world.clock.set(T0 + 60 + 3 * 3600 + 5)  # the operator was away for three hours
    world.runner = world.new_runner()
    await world.sync()
    assert world.slots() == [T0 + 60, T0 + 60 + 3 * 3600]
    assert world.status["missedSlots"] == 179
    [(kind, reason, message)] = world.events
    assert (kind, reason) == ("Warning", "TooManyMissedTimes")
    assert message.startswith(f"179 slots were missed before {rfc3339(T0 + 60 + 3 * 3600)}")


async def test_a_failed_create_is_retried_and_the_slot_still_runs() -> None:
    world = World("* * * * *", at=T0 + 0.5, startingDeadlineSeconds=10)
    world.down_until = T0 + 63
    await world.run_until(T0 + 70)
    assert world.slots() == [T0 + 60]
    created = world.tasks[name(T0 + 60)]["metadata"]["annotations"][CREATED_ANNOTATION]
    assert parse_rfc3339(created) == T0 + 64  # tried at 60, 62 and 64


# -- restarts and a second operator -----------------------------------------------------------


async def race(world: World, *runners: PeriodicRunner) -> None:
    """Each runner sees the PeriodicTask as stored and decides before any of them writes,
    as two operators woken by the same slot do; then they write in the order given."""
    snapshots = []
    for runner in runners:
        runner.update(world.stored())
        snapshots.append(runner.observe())
    for runner, snapshot in zip(runners, snapshots, strict=True):
        await runner.write(snapshot, plan_sync(snapshot))
        await runner.housekept()


async def test_a_restarted_runner_runs_no_slot_twice_and_catches_up_once() -> None:
    world = World("*/2 * * * * *", at=T0 + 0.5)
    await world.run_until(T0 + 4.5)
    # The operator dies before its last status write lands.
    world.status["lastScheduleTime"] = rfc3339(T0 + 2)
    world.runner = world.new_runner()
    world.clock.set(T0 + 4.7)
    await world.sync()
    assert world.slots() == [T0 + 2, T0 + 4]  # slot 4's child is there: it is not re-run
    assert world.status["lastScheduleTime"] == rfc3339(T0 + 4)
    # Down across slots 6 and 8, back at 9.5: one catch-up (8), 6 counted as missed.
    world.clock.set(T0 + 9.5)
    world.runner = world.new_runner()
    await world.run_until(T0 + 12.5)
    assert world.slots() == [T0 + 2, T0 + 4, T0 + 8, T0 + 10, T0 + 12]
    assert world.status["missedSlots"] == 1
    assert world.already_existed == []


async def test_the_slot_missed_while_no_operator_ran_runs_as_soon_as_one_starts() -> None:
    world = World("@every 2s", at=T0 + 0.5, work=0.5)
    await world.run_until(T0 + 3.0)
    # Killed at 3.0, started again at 4.2 (down 1.2 s): slot 4 passed with no operator.
    world.clock.set(T0 + 4.2)
    world.runner = world.new_runner()
    await world.sync()
    assert world.slots(world.created) == [T0 + 2, T0 + 4]
    created = world.tasks[name(T0 + 4)]["metadata"]["annotations"][CREATED_ANNOTATION]
    assert parse_rfc3339(created) == T0 + 4.2  # at its first sync, 0.2 s late
    await world.run_until(T0 + 8.5)
    assert world.slots(world.created) == [T0 + 2, T0 + 4, T0 + 6, T0 + 8]
    assert world.status["missedSlots"] == 0 and world.already_existed == []


@pytest.mark.parametrize(
    ("spec", "created", "cancelled", "events"),
    [
        pytest.param({"concurrencyPolicy": "Allow"}, [2, 4], [], [], id="Allow"),
        pytest.param({"concurrencyPolicy": "Replace"}, [2, 4], [2], [], id="Replace"),
        pytest.param({"concurrencyPolicy": "Forbid"}, [2], [], [], id="Forbid"),
        pytest.param({"suspend": True}, [2], [], [], id="suspended"),
        # 1.5 s late: within a deadline of 1 s (counted in whole seconds), not of 0.
        pytest.param({"startingDeadlineSeconds": 1}, [2, 4], [], [], id="deadline-1"),
        pytest.param({"startingDeadlineSeconds": 0}, [2], [], ["MissSchedule"], id="deadline-0"),
    ],
)
async def test_the_missed_slot_meets_its_policy_as_a_slot_synced_as_late_would(
    spec: dict[str, Any], created: list[int], cancelled: list[int], events: list[str]
) -> None:
    """No workers: slot 2's run is still active when slot 4 is due. The spec is changed
    while the operator is down; it starts again at 5.5, 1.5 s after slot 4."""
    outcomes = []
    for restarted in (True, False):
        world = World("@every 2s", at=T0 + 0.5)
        await world.run_until(T0 + 3.0)
        world.parent["spec"].update(spec)
        world.clock.set(T0 + 5.5)
        if restarted:
            world.runner = world.new_runner()
        else:  # the same runner, held up from 3.0 to 5.5
            world.runner.update(world.stored())
        await world.sync()
        outcomes.append((world.created, world.cancelled, world.reasons(), world.status))
        assert world.slots(world.created) == [T0 + s for s in created]
        assert world.slots(world.cancelled) == [T0 + s for s in cancelled]
        assert world.reasons() == events
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize(
    "lost",
    [
        pytest.param({"status": True}, id="status-write-lost"),
        pytest.param({"status": True, "index": True}, id="status-lost-and-child-not-yet-indexed"),
    ],
)
async def test_a_slot_the_killed_operator_ran_is_never_run_again_by_the_next_one(
    lost: dict[str, bool],
) -> None:
    world = World("@every 2s", at=T0 + 0.5)
    await world.run_until(T0 + 2.1)
    # Killed between the create of slot 2's child and the status write that records it.
    world.status = {}
    if lost.get("index"):
        world.hidden.add(name(T0 + 2))
    world.clock.set(T0 + 3.5)
    world.runner = world.new_runner()
    await world.sync()
    world.hidden.clear()
    await world.run_until(T0 + 4.5)
    assert world.slots(world.created) == [T0 + 2, T0 + 4]
    # Without the index, the create itself is the lock: the API server answers AlreadyExists.
    assert world.already_existed == ([name(T0 + 2)] if lost.get("index") else [])
    assert world.status["missedSlots"] == 0


async def test_a_run_is_deleted_for_history_only_once_the_status_records_its_slot() -> None:
    world = World("@every 2s", at=T0 + 0.5, work=0.5, successfulTasksHistoryLimit=0)
    world.status_refused = True  # status writes time out; creates and deletes go through
    await world.run_until(T0 + 3.0)
    # Slot 2 ran and succeeded, but no status says so yet: its child stays, as the only
    # record that slot 2 ran.
    assert world.phases() == {T0 + 2: "Succeeded"} and world.deleted == []
    # The operator is killed; the next one sees no lastScheduleTime and must not run 2 again.
    world.status_refused = False
    world.clock.set(T0 + 3.5)
    world.runner = world.new_runner()
    await world.run_until(T0 + 4.9)
    assert world.slots(world.created) == [T0 + 2, T0 + 4]
    assert world.slots(world.deleted) == [T0 + 2, T0 + 4]
    assert world.status["lastScheduleTime"] == rfc3339(T0 + 4)


async def test_two_runners_of_one_periodic_task_run_every_slot_exactly_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World("* * * * * *", at=T0 + 0.5)
    first, second = world.runner, world.new_runner()
    caplog.set_level(logging.INFO, "kubetasks.periodic")
    for second_of_run in range(1, 11):
        world.clock.set(T0 + second_of_run + 0.001)
        await race(world, *((first, second) if second_of_run % 2 else (second, first)))
    assert world.slots() == [T0 + s for s in range(1, 11)]
    assert sorted(world.already_existed) == sorted(world.created)  # each slot raced, once
    assert "already ran" in caplog.text
    assert world.status["missedSlots"] == 0
    assert world.status["lastScheduleTime"] == rfc3339(T0 + 10)


async def test_two_runners_catching_up_the_same_slot_count_its_missed_slots_once() -> None:
    world = World("* * * * * *", at=T0 + 0.5, suspend=True)
    first, second = world.runner, world.new_runner()
    world.clock.set(T0 + 4.5)
    world.parent["spec"]["suspend"] = False
    await race(world, first, second)
    assert world.slots() == [T0 + 4]
    assert world.already_existed == [name(T0 + 4)]
    # The loser of the race counts none of the catch-up's skipped slots (the winner counted
    # three). Its status write, decided before it saw the winner's, lands last; the next
    # syncs of both settle on the winner's count, not on the sum.
    for runner in (first, second):
        runner.update(world.stored())
        await world.sync(runner)
    assert world.status["missedSlots"] == 3
    assert world.slots() == [T0 + 4]


async def test_only_the_runner_whose_create_won_warns_about_too_many_missed_slots() -> None:
    world = World("* * * * *", at=T0 + 0.5)
    await world.run_until(T0 + 60.5)
    world.clock.set(T0 + 60 + 3 * 3600 + 5)  # both operators come back after three hours
    await race(world, world.new_runner(), world.new_runner())
    assert world.slots() == [T0 + 60, T0 + 60 + 3 * 3600]
    assert world.reasons() == ["TooManyMissedTimes"]


# -- children the index has not shown yet ---------------------------------------------------


async def test_a_child_the_index_has_not_shown_yet_is_active_for_a_grace_period() -> None:
    world = World("* * * * * *", at=T0 + 0.5, concurrencyPolicy="Forbid")
    world.lagging = True
    world.clock.set(T0 + 1.1)
    await world.sync()
    world.clock.set(T0 + 2.1)
    await world.sync()
    # The index does not list slot 1's child yet: it is not created again, it is active,
    # and Forbid holds slot 2 for it.
    assert world.created == [name(T0 + 1)] and world.already_existed == []
    assert world.status["active"] == [name(T0 + 1)]
    # A child the index never shows stops counting after the grace period.
    world.lagging = False
    world.clock.set(T0 + 1.1 + UNSEEN_GRACE + 0.5)
    await world.sync()
    assert world.created == [name(T0 + 1), name(T0 + 31)]


# -- history limits ---------------------------------------------------------------------------


async def test_history_limits_delete_the_oldest_finished_runs() -> None:
    ok = World("* * * * * *", at=T0 + 0.5, work=0.5, successfulTasksHistoryLimit=2)
    await ok.run_until(T0 + 7.9)
    assert ok.phases() == {T0 + 6: "Succeeded", T0 + 7: "Succeeded"}  # the two newest
    assert ok.slots(ok.deleted) == [T0 + s for s in range(1, 6)]
    assert ok.status["lastScheduleTime"] == rfc3339(T0 + 7)
    assert ok.status["lastSuccessfulTime"] == rfc3339_millis(T0 + 7.5)

    bad = World("* * * * * *", at=T0 + 0.5, work=0.5, failedTasksHistoryLimit=1)
    bad.outcome = "Failed"
    await bad.run_until(T0 + 7.9)
    assert bad.phases() == {T0 + 7: "Failed"}
    assert "lastSuccessfulTime" not in bad.status


async def test_running_children_are_never_deleted_for_history() -> None:
    world = World("* * * * * *", at=T0 + 0.5, successfulTasksHistoryLimit=0)
    await world.run_until(T0 + 5.5)
    assert world.deleted == [] and world.slots() == [T0 + s for s in range(1, 6)]


# -- time zones and daylight saving ------------------------------------------------------------


def new_york(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=NEW_YORK).timestamp()


async def test_spring_forward_skips_a_wall_time_that_does_not_happen() -> None:
    world = World("30 2 * * *", at=new_york("2026-03-07T00:00"), timeZone="America/New_York")
    await world.run_until(new_york("2026-03-10T00:00"))
    # 02:30 does not exist on 8 March (02:00 EST jumps to 03:00 EDT): no run, none missed.
    assert local(world.slots()) == ["03-07 02:30 EST", "03-09 02:30 EDT"]
    assert world.status["missedSlots"] == 0
    assert world.status["nextScheduleTime"] == rfc3339(new_york("2026-03-10T02:30"))


async def test_fall_back_runs_a_repeated_wall_time_once_per_pass() -> None:
    world = World("30 1 * * *", at=new_york("2026-10-31T00:00"), timeZone="America/New_York")
    await world.run_until(new_york("2026-11-03T00:00"))
    # 01:30 happens twice on 1 November (01:59 EDT falls back to 01:00 EST): two runs, an
    # hour apart, with different names.
    assert local(world.slots()) == [
        "10-31 01:30 EDT", "11-01 01:30 EDT", "11-01 01:30 EST", "11-02 01:30 EST"
    ]  # fmt: skip
    assert world.slots()[2] - world.slots()[1] == 3600


# -- invalid schedules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "reason", "message"),
    [
        ({"schedule": "0 0 30 2 *"}, "InvalidSchedule", "never fires"),
        ({"schedule": "0 0 * * 1#2"}, "InvalidSchedule", "not supported"),
        ({"schedule": "@daily", "timeZone": "Mars/Olympus_Mons"}, "InvalidTimeZone", "unknown"),
    ],
)
async def test_an_invalid_schedule_is_a_condition_until_it_is_fixed(
    spec: dict[str, Any], reason: str, message: str
) -> None:
    schedule = spec.pop("schedule")
    world = World(schedule, at=T0 + 0.5, **spec)
    await world.run_until(T0 + 100)
    condition = world.condition()
    assert (condition["status"], condition["reason"]) == ("False", reason)
    assert message in condition["message"]
    assert condition["lastTransitionTime"] == rfc3339_millis(T0 + 0.5)
    assert world.tasks == {} and "nextScheduleTime" not in world.status
    assert world.status["observedGeneration"] == 1
    await world.patch(schedule="@hourly", timeZone="UTC")
    condition = world.condition()
    assert (condition["status"], condition["reason"]) == ("True", "Valid")
    assert condition["lastTransitionTime"] == rfc3339_millis(T0 + 100)
    assert world.status["nextScheduleTime"] == rfc3339(T0 + 3600)
    assert world.status["observedGeneration"] == 2
    await world.run_until(T0 + 3600.5)
    assert world.slots() == [T0 + 3600]
    assert world.condition()["lastTransitionTime"] == rfc3339_millis(T0 + 100)  # held while True
