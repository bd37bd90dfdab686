"""Where kubetasks' schedule arithmetic departs from croniter's own answer, and why.

croniter reads and walks the cron expressions; kubetasks keeps on top of it only what
Kubernetes CronJob (robfig/cron) does differently. Each test asserts both answers, so a
croniter release that changes one of them fails here and the kept part can be looked at
again.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from croniter import CroniterBadCronError, croniter, croniter_range

from kubetasks.scheduling import (
    CronSchedule,
    InvalidScheduleError,
    load_zone,
    next_after,
    parse,
    plan,
)

UTC = load_zone("UTC")
BERLIN = load_zone("Europe/Berlin")
NEW_YORK = load_zone("America/New_York")
# Clocks go back by half an hour here: 02:00 +11:00 -> 01:30 +10:30 on 2026-04-05.
LORD_HOWE = load_zone("Australia/Lord_Howe")


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def ours(schedule: str, zone: ZoneInfo, start: str, count: int) -> list[str]:
    parsed = parse(schedule)
    found: list[str] = []
    t: float = at(start)
    for _ in range(count):
        following = next_after(parsed, zone, t)
        assert following is not None
        found.append(datetime.fromtimestamp(following, zone).isoformat())
        t = following
    return found


def theirs(schedule: str, zone: ZoneInfo, start: str, count: int) -> list[str]:
    """croniter's answer with its own time-zone handling (an aware start time)."""
    walk = croniter(schedule, datetime.fromisoformat(start).astimezone(zone))
    return [walk.get_next(datetime).isoformat() for _ in range(count)]


