"""Where the worker reports what happens to each task, besides Redis.

The worker loop calls one :class:`StatusSink`; the Redis-only deployment uses
:class:`NullSink`, and the Kubernetes deployment plugs in a sink that writes the Task
resource's status. The loop never knows which.
"""

from __future__ import annotations

from typing import Protocol

from kubetasks.outcome import Outcome
from kubetasks.queue import Leased


class StatusSink(Protocol):
    async def started(self, leased: Leased, worker: str, at: float) -> None:
        """An attempt starts running on ``worker``."""
        ...

    async def finished(self, leased: Leased, outcome: Outcome, at: float) -> None:
        """An attempt ended: succeeded, will retry, failed, cancelled or out of time."""
        ...

    def progress(self, leased: Leased, fraction: float, message: str, at: float) -> None:
        """The handler reported progress (called on the event loop, never blocks)."""
        ...

    async def close(self) -> None: ...


class NullSink:
    """Reports nothing: Redis alone holds the task's state."""

    async def started(self, leased: Leased, worker: str, at: float) -> None:
        return None

    async def finished(self, leased: Leased, outcome: Outcome, at: float) -> None:
        return None

    def progress(self, leased: Leased, fraction: float, message: str, at: float) -> None:
        return None

    async def close(self) -> None:
        return None
