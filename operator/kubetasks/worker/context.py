"""What a running handler may know about its task, and how it learns of cancellation."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubetasks.errors import ConfigurationError, TaskCancelledError

#: Longest ``ctx.progress`` message (the CRD's limit on status.progress.message).
MAX_PROGRESS_MESSAGE = 256
#: Guards the creation of a context's cancellation event.
_EVENT_LOCK = threading.Lock()


@dataclass
class TaskContext:
    """Passed to a handler that declares a ``ctx`` parameter."""

    id: str
    """The task id (the Task resource's uid when it came through Kubernetes)."""
    handler: str
    queue: str
    attempt: int
    """1 for the first attempt."""
    max_retries: int
    resource: str | None
    """``namespace/name`` of the Task resource, if any."""
    deadline: float | None
    """Epoch seconds after which no new attempt starts."""
    logger: logging.Logger
    index: int | None = None
    """The item's index (from 0) when the task is an item of a TaskSet, else None."""
    taskset: str | None = None
    """The name of the TaskSet (in the task's namespace) the task is an item of, or None."""
    _cancelled: threading.Event | None = field(default=None, repr=False)
    """Made when first needed (a threading.Event is a lock and a condition: most tasks are
    never cancelled nor wait for it)."""
    _on_progress: Callable[[float, str], None] | None = field(default=None, repr=False)

    def progress(self, fraction: float, message: str = "") -> None:
        """Report how far the task got (0 to 1) and what it is doing; safe from sync
        handlers' threads. The Task's ``status.progress`` shows it: writes are coalesced
        (at most one per Task every few seconds) and the last value lands with the final
        status. Raises ValueError for a fraction outside 0..1 or a message over 256
        characters."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ValueError(f"progress fraction must be a number from 0 to 1, got {fraction!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be from 0 to 1, got {fraction}")
        if not isinstance(message, str) or len(message) > MAX_PROGRESS_MESSAGE:
            raise ValueError(
                f"progress message must be a string of at most {MAX_PROGRESS_MESSAGE} characters"
            )
        if self._on_progress is not None:
            self._on_progress(float(fraction), message)

    _read_results: Callable[[str, str], Awaitable[dict[int, str]]] | None = field(
        default=None, repr=False
    )

    async def taskset_results(self, reference: dict[str, Any]) -> list[Any]:
        """The results of a TaskSet, by index (None for items without one), read from Redis:
        for a chord's callback whose first argument is the reference the operator passes
        instead of the list when the list is over 64 KiB (``"resultsTooLarge": true``)."""
        if self._read_results is None:
            raise ConfigurationError("this context has no Redis access to read TaskSet results")
        found = await self._read_results(str(reference["queue"]), str(reference["uid"]))
        return [json.loads(found[i]) if i in found else None for i in range(reference["total"])]

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled; long-running sync handlers should poll it."""
        event = self._cancelled
        return event is not None and event.is_set()

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise TaskCancelledError(f"task {self.id} was cancelled")

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on cancellation (sync handlers)."""
        return self._event().wait(timeout)

    def cancel(self) -> None:
        self._event().set()

    def _event(self) -> threading.Event:
        if self._cancelled is None:
            with _EVENT_LOCK:  # the loop and a handler thread may both get here first
                if self._cancelled is None:
                    self._cancelled = threading.Event()
        return self._cancelled
