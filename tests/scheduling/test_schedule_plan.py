"""What runs now, decided as CronJob decides it: one run per slot, at most one catch-up,
startingDeadlineSeconds, concurrency policies, suspension. Time is injected."""

from __future__ import annotations

from datetime import datetime

from kubetasks.scheduling import TOO_MANY_MISSED, child_name, load_zone, parent_label, parse, plan
from kubetasks.timestamps import parse_rfc3339, rfc3339

UTC = load_zone("UTC")
MINUTELY = parse("* * * * *")
T0 = int(datetime.fromisoformat("2026-01-01T00:00:00+00:00").timestamp())


def test_nothing_is_due_before_the_first_slot() -> None:
    decision = plan(MINUTELY, UTC, last=None, created=T0 + 5, now=T0 + 30)
    assert (decision.run, decision.reason, decision.next_time) == (None, "NotDue", T0 + 60)


def test_the_due_slot_runs_a_few_milliseconds_late() -> None:
    decision = plan(MINUTELY, UTC, last=None, created=T0 + 5, now=T0 + 60.004)
    assert decision.run == T0 + 60
    assert decision.next_time == T0 + 120
    assert decision.missed == 0 and not decision.too_many_missed


def test_a_slot_that_ran_does_not_run_again() -> None:
    decision = plan(MINUTELY, UTC, last=T0 + 60, created=T0, now=T0 + 60.5)
    assert decision.run is None and decision.next_time == T0 + 120


def test_after_an_outage_only_the_latest_slot_runs() -> None:
    decision = plan(MINUTELY, UTC, last=T0, created=T0 - 600, now=T0 + 10 * 60 + 7)
    assert decision.run == T0 + 600
    assert decision.missed == 9  # 00:01 .. 00:09
    assert not decision.too_many_missed
    # The catch-up is recorded as last; re-deciding at once runs nothing more.
    again = plan(MINUTELY, UTC, last=decision.run, created=T0 - 600, now=T0 + 10 * 60 + 8)
    assert again.run is None and again.next_time == T0 + 660


def test_a_restart_within_one_period_runs_the_slot_it_missed_and_no_slot_twice() -> None:
    every_2s = parse("@every 2s")
    # The last run was slot 2; the operator was down from 3.0 to 4.2, across slot 4.
    back = plan(every_2s, UTC, last=T0 + 2, created=T0, now=T0 + 4.2)
    assert (back.run, back.missed, back.next_time) == (T0 + 4, 0, T0 + 6)
    # Back only after slot 6 as well: 6 runs, 4 is counted.
    later = plan(every_2s, UTC, last=T0 + 2, created=T0, now=T0 + 6.1)
    assert (later.run, later.missed) == (T0 + 6, 1)
    # Once the earlier operator's run of slot 4 is known, the next one never plans it.
    for now in (T0 + 4.2, T0 + 5.9):
        done = plan(every_2s, UTC, last=T0 + 4, created=T0, now=now)
        assert (done.run, done.reason, done.next_time) == (None, "NotDue", T0 + 6)


def test_more_than_a_hundred_missed_slots_are_flagged_but_still_one_run() -> None:
    decision = plan(MINUTELY, UTC, last=T0, created=T0, now=T0 + 3 * 3600 + 1)
    assert decision.run == T0 + 3 * 3600
    assert decision.missed == 3 * 60 - 1 > TOO_MANY_MISSED
    assert decision.too_many_missed


def test_starting_deadline_limits_how_late_a_slot_may_start() -> None:
    within = plan(MINUTELY, UTC, last=T0, created=T0, now=T0 + 60 + 9.9, starting_deadline=10)
    assert within.run == T0 + 60
    too_late = plan(MINUTELY, UTC, last=T0, created=T0, now=T0 + 60 + 11, starting_deadline=10)
    assert (too_late.run, too_late.reason, too_late.late_slot) == (None, "TooLate", T0 + 60)
    assert too_late.next_time == T0 + 120
    # Zero means "within the slot's own second".
    assert plan(MINUTELY, UTC, last=T0, created=T0, now=T0 + 60.9, starting_deadline=0).run
    assert plan(MINUTELY, UTC, last=T0, created=T0, now=T0 + 61.0, starting_deadline=0).run is None


def test_forbid_holds_the_slot_while_a_run_is_active() -> None:
    held = plan(MINUTELY, UTC, last=T0, created=T0, now=T0 + 60.01, policy="Forbid", active=["a"])
    assert (held.run, held.reason, held.next_time) == (None, "ConcurrencyForbid", T0 + 120)
    # When the active run ends the held slot still runs if within the deadline (as CronJob).
    ended = plan(MINUTELY, UTC, last=T0, created=T0, now=T0 + 75, policy="Forbid",
                 starting_deadline=20)  # fmt: skip
    assert ended.run == T0 + 60
    expired = plan(MINUTELY, UTC, last=T0, created=T0, now=T0 + 85, policy="Forbid",
                   starting_deadline=20)  # fmt: skip
    assert expired.run is None and expired.reason == "TooLate"


def test_replace_cancels_active_runs_and_allow_overlaps() -> None:
    replace = plan(MINUTELY, UTC, last=T0, created=T0, now=T0 + 60.01, policy="Replace",
                   active=["p-1", "p-2"])  # fmt: skip
    assert replace.run == T0 + 60 and replace.replace == ("p-1", "p-2")
    allow = plan(MINUTELY, UTC, last=T0, created=T0, now=T0 + 60.01, policy="Allow", active=["x"])
    assert allow.run == T0 + 60 and allow.replace == ()


def test_suspended_runs_nothing_and_resuming_does_not_flood() -> None:
    suspended = plan(MINUTELY, UTC, last=T0, created=T0, now=T0 + 3600, suspend=True)
    assert (suspended.run, suspended.reason, suspended.next_time) == (None, "Suspended", None)
    resumed = plan(MINUTELY, UTC, last=T0, created=T0, now=T0 + 3600 + 3)
    assert resumed.run == T0 + 3600 and resumed.missed == 59
    with_deadline = plan(MINUTELY, UTC, last=T0, created=T0, now=T0 + 3600 + 3,
                         starting_deadline=1)  # fmt: skip
    assert with_deadline.run is None


def test_another_operators_clock_ahead_never_plans_backwards() -> None:
    # lastScheduleTime was written by an operator whose clock is 0.5 s ahead of ours.
    decision = plan(MINUTELY, UTC, last=T0 + 60, created=T0, now=T0 + 59.6)
    assert decision.run is None and decision.next_time == T0 + 120


def test_child_names_are_deterministic_and_fit_a_label() -> None:
    assert child_name("backup", T0) == f"backup-{T0}"
    long = "nightly-report-for-the-finance-department-of-the-northern-region"
    name = child_name(long, T0)
    assert len(name) == 63 and name.endswith(f"-{T0}") and name == child_name(long, T0)
    assert child_name(long + "x", T0) != name
    assert parent_label("short") == "short"
    label = parent_label(long + "-and-more-words")
    assert len(label) == 63 and label[0].isalnum() and label[-1].isalnum()


def test_times_round_trip_as_kubernetes_writes_them() -> None:
    assert rfc3339(T0 + 0.9) == "2026-01-01T00:00:00Z"
    assert parse_rfc3339("2026-01-01T00:00:00Z") == T0
