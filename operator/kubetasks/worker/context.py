"""What a running handler may know about its task, and how it learns of cancellation."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from kubetasks.errors import TaskCancelledError


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
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled; long-running sync handlers should poll it."""
        return self._cancelled.is_set()

    def raise_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise TaskCancelledError(f"task {self.id} was cancelled")

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on cancellation (sync handlers)."""
        return self._cancelled.wait(timeout)

    def cancel(self) -> None:
        self._cancelled.set()
