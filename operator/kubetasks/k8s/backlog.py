"""The status writes a worker still owes the API server, and when to try them (pure).

A worker reports each attempt's start and end on its Task. When the API server cannot be
reached those writes wait here instead of being lost, so an outage delays statuses by the
outage, not by the operator's repair sweep. Three rules keep the wait cheap and the result
right:

* **The newest write per Task wins.** A Task needs only its latest state: a later attempt
  replaces an earlier one, and the end of an attempt replaces its start (the end carries the
  start's time and worker). At most one write per Task is on the wire, so they land in order.
* **Bounded.** Beyond :data:`MAX_PENDING_TASKS` Tasks the oldest pending write is dropped;
  the operator's repair sweep (outcomes copied from Redis) is the backstop for those.
* **One probe while failing.** After a failure only one write at a time goes out, each after
  a backoff capped at :data:`RETRY_CAP` seconds; the first answer to a probe (any answer: a
  Task gone is an answer too) ends the outage and everything pending goes out.

Time is passed in (monotonic seconds), so the rules are tested as timelines; the sink in
:mod:`kubetasks.k8s.sink` does the I/O.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

#: Most Tasks with a status write pending; beyond it the oldest is dropped. A write holds a
#: patch with the result (at most 64 KiB, usually far less).
MAX_PENDING_TASKS = 1000
#: Seconds before the first retry after a failure; doubled per failed probe up to the cap.
RETRY_FIRST = 0.1
#: Longest wait between two probes while writes fail: statuses trail the API server's
#: return by at most this (plus one round trip).
RETRY_CAP = 1.0
#: Seconds between two warnings about writes dropped for want of room.
DROP_WARNING_INTERVAL = 60.0

Result = Literal["landed", "dropped", "failed"]
"""What became of a write: it landed; it was dropped (the Task is gone or re-created, the
status moved on, or the server refused it for good); or it failed and may succeed later."""


@dataclass(frozen=True, slots=True)
class Write:
    """One status write a worker owes a Task: the start (Running) or the end of an attempt."""

    namespace: str
    name: str
    uid: str
    """The Task's uid: the write lands only on that Task, never on a re-created namesake."""
    attempt: int
    final: bool
    """The end of the attempt (Succeeded, Retrying, Failed, ...); False: its start."""
    patch: dict[str, Any]
    fresh: bool = False
    """The Task most likely has no status yet (see :meth:`TaskStatusWriter.write`)."""
    due: float = 0.0
    """Monotonic seconds before which it is not sent (Running waits ``running_delay``)."""


def supersedes(new: Write, old: Write) -> bool:
    """Whether ``new`` makes ``old``, a write for the same Task, pointless: it is for a later
    attempt, or it ends the attempt ``old`` starts, or it is a later write of the same kind."""
    return (new.attempt, new.final) >= (old.attempt, old.final)


def retry_delay(failures: int) -> float:
    """Seconds from the ``failures``-th failed try in a row to the next try."""
    return min(RETRY_CAP, RETRY_FIRST * 2.0 ** max(0, failures - 1))