def test_a_wall_time_in_the_spring_gap_is_skipped_not_moved() -> None:
    # 2026-03-29 in Berlin: 02:00 CET -> 03:00 CEST, so 02:30 does not happen that day.
    # croniter runs the schedule at the end of the gap; CronJob skips the day.
    start = "2026-03-28T12:00:00+01:00"
    assert theirs("30 2 * * *", BERLIN, start, 2) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    assert ours("30 2 * * *", BERLIN, start, 2) == [
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    # robfig/cron's own case: "0 0 2 * * ?" on 2012-03-11 in New York.
    assert theirs("0 2 * * *", NEW_YORK, "2012-03-11T00:00:00-05:00", 1) == [
        "2012-03-11T03:00:00-04:00"
    ]
    assert ours("0 0 2 * * ?", NEW_YORK, "2012-03-11T00:00:00-05:00", 1) == [
        "2012-03-12T02:00:00-04:00"
    ]


def test_a_half_hour_repeat_runs_in_both_passes() -> None:
    # After 01:56 +11:00 the clock reads 01:30-01:59 again. croniter jumps to 02:00 and
    # misses the second pass; CronJob follows the wall clock through it.
    start = "2026-04-05T01:50:00+11:00"
    assert theirs("*/7 1-2 * * *", LORD_HOWE, start, 3) == [
        "2026-04-05T01:56:00+11:00",
        "2026-04-05T02:00:00+10:30",
        "2026-04-05T02:07:00+10:30",
    ]
    assert ours("*/7 1-2 * * *", LORD_HOWE, start, 3) == [
        "2026-04-05T01:56:00+11:00",
        "2026-04-05T01:35:00+10:30",
        "2026-04-05T01:42:00+10:30",
    ]


def test_a_whole_hour_repeat_is_where_croniter_already_agrees() -> None:
    # Both run 02:30 in each pass of Berlin's autumn repeat; kubetasks still maps wall
    # times itself (croniter walks with no time zone), so this agreement is not relied on.
    start = "2026-10-24T12:00:00+02:00"
    expected = [
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-26T02:30:00+01:00",
    ]
    assert theirs("30 2 * * *", BERLIN, start, 3) == expected
    assert ours("30 2 * * *", BERLIN, start, 3) == expected


def test_every_is_a_grid_from_the_epoch_not_a_cron_step() -> None:
    with pytest.raises(CroniterBadCronError):
        croniter("@every 7m")
    # The nearest cron, "*/7", restarts at every hour: 00:56, then 01:00 four minutes on.
    assert theirs("*/7 * * * *", UTC, "2026-01-01T00:55:00+00:00", 2) == [
        "2026-01-01T00:56:00+00:00",
        "2026-01-01T01:00:00+00:00",
    ]
    # @every 7m stays seven minutes apart, on multiples of 420 s since 1970.
    found = ours("@every 7m", UTC, "2026-01-01T00:55:00+00:00", 2)
    assert found == ["2026-01-01T00:56:00+00:00", "2026-01-01T01:03:00+00:00"]
    assert at(found[1]) % 420 == 0


def test_after_an_outage_one_catch_up_runs_not_every_missed_slot() -> None:
    # Ten minutes of a minutely schedule went by. croniter lists all ten slots; CronJob
    # runs only the latest and counts the nine before it as missed.
    last = at("2026-01-01T00:00:00+00:00")
    now = last + 10 * 60 + 7
    missed = list(
        croniter_range(
            datetime.fromtimestamp(last + 1, UTC), datetime.fromtimestamp(now, UTC), "* * * * *"
        )
    )
    assert len(missed) == 10
    decision = plan(parse("* * * * *"), UTC, last=last, created=last, now=now)
    assert (decision.run, decision.missed) == (last + 600, 9)


def test_six_fields_have_seconds_first_as_in_robfig_cron() -> None:
    # croniter reads a sixth field as seconds, last, unless told otherwise: every second of
    # 00:30. robfig/cron (and kubetasks): second 30 of minute 0, every hour.
    minutes, hours, *_, seconds = croniter.expand("30 0 * * * *")[0]
    assert (minutes, hours, seconds) == ([30], [0], ["*"])
    schedule = parse("30 0 * * * *")
    assert isinstance(schedule, CronSchedule)
    assert (schedule.seconds, schedule.minutes, schedule.hours) == ((30,), (0,), tuple(range(24)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 0 L * *", "L, W, # and H are not supported"),
        ("0 0 15W * *", "'15W' is not a number"),
        ("0 0 * * 1#2", "L, W, # and H are not supported"),
        ("5-1 * * * *", "range '5-1' runs backwards"),
        ("0 0 * * SAT-SUN", "range 'SAT-SUN' runs backwards"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_croniter_accepts_what_cronjob_refuses(text: str, message: str) -> None:
    # croniter's last-day, nearest-weekday, nth-weekday and wrapping ranges; and it would
    # search fifty years for a 30 February.
    assert croniter.is_valid(text)
    with pytest.raises(InvalidScheduleError) as caught:
        parse(text)
    assert message in str(caught.value)


def test_croniter_refuses_a_year_field_too() -> None:
    assert croniter.is_valid("0 0 0 1 1 * 2030", second_at_beginning=True)
    with pytest.raises(InvalidScheduleError, match="has 7 fields"):
        parse("0 0 0 1 1 * 2030")


def test_an_equal_range_is_one_value() -> None:
    # croniter reads "5-5" as the whole cycle (and "SUN-SUN", and "7-7" for Sunday).
    assert croniter.expand("5-5 * * * *")[0][0] == ["*"]
    assert croniter.expand("0 0 * * 7-7")[0][4] == ["*"]
    minutely = parse("5-5 * * * *")
    sundays = parse("0 0 * * 7-7")
    assert isinstance(minutely, CronSchedule) and isinstance(sundays, CronSchedule)
    assert minutely.minutes == (5,)
    assert sundays.weekdays == frozenset({0})


def test_a_stepped_star_in_a_day_field_still_restricts_it() -> None:
    # "Every other day of the month, or any weekday": robfig/cron runs every day. croniter
    # sees the "*" in "*/2", takes the full weekday range for "any" and runs odd days only.
    start = "2026-01-01T12:00:00+00:00"
    assert [s[:10] for s in theirs("0 0 */2 * 0-6", UTC, start, 2)] == [
        "2026-01-03",
        "2026-01-05",
    ]
    assert [s[:10] for s in ours("0 0 */2 * 0-6", UTC, start, 2)] == ["2026-01-02", "2026-01-03"]
