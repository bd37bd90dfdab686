"""Slot arithmetic with injected time: seconds, macros, @every and daylight-saving days.

The DST cases are robfig/cron's own (the library Kubernetes CronJob uses), in
America/New_York, plus the same rules checked in Europe/Berlin: a wall time skipped by the
spring-forward gap does not run that day; a wall time in the autumn repeat runs in each pass.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from kubetasks.scheduling import (
    count_between,
    latest_at_or_before,
    load_zone,
    next_after,
    parse,
)

UTC = load_zone("UTC")
NEW_YORK = load_zone("America/New_York")
BERLIN = load_zone("Europe/Berlin")


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def slots(schedule: str, zone: ZoneInfo, start: str, count: int) -> list[str]:
    parsed = parse(schedule)
    found: list[str] = []
    t: float = at(start)
    for _ in range(count):
        following = next_after(parsed, zone, t)
        assert following is not None
        found.append(datetime.fromtimestamp(following, zone).isoformat())
        t = following
    return found


def test_six_field_schedule_runs_every_two_seconds() -> None:
    assert slots("*/2 * * * * *", UTC, "2026-01-01T00:00:00.700+00:00", 3) == [
        "2026-01-01T00:00:02+00:00",
        "2026-01-01T00:00:04+00:00",
        "2026-01-01T00:00:06+00:00",
    ]


def test_the_slot_at_now_is_not_next() -> None:
    assert next_after(parse("* * * * * *"), UTC, at("2026-01-01T00:00:05+00:00")) == at(
        "2026-01-01T00:00:06+00:00"
    )


def test_macros_in_a_time_zone() -> None:
    assert slots("@daily", BERLIN, "2026-07-01T12:00:00+02:00", 2) == [
        "2026-07-02T00:00:00+02:00",
        "2026-07-03T00:00:00+02:00",
    ]
    assert slots("@weekly", UTC, "2026-01-01T00:00:00+00:00", 1) == ["2026-01-04T00:00:00+00:00"]
    assert slots("@monthly", UTC, "2026-01-31T00:00:00+00:00", 1) == ["2026-02-01T00:00:00+00:00"]
    assert slots("@yearly", NEW_YORK, "2026-06-01T00:00:00-04:00", 1) == [
        "2027-01-01T00:00:00-05:00"
    ]


def test_day_of_month_or_day_of_week_when_both_are_given() -> None:
    # The 13th, or any Friday (Vixie cron and robfig/cron agree).
    found = slots("0 0 13 * FRI", UTC, "2026-02-01T00:00:00+00:00", 4)
    assert [s[:10] for s in found] == ["2026-02-06", "2026-02-13", "2026-02-20", "2026-02-27"]


def test_leap_day_is_found() -> None:
    assert slots("0 0 29 2 *", UTC, "2026-01-01T00:00:00+00:00", 1) == ["2028-02-29T00:00:00+00:00"]


def test_every_sits_on_the_epoch_grid_whatever_the_zone() -> None:
    every = parse("@every 1m30s")
    for zone in (UTC, NEW_YORK, BERLIN):
        following = next_after(every, zone, 1_000_000_000.5)
        assert following == 1_000_000_080  # the next multiple of 90 s
    # Across a DST change it stays 90 s of real time.
    start = at("2026-03-08T01:59:00-05:00")
    t1 = next_after(every, NEW_YORK, start)
    assert t1 is not None and next_after(every, NEW_YORK, t1) == t1 + 90


# -- daylight saving: America/New_York, 2012 (robfig/cron's test cases) ---------------------


@pytest.mark.parametrize(
    ("start", "schedule", "expected"),
    [
        # Spring forward, 2012-03-11 02:00 EST -> 03:00 EDT: 02:xx does not exist that day.
        ("2012-03-11T00:00:00-05:00", "0 30 2 11 Mar ?", "2013-03-11T02:30:00-04:00"),
        ("2012-03-11T00:00:00-05:00", "0 0 2 * * ?", "2012-03-12T02:00:00-04:00"),
        ("2012-03-11T00:00:00-05:00", "0 0 3 * * ?", "2012-03-11T03:00:00-04:00"),
        ("2012-03-11T01:00:00-05:00", "0 0 * * * ?", "2012-03-11T03:00:00-04:00"),
        ("2012-03-11T01:00:00-05:00", "0 0 1 * * ?", "2012-03-12T01:00:00-04:00"),
        # Fall back, 2012-11-04 02:00 EDT -> 01:00 EST: 01:xx happens twice.
        ("2012-11-04T00:00:00-04:00", "0 30 2 04 Nov ?", "2012-11-04T02:30:00-05:00"),
        ("2012-11-04T01:45:00-04:00", "0 30 1 04 Nov ?", "2012-11-04T01:30:00-05:00"),
        ("2012-11-04T01:00:00-04:00", "0 0 * * * ?", "2012-11-04T01:00:00-05:00"),
        ("2012-11-04T01:00:00-05:00", "0 0 * * * ?", "2012-11-04T02:00:00-05:00"),
        ("2012-11-04T00:00:00-04:00", "0 0 1 * * ?", "2012-11-04T01:00:00-04:00"),
        ("2012-11-04T01:00:00-04:00", "0 0 1 * * ?", "2012-11-04T01:00:00-05:00"),
        ("2012-11-04T01:00:00-05:00", "0 0 1 * * ?", "2012-11-05T01:00:00-05:00"),
        ("2012-11-04T00:00:00-04:00", "0 0 2 * * ?", "2012-11-04T02:00:00-05:00"),
        ("2012-11-04T02:00:00-05:00", "0 0 2 * * ?", "2012-11-05T02:00:00-05:00"),
    ],
)
def test_new_york_transitions_as_robfig_cron(start: str, schedule: str, expected: str) -> None:
    assert next_after(parse(schedule), NEW_YORK, at(start)) == at(expected)


def test_berlin_spring_gap_skips_the_day() -> None:
    # 2026-03-29: 02:00 CET -> 03:00 CEST. 02:30 does not exist that day.
    assert slots("30 2 * * *", BERLIN, "2026-03-28T12:00:00+01:00", 2) == [
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert slots("*/30 * * * *", BERLIN, "2026-03-29T01:00:00+01:00", 3) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]


def test_berlin_autumn_repeat_runs_in_each_pass() -> None:
    # 2026-10-25: 03:00 CEST -> 02:00 CET. 02:30 happens twice, an hour apart.
    assert slots("30 2 * * *", BERLIN, "2026-10-24T12:00:00+02:00", 3) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-26T02:30:00+01:00",
    ]
    found = slots("*/30 * * * *", BERLIN, "2026-10-25T01:45:00+02:00", 6)
    assert found == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]
    instants = [datetime.fromisoformat(s).timestamp() for s in found]
    assert all(b - a == 1800 for a, b in itertools.pairwise(instants))


def test_repeated_wall_times_are_distinct_slots() -> None:
    first, second = at("2026-10-25T02:30:00+02:00"), at("2026-10-25T02:30:00+01:00")
    assert second - first == 3600
    assert latest_at_or_before(parse("30 2 * * *"), BERLIN, first, second + 10) == second


def test_latest_slot_and_counting() -> None:
    every_two = parse("*/2 * * * * *")
    now = at("2026-01-01T00:01:00+00:00") + 0.5
    assert latest_at_or_before(every_two, UTC, 0, now) == at("2026-01-01T00:01:00+00:00")
    assert latest_at_or_before(every_two, UTC, now - 0.4, now) is None
    # Slots strictly between: 00:00:02 .. 00:00:58.
    start, end = at("2026-01-01T00:00:00+00:00"), at("2026-01-01T00:01:00+00:00")
    assert count_between(every_two, UTC, start, end) == 29
    assert count_between(parse("@every 2s"), UTC, start, end) == 29
    assert count_between(parse("@every 2s"), UTC, start + 0.5, end - 0.5) == 29
    # A daily schedule a year back: the doubling look-back finds yesterday's slot.
    daily = parse("15 4 * * *")
    assert latest_at_or_before(daily, BERLIN, 0, at("2026-05-05T12:00:00+02:00")) == at(
        "2026-05-05T04:15:00+02:00"
    )


def test_counting_a_long_outage_is_bounded_and_close() -> None:
    # A week of a per-second schedule is 604,799 slots; counting extrapolates past the cap.
    start = at("2026-01-01T00:00:00+00:00")
    counted = count_between(parse("* * * * * *"), UTC, start, start + 7 * 86_400)
    assert abs(counted - 604_799) <= 1
