"""Schedule arithmetic for PeriodicTasks (pure: no I/O, time is always passed in).

Why this module exists: the controller must agree with itself across restarts and with a
second operator running at the same time, so every answer here is a function of its
arguments only: the parsed schedule, the time zone, the last slot that ran and "now".

What croniter does and what stays here
    croniter expands the cron fields and walks the wall clock from one matching reading to
    the next. This module keeps only what CronJob does differently, each part with a test
    of croniter's own answer beside it (tests/scheduling/test_croniter_differences.py):
    robfig/cron's grammar and messages (croniter also takes L, W, #, H, wrapping ranges and
    a year field, and reads an equal range such as ``5-5`` as the whole cycle), turning
    wall readings into instants across daylight-saving changes, ``@every`` and what runs
    after missed slots.

Schedules
    A 5-field cron expression (``minute hour day-of-month month day-of-week``), a 6-field one
    with seconds first (``*/2 * * * * *`` is every two seconds), a macro (``@yearly``,
    ``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``) or
    ``@every <duration>`` in Go's duration syntax (``@every 30s``, ``@every 1m30s``). The cron
    grammar is the one Kubernetes CronJob accepts (robfig/cron): ``*``, ``?``, lists, ranges,
    steps, ``N/step`` (N to the end), month and weekday names; Sunday is 0 (7 is accepted
    too). When both day-of-month and day-of-week are restricted a day matching either runs;
    when either is ``*`` both must match.

``@every`` slots
    Slots are the multiples of the duration since the Unix epoch (00:00:00 UTC on 1 January
    1970), whatever the time zone and whenever the PeriodicTask was created. Any two
    operators therefore compute the same slots, and a restart never shifts them. The
    duration must be a whole number of seconds, at least one.

Time zones and daylight saving (as Kubernetes CronJob, whose robfig/cron library does this)
    A cron slot is every instant whose wall-clock reading in the time zone matches the
    expression. So when clocks spring forward, a wall time inside the skipped interval does
    not happen and does not run that day (``30 2 * * *`` in America/New_York has no run on
    the spring-forward Sunday); when clocks fall back, a wall time inside the repeated hour
    happens twice and runs twice, once per pass (``30 1 * * *`` runs at 01:30 EDT and again
    at 01:30 EST). Frequent schedules follow the clock: ``*/15 * * * *`` has no slots in the
    skipped hour and eight in the repeated one, all 15 minutes apart in real time except
    across the jump. Each slot is a distinct instant and so a distinct child Task name: a
    repeated wall time is never the "same slot twice". Choose UTC (the default) or avoid
    01:00-03:00 local to stay clear of both effects.

Missed slots (as CronJob)
    :func:`plan` runs at most one slot per decision: the most recent slot not yet run, if it
    is within ``startingDeadlineSeconds`` of now (no deadline: any age). Older missed slots
    are counted, never run, so an operator outage or a long suspension ends with one catch-up
    run, not a flood. More than :data:`TOO_MANY_MISSED` missed slots is flagged so the
    controller can warn (CronJob's "too many missed start times").
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from kubetasks.errors import ConfigurationError
from kubetasks.vocabulary import ConcurrencyPolicy

#: CronJob's threshold: more missed slots than this earns a warning.
TOO_MANY_MISSED = 100
#: A cron schedule with no slot in this many years never fires (robfig/cron uses five too).
SEARCH_YEARS = 5
#: Counting missed slots one by one stops here; beyond it the count is extrapolated.
COUNT_CAP = 10_000
#: Longest child Task name: a DNS label, so it also fits where only a label fits.
MAX_CHILD_NAME = 63
#: Longest label value Kubernetes accepts.
MAX_LABEL_VALUE = 63


class InvalidScheduleError(ConfigurationError):
    """The schedule cannot be parsed, or never fires; the message says why."""


class InvalidTimeZoneError(ConfigurationError):
    """The time zone is not a known IANA name."""


# -- parsed schedules -------------------------------------------------------------------------


@dataclass(frozen=True)
class CronSchedule:
    """A cron expression checked against robfig/cron's grammar, its fields expanded by
    croniter into the sorted values each allows."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    """Days of the month, 1-31."""
    months: tuple[int, ...]
    weekdays: frozenset[int]
    """Days of the week, Sunday = 0."""
    days_star: bool
    """Day-of-month was ``*``/``?``: then days and weekdays must both match (else either)."""
    weekdays_star: bool
    croniter_expression: str
    """The same schedule in the part of croniter's dialect that reads as robfig/cron does:
    six fields with seconds first, numbers only, no equal ranges, and ``*`` only where the
    field is unrestricted (croniter decides "either day field" on the ``*``)."""


@dataclass(frozen=True)
class EverySchedule:
    """``@every <duration>``: slots on the epoch-aligned grid of ``period`` seconds."""

    expression: str
    period: int


Schedule = CronSchedule | EverySchedule

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]
    question_mark: bool = False
    end: int | None = None
    """Where ``*`` and ``N/step`` stop, when not at ``high``."""


_SECOND = _Field("second", 0, 59, {})
_MINUTE = _Field("minute", 0, 59, {})
_HOUR = _Field("hour", 0, 23, {})
_DOM = _Field("day-of-month", 1, 31, {}, question_mark=True)
_MONTH = _Field("month", 1, 12, {n: i + 1 for i, n in enumerate(_MONTH_NAMES)})
# 7 is Sunday too (as in most crontabs; croniter folds it onto 0). "*" and "N/step" end at
# Saturday, as in robfig/cron.
_DOW = _Field(
    "day-of-week", 0, 7, {n: i for i, n in enumerate(_DAY_NAMES)}, question_mark=True, end=6
)
#: The fields as written (seconds first) and in the order croniter expands them.
_FIELDS = (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW)
_CRONITER_ORDER = (_MINUTE, _HOUR, _DOM, _MONTH, _DOW, _SECOND)

#: Days each month can have (February: 29, which leap years give).
_MONTH_DAYS = dict(enumerate([31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], start=1))


def parse(schedule: str) -> Schedule:
    """Parse a schedule, or raise :class:`InvalidScheduleError` with a message that names
    the field and the problem."""
    text = " ".join(schedule.split())
    if not text:
        raise InvalidScheduleError("empty schedule")
    if text.startswith(("TZ=", "CRON_TZ=")):
        raise InvalidScheduleError(
            f"schedule {schedule!r} sets a time zone inside the expression: use spec.timeZone"
        )
    if text.startswith("@every"):
        return EverySchedule(text, _parse_every(text))
    if text.startswith("@"):
        macro = MACROS.get(text.lower())
        if macro is None:
            known = ", ".join([*MACROS, "@every <duration>"])
            raise InvalidScheduleError(f"unknown macro {text!r}; known: {known}")
        return _parse_cron(text, macro.split())
    return _parse_cron(text, text.split())


def _parse_cron(expression: str, fields: list[str]) -> CronSchedule:
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise InvalidScheduleError(
            f"schedule {expression!r} has {len(fields)} fields; expected 5 "
            "(minute hour day-of-month month day-of-week) or 6 (second first)"
        )
    checked = [
        _check_field(text, field, expression) for text, field in zip(fields, _FIELDS, strict=True)
    ]
    translated = " ".join(terms for terms, _ in checked)
    try:
        expanded, _ = croniter.expand(translated, second_at_beginning=True)
    except CroniterError as exc:  # not expected: the check admits only what croniter reads
        raise InvalidScheduleError(f"schedule {expression!r}: {exc}") from exc
    minutes, hours, days, months, weekdays, seconds = (
        _values(values, field) for values, field in zip(expanded, _CRONITER_ORDER, strict=True)
    )
    days_star, weekdays_star = checked[3][1], checked[5][1]
    parsed = CronSchedule(
        expression=expression,
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=frozenset(weekdays),
        days_star=days_star,
        weekdays_star=weekdays_star,
        croniter_expression=translated,
    )
    # Only "restricted day-of-month, any weekday" can be impossible: a weekday restriction
    # alone is met every week, and with both restricted either one is enough. (croniter
    # would accept the schedule and search fifty years for a 30 February.)
    possible = any(day <= _MONTH_DAYS[month] for month in parsed.months for day in parsed.days)
    if weekdays_star and not days_star and not possible:
        raise InvalidScheduleError(
            f"schedule {expression!r} never fires: none of its months has day "
            f"{', '.join(map(str, parsed.days))}"
        )
    return parsed


def _check_field(text: str, field: _Field, expression: str) -> tuple[str, bool]:
    """Check one field against robfig/cron's grammar (croniter also takes ``L``, ``W``,
    ``#``, ``H``, wrapping ranges such as ``5-1`` and a year field, which CronJob refuses).

    Returns the field in croniter's words and whether it is unrestricted (``*`` or ``?``
    without a step: robfig/cron's star bit, which decides how the two day fields combine).
    """
    terms: list[str] = []
    star = False
    end = field.high if field.end is None else field.end
    for term in text.split(","):
        where = f"schedule {expression!r}, {field.name} field {text!r}"
        if not term:
            raise InvalidScheduleError(f"{where}: empty list item")
        span, slash, step_text = term.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise InvalidScheduleError(f"{where}: step {step_text!r} is not a positive number")
            step = int(step_text)
        if span in ("*", "?"):
            if span == "?" and not field.question_mark:
                raise InvalidScheduleError(f"{where}: '?' is only allowed in the day fields")
            star = star or step == 1
            low, high = field.low, end
        else:
            first, dash, last = span.partition("-")
            low = _value(first, field, where)
            # "N/step" runs from N to the field's end.
            high = _value(last, field, where) if dash else (end if slash else low)
            if low > high:
                raise InvalidScheduleError(f"{where}: range {span!r} runs backwards")
        # croniter reads an equal range ("5-5", "SUN-SUN") as the whole cycle, robfig/cron
        # as the one value: a single value goes over alone. A stepped "*" goes over as its
        # range, since croniter takes a "*" in either day field for "unrestricted".
        if low == high:
            terms.append(str(low))
        else:
            terms.append(f"{low}-{high}" if step == 1 else f"{low}-{high}/{step}")
    return ("*" if star else ",".join(terms)), star


def _value(text: str, field: _Field, where: str) -> int:
    named = field.names.get(text.upper())
    if named is not None:
        return named
    if not text.isdigit():
        hint = ""
        if text.upper() in ("L", "W") or "#" in text or text.upper().startswith("H"):
            hint = " (L, W, # and H are not supported)"
        raise InvalidScheduleError(f"{where}: {text!r} is not a number{hint}")
    value = int(text)
    if not field.low <= value <= field.high:
        raise InvalidScheduleError(f"{where}: {value} is outside {field.low}-{field.high}")
    return value


def _values(expanded: list[int | str], field: _Field) -> tuple[int, ...]:
    """croniter's expansion of one field as sorted numbers (``["*"]`` is every value)."""
    if expanded == ["*"]:
        return tuple(range(field.low, (field.high if field.end is None else field.end) + 1))
    return tuple(sorted({int(value) for value in expanded}))


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": Fraction(1, 10**9),
    "us": Fraction(1, 10**6),
    "µs": Fraction(1, 10**6),
    "μs": Fraction(1, 10**6),
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}