class Backlog:
    """The newest unsent write per Task, in the order they go out, and those on the wire.

    A write taken by :meth:`take` is on the wire until :meth:`done`; a failed one goes back
    at the end of the line (so one Task whose writes keep failing cannot hold up a probe of
    the others), unless a newer write for its Task came meanwhile. Age, for dropping, is the
    time a Task first had a write pending, kept across retries.
    """

    def __init__(self, limit: int = MAX_PENDING_TASKS) -> None:
        self.limit = limit
        self._pending: OrderedDict[str, tuple[int, Write]] = OrderedDict()
        self._sending: dict[str, tuple[int, Write]] = {}
        self._seq = 0

    def __len__(self) -> int:
        """Writes outstanding: pending and on the wire."""
        return len(self._pending) + len(self._sending)

    @property
    def sending(self) -> int:
        return len(self._sending)

    def add(self, write: Write) -> list[Write]:
        """Hold ``write`` unless a newer one for its Task is held; the writes dropped to make
        room (oldest first)."""
        pending = self._pending.get(write.uid)
        current = pending or self._sending.get(write.uid)
        if current is not None and not supersedes(write, current[1]):
            return []
        if pending is not None:
            self._pending[write.uid] = (pending[0], write)  # keeps its place and age
            return []
        self._seq += 1
        self._pending[write.uid] = (current[0] if current else self._seq, write)
        return self._trim()

    def take(self, due_by: float, most: int) -> list[Write]:
        """Up to ``most`` writes due by ``due_by``, in line order, now on the wire."""
        taken: list[tuple[int, Write]] = []
        for uid, (seq, write) in self._pending.items():
            if len(taken) >= most:
                break
            if write.due <= due_by and uid not in self._sending:
                taken.append((seq, write))
        for seq, write in taken:
            del self._pending[write.uid]
            self._sending[write.uid] = (seq, write)
        return [write for _, write in taken]

    def done(self, write: Write, result: Result) -> list[Write]:
        """``write`` came back with ``result``; the writes dropped to make room."""
        seq, _ = self._sending.pop(write.uid)
        newer = self._pending.get(write.uid)
        if newer is None:
            if result == "failed":
                self._pending[write.uid] = (seq, write)
                return self._trim()
        elif result == "landed" and newer[1].fresh:
            self._pending[write.uid] = (newer[0], dataclasses.replace(newer[1], fresh=False))
        return []

    def next_due(self) -> float | None:
        """When the earliest pending write that could be taken falls due."""
        dues = [w.due for uid, (_, w) in self._pending.items() if uid not in self._sending]
        return min(dues, default=None)

    def _trim(self) -> list[Write]:
        dropped: list[Write] = []
        while len(self._pending) > self.limit:
            uid = min(self._pending, key=lambda u: self._pending[u][0])
            dropped.append(self._pending.pop(uid)[1])
        return dropped


@dataclass(frozen=True, slots=True)
class Recovery:
    """An outage that ended: how long writes failed, and what it cost."""

    seconds: float
    waited: int
    """Writes that were outstanding when it began or were made during it."""
    dropped: int
    """Writes dropped for want of room during it (the operator's repair sets those)."""


@dataclass
class Outage:
    """Whether writes are failing, since when, when to probe next, and what waited."""

    since: float | None = None
    failures: int = 0
    """Failed probes in a row (the write that began the outage counts as the first)."""
    next_try: float = 0.0
    probe: Write | None = None
    """The one write on the wire as a probe, if any."""
    waited: int = 0
    dropped: int = 0

    def allowance(self, now: float, room: int) -> int:
        """How many writes may go out now, with ``room`` free places on the wire."""
        if self.since is None:
            return room
        return 1 if self.probe is None and now >= self.next_try and room > 0 else 0

    def sent(self, write: Write) -> None:
        if self.since is not None:
            self.probe = write

    def submitted(self, count: int = 1) -> None:
        if self.since is not None:
            self.waited += count

    def lost(self, count: int) -> None:
        if self.since is not None:
            self.dropped += count

    def wake_at(self, next_due: float | None) -> float | None:
        """When something may go out next (None: only when told of a new write or answer)."""
        if self.since is None or next_due is None:
            return next_due
        return None if self.probe is not None else max(next_due, self.next_try)

    def failed(self, now: float, write: Write, outstanding: int) -> bool:
        """``write`` failed with ``outstanding`` writes held; True when this begins an outage."""
        if self.since is None:
            self.since, self.failures, self.waited, self.dropped = now, 1, outstanding, 0
            self.next_try = now + retry_delay(1)
            return True
        if write is self.probe:  # a write sent before the outage began does not count
            self.probe = None
            self.failures += 1
            self.next_try = now + retry_delay(self.failures)
        return False

    def answered(self, now: float, write: Write) -> Recovery | None:
        """The API server answered ``write``; the outage this ends, if one. Only the probe's
        answer ends it: a write sent before the outage began was taken by the server then,
        and a server shutting down still answers those while it refuses new ones (429)."""
        if self.since is None or write is not self.probe:
            return None
        recovery = Recovery(now - self.since, self.waited, self.dropped)
        self.since, self.failures, self.probe, self.waited, self.dropped = None, 0, None, 0, 0
        return recovery


@dataclass
class DropWarnings:
    """Warn of the first write dropped for want of room at once, then at most once per
    :data:`DROP_WARNING_INTERVAL` with the count since the last warning."""

    last: float | None = None
    unreported: int = 0

    def dropped(self, now: float, count: int) -> int:
        """Count ``count`` drops; how many to warn about now (0: stay quiet)."""
        self.unreported += count
        if not self.unreported or (
            self.last is not None and now - self.last < DROP_WARNING_INTERVAL
        ):
            return 0
        self.last, count, self.unreported = now, self.unreported, 0
        return count
