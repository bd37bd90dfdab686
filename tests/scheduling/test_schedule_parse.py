"""Parsing schedules: every accepted form, and a clear message for each kind of mistake."""

from __future__ import annotations

import pytest

from kubetasks.scheduling import (
    CronSchedule,
    EverySchedule,
    InvalidScheduleError,
    InvalidTimeZoneError,
    load_zone,
    parse,
)


def cron(text: str) -> CronSchedule:
    parsed = parse(text)
    assert isinstance(parsed, CronSchedule)
    return parsed


def test_five_fields_run_on_second_zero() -> None:
    schedule = cron("*/15 9-17 * * MON-FRI")
    assert schedule.seconds == (0,)
    assert schedule.minutes == (0, 15, 30, 45)
    assert schedule.hours == tuple(range(9, 18))
    assert schedule.weekdays == frozenset({1, 2, 3, 4, 5})
    assert schedule.days_star and not schedule.weekdays_star


def test_six_fields_have_seconds_first() -> None:
    schedule = cron("*/2 * * * * *")
    assert schedule.seconds == tuple(range(0, 60, 2))
    assert schedule.minutes == tuple(range(60))


@pytest.mark.parametrize(
    ("macro", "equivalent"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_macros_are_their_cron_expressions(macro: str, equivalent: str) -> None:
    got, want = cron(macro), cron(equivalent)
    assert (got.seconds, got.minutes, got.hours, got.days, got.months, got.weekdays) == (
        want.seconds,
        want.minutes,
        want.hours,
        want.days,
        want.months,
        want.weekdays,
    )


def test_names_steps_lists_and_sunday_as_seven() -> None:
    schedule = cron("5/20 0 1,15 jan-mar/2 sun,7,Sat")
    assert schedule.minutes == (5, 25, 45)
    assert schedule.days == (1, 15)
    assert schedule.months == (1, 3)
    assert schedule.weekdays == frozenset({0, 6})
    assert not schedule.days_star and not schedule.weekdays_star
    # "N/step" in day-of-week ends at Saturday, as in robfig/cron.
    assert cron("0 0 * * 1/2").weekdays == frozenset({1, 3, 5})


@pytest.mark.parametrize(
    ("text", "period"),
    [
        ("@every 30s", 30),
        ("@every 1m30s", 90),
        ("@every 2h", 7200),
        ("@every 1.5m", 90),
        ("@every 1500ms", None),
        ("@every 1h0m1s", 3601),
    ],
)
def test_every_takes_go_durations_in_whole_seconds(text: str, period: int | None) -> None:
    if period is None:
        with pytest.raises(InvalidScheduleError, match="whole number of seconds"):
            parse(text)
        return
    parsed = parse(text)
    assert parsed == EverySchedule(text, period)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty schedule"),
        ("* * * *", "has 4 fields; expected 5"),
        ("* * * * * * *", "has 7 fields"),
        ("61 * * * *", "minute field '61': 61 is outside 0-59"),
        ("* 24 * * *", "hour field '24': 24 is outside 0-23"),
        ("0 0 32 * *", "day-of-month field '32': 32 is outside 1-31"),
        ("0 0 * 13 *", "month field '13': 13 is outside 1-12"),
        ("0 0 * * 8", "day-of-week field '8': 8 is outside 0-7"),
        ("0 0 * FOO *", "'FOO' is not a number"),
        ("0 0 L * *", "L, W, # and H are not supported"),
        ("0 0 * * 1#2", "L, W, # and H are not supported"),
        ("*/0 * * * *", "step '0' is not a positive number"),
        ("5-1 * * * *", "range '5-1' runs backwards"),
        ("1,,2 * * * *", "empty list item"),
        ("? * * * *", "'?' is only allowed in the day fields"),
        ("0 0 30 2 *", "never fires: none of its months has day 30"),
        ("@fortnightly", "unknown macro '@fortnightly'"),
        ("@every", "@every needs a duration"),
        ("@every 10", "is not a duration like '30s'"),
        ("@every 1d", "is not a duration like '30s'"),
        ("@every 0s", "at least 1s"),
        ("TZ=Europe/Berlin 0 0 * * *", "use spec.timeZone"),
    ],
)
def test_invalid_schedules_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        parse(text)
    assert message in str(caught.value)


def test_a_restricted_weekday_rescues_an_impossible_day() -> None:
    # Day 30 never comes in February, but with a weekday given too, either one is enough.
    assert cron("0 0 30 2 MON").weekdays == frozenset({1})
    # February 29 exists in leap years.
    assert cron("0 0 29 2 *").days == (29,)


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "", "../etc/passwd", "Local"])
def test_unknown_time_zones_are_refused(name: str) -> None:
    with pytest.raises(InvalidTimeZoneError, match="unknown time zone"):
        load_zone(name)


def test_known_time_zones_load() -> None:
    assert str(load_zone("Europe/Berlin")) == "Europe/Berlin"
    assert str(load_zone("UTC")) == "UTC"
