"""Time as an injected dependency.

Leases, backoff, promotion of delayed tasks, cron slots and autoscaler cooldowns all depend
on "now". Components take a :class:`Clock` instead of calling :func:`time.time`, so tests can
drive them with :class:`FakeClock` rather than sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time in seconds since the epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, when: float) -> None:
        self._now = when


SYSTEM_CLOCK = SystemClock()


def to_ms(seconds: float) -> int:
    """Seconds (float) to integer milliseconds, the unit every Redis score uses."""
    return round(seconds * 1000)