def _parse_every(text: str) -> int:
    """Go's ``time.ParseDuration`` syntax (``1h30m``, ``90s``, ``1.5h``), whole seconds only.

    croniter has no ``@every``: a cron step restarts at every hour or day, a duration does
    not, so these slots are counted on the epoch grid here."""
    duration = text.removeprefix("@every").strip()
    if not duration:
        raise InvalidScheduleError("@every needs a duration, for example '@every 30s'")
    total = Fraction(0)
    position = 0
    while position < len(duration):
        match = _DURATION_PART.match(duration, position)
        if match is None:
            raise InvalidScheduleError(
                f"@every duration {duration!r} is not a duration like '30s', '1m30s' or '2h' "
                "(units h, m, s, ms)"
            )
        total += Fraction(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if total < 1 or total.denominator != 1:
        raise InvalidScheduleError(
            f"@every duration {duration!r} is {float(total):g}s; it must be a whole number of "
            "seconds, at least 1s (child Task names carry the slot's second)"
        )
    return int(total)


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or :class:`InvalidTimeZoneError`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        detail = exc.args[0] if exc.args else type(exc).__name__
        raise InvalidTimeZoneError(
            f"unknown time zone {name!r}: not an IANA name like 'Europe/Berlin' ({detail})"
        ) from exc


# -- slot arithmetic --------------------------------------------------------------------------

_DAY = 86_400


def next_after(schedule: Schedule, tz: ZoneInfo, t: float) -> int | None:
    """The first slot strictly after ``t`` (Unix seconds), or None if there is none within
    :data:`SEARCH_YEARS` years."""
    if isinstance(schedule, EverySchedule):
        return (math.floor(t) // schedule.period + 1) * schedule.period
    return next(_cron_slots(schedule, tz, t), None)


def latest_at_or_before(schedule: Schedule, tz: ZoneInfo, after: float, t: float) -> int | None:
    """The last slot in ``(after, t]``, or None."""
    if isinstance(schedule, EverySchedule):
        slot = math.floor(t) // schedule.period * schedule.period
        return slot if slot > after else None
    # Look back over a doubling window: the first window with a slot in it holds the latest
    # one, and only a few slots (those in its older half) need walking through. croniter's
    # step back on the wall clock sizes the first window; only a hint, as a change of UTC
    # offset can move the slot out of it, and then the window widens.
    span = max(1.0, t - _wall_hint(schedule, tz, t) + 1)
    while True:
        start = max(after, t - span)
        latest = None
        for slot in _cron_slots(schedule, tz, start):
            if slot > t:
                break
            latest = slot
        if latest is not None:
            return latest
        if start <= after:
            return None
        span *= 2


def count_between(schedule: Schedule, tz: ZoneInfo, after: float, before: float) -> int:
    """How many slots lie strictly between ``after`` and ``before``: exact up to
    :data:`COUNT_CAP`, extrapolated from the average interval beyond it."""
    if before <= after:
        return 0
    if isinstance(schedule, EverySchedule):
        low = math.floor(after / schedule.period) + 1
        high = math.ceil(before / schedule.period) - 1
        return max(0, high - low + 1)
    count = 0
    first = 0
    for slot in _cron_slots(schedule, tz, after):
        if slot >= before:
            break
        count += 1
        if count == 1:
            first = slot
        elif count == COUNT_CAP:
            average = (slot - first) / (count - 1)
            return count + int((before - slot) / average) if average > 0 else count
    return count


def _wall_hint(schedule: CronSchedule, tz: ZoneInfo, t: float) -> int:
    """The instant of the latest matching wall reading at or before ``t``'s, if the UTC
    offset at ``t`` had always held (``t`` if croniter finds none)."""
    now = math.floor(t)
    offset = _offset(tz, now)
    walls = copy.copy(_walker(schedule.croniter_expression))
    walls.set_current(now + offset + 1)  # croniter steps back to strictly before this
    try:
        return int(walls.get_prev(float)) - offset
    except CroniterBadDateError:
        return now


def _cron_slots(schedule: CronSchedule, tz: ZoneInfo, t: float) -> Iterator[int]:
    """The slots strictly after ``t``, in order.

    croniter walks the wall clock as if it never jumped (it is given no time zone); each
    reading becomes the instant that shows it under the UTC offset in force. When the
    offset changes before that instant, the walk starts again from the change with the new
    offset: so a reading inside a spring-forward gap never happens, and after a fall-back
    the repeated readings come round again (robfig/cron's rules, in the module docstring).
    croniter's own time-zone handling moves a skipped reading to the end of the gap instead,
    and misses the repeat when the clock goes back by half an hour (Australia/Lord_Howe).
    """
    current = math.floor(t) + 1
    limit = current + (SEARCH_YEARS + 1) * 366 * _DAY
    while current <= limit:
        offset = _offset(tz, current)
        steady = current  # the offset is `offset` from `current` through `steady`
        change: int | None = None  # the first instant after that with another offset
        walls = copy.copy(_walker(schedule.croniter_expression))
        walls.set_current(current + offset - 1)  # croniter starts strictly after this reading
        for wall in walls.all_next(float):
            slot = int(wall) - offset
            if change is None and slot > steady:
                horizon = max(slot, steady + _DAY)
                change = _offset_change(tz, steady, horizon, offset)
                steady = horizon
            if change is not None and slot >= change:
                current = change
                break
            yield slot
        else:
            return  # croniter found nothing within SEARCH_YEARS


@functools.lru_cache(maxsize=1024)
def _walker(expression: str) -> Any:
    """croniter over ``expression`` (six fields, seconds first), to be copied and started:
    reading the expression costs several times what a step costs, and callers step a few
    slots at a time. A copy shares only what croniter never changes after reading."""
    return croniter(expression, 0, second_at_beginning=True, max_years_between_matches=SEARCH_YEARS)


def _offset(tz: ZoneInfo, t: int) -> int:
    offset = datetime.fromtimestamp(t, tz).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _offset_change(tz: ZoneInfo, low: int, high: int, offset: int) -> int | None:
    """The first instant in ``(low, high]`` whose UTC offset is not ``offset``, or None.

    Probes a day apart, then bisects: zones change offset at most a few times a year, so a
    change and a change back within one day are not looked for.
    """
    if high <= low:
        return None
    previous = low
    probe = min(high, low + _DAY)
    while _offset(tz, probe) == offset:
        if probe == high:
            return None
        previous, probe = probe, min(high, probe + _DAY)
    # offset(previous) == offset != offset(probe): bisect to the first changed second.
    while probe - previous > 1:
        middle = (previous + probe) // 2
        if _offset(tz, middle) == offset:
            previous = middle
        else:
            probe = middle
    return probe


# -- what to do now ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a PeriodicTask should do at one moment; the controller carries it out."""

    run: int | None
    """The slot to create a child Task for now, or None."""
    replace: tuple[str, ...] = ()
    """Active children to cancel first (concurrencyPolicy Replace)."""
    next_time: int | None = None
    """The next slot after now (None while suspended or if the schedule never fires again)."""
    reason: str = ""
    """Why nothing runs: NotDue, Suspended, TooLate, ConcurrencyForbid."""
    missed: int = 0
    """Slots between the last run and :attr:`run` that will never run."""
    too_many_missed: bool = False
    """More than :data:`TOO_MANY_MISSED` slots passed since the last run."""
    late_slot: int | None = None
    """The most recent slot that was past its starting deadline (reason TooLate)."""


def plan(
    schedule: Schedule,
    tz: ZoneInfo,
    *,
    last: float | None,
    created: float,
    now: float,
    starting_deadline: int | None = None,
    policy: ConcurrencyPolicy = "Allow",
    active: Sequence[str] = (),
    suspend: bool = False,
) -> Plan:
    """Decide, as CronJob does, whether a slot runs now.

    ``last`` is the slot of the latest child created (``status.lastScheduleTime``), else the
    PeriodicTask's creation time counts. The candidate is the most recent slot after it; it
    runs if it is no older than ``starting_deadline`` seconds (counted in whole seconds from
    the slot, so 0 means "within the slot's own second"). Older slots never run. Forbid
    holds the candidate back while a child is active (and it may still run when that child
    ends, if it is then within the deadline, as in CronJob); Replace cancels the active
    children and runs it; Allow runs it regardless.
    """
    earliest = created if last is None else last
    if suspend:
        return Plan(run=None, reason="Suspended")
    # Another operator's clock may be a little ahead: never plan a slot before the last one.
    following = next_after(schedule, tz, max(now, earliest))
    candidate = latest_at_or_before(schedule, tz, earliest, now)
    if candidate is None:
        return Plan(run=None, next_time=following, reason="NotDue")
    if starting_deadline is not None and candidate < math.floor(now) - starting_deadline:
        return Plan(run=None, next_time=following, reason="TooLate", late_slot=candidate)
    if active and policy == "Forbid":
        return Plan(run=None, next_time=following, reason="ConcurrencyForbid")
    missed = count_between(schedule, tz, earliest, candidate)
    return Plan(
        run=candidate,
        replace=tuple(active) if policy == "Replace" else (),
        next_time=following,
        missed=missed,
        too_many_missed=missed > TOO_MANY_MISSED,
    )


# -- names and times --------------------------------------------------------------------------


def child_name(parent: str, slot: int) -> str:
    """``<parent>-<slot in Unix seconds>``, at most :data:`MAX_CHILD_NAME` characters: a long
    parent name is cut and given a hash of the whole name, so names stay unique and the same
    slot always gets the same name (the API server's AlreadyExists is the lock)."""
    suffix = f"-{slot}"
    return _fit(parent, MAX_CHILD_NAME - len(suffix)) + suffix


def parent_label(parent: str) -> str:
    """The ``kubetasks.dev/periodic-task`` label value: the parent's name, shortened with a
    hash when it is longer than a label value may be."""
    return _fit(parent, MAX_LABEL_VALUE)


def _fit(name: str, room: int) -> str:
    if len(name) <= room:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: room - len(digest) - 1].rstrip('-.')}-{digest}"
