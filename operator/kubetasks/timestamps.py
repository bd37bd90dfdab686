"""RFC 3339 times as the Kubernetes API writes and reads them, in UTC (pure).

Two precisions, each with its place: whole seconds where Kubernetes itself keeps whole
seconds (``metav1.Time``: creation times, a PeriodicTask's slots and schedule times), and
milliseconds in the status fields kubetasks writes (queuedAt, startedAt, finishedAt,
condition times), where one attempt often takes less than a second. Both parse back with
:func:`parse_rfc3339`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime


def rfc3339(epoch: float) -> str:
    """Whole-second RFC 3339 in UTC, rounded down (``2026-03-08T07:00:00Z``)."""
    return datetime.fromtimestamp(math.floor(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_millis(epoch: float) -> str:
    """RFC 3339 with milliseconds in UTC (``2026-03-08T07:00:00.250Z``)."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def parse_rfc3339(text: str) -> float:
    """Seconds since the Unix epoch of an RFC 3339 time (``Z`` or an offset, any precision)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
