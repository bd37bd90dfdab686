"""The small error vocabulary users and components share.

Handlers steer their outcome with two exceptions: :class:`RetryTask` (try again, optionally
after a given delay) and :class:`PermanentTaskError` (never retry). Everything else a handler
raises is an ordinary failure, retried while attempts remain. Components raise the
``...Error`` classes below instead of bare built-ins so callers can tell configuration
mistakes from transient faults.
"""

from __future__ import annotations

from typing import Any


class KubetasksError(Exception):
    """Base class of every error kubetasks raises on purpose."""


class ConfigurationError(KubetasksError):
    """A setting, flag or argument is invalid; the message names it."""


class InvalidQueueError(ConfigurationError):
    """A queue name breaks the rule in ``kubetasks.queuename``; the message names the field."""


class MessageTooLargeError(ConfigurationError):
    """A task's encoded message exceeds ``kubetasks.queue.message.MAX_MESSAGE_BYTES``."""


class BrokerUnavailableError(KubetasksError, ConnectionError):
    """Redis cannot be reached (or failed over mid-command); safe to retry later."""


class HandlerNotFoundError(KubetasksError):
    """No handler is registered under the requested name."""


class DuplicateTaskError(KubetasksError):
    """A task with the same unique key is already queued or running."""

    def __init__(self, unique_key: str, existing_id: str) -> None:
        super().__init__(f"unique key {unique_key!r} is held by task {existing_id}")
        self.unique_key = unique_key
        self.existing_id = existing_id


class TaskNotFoundError(KubetasksError):
    """The task id is unknown to the broker (never enqueued, or its record expired)."""


class TaskFailedError(KubetasksError):
    """Raised by ``result()`` when the task ended without a result."""

    def __init__(self, task_id: str, state: str, error: dict[str, Any] | None) -> None:
        detail = f": {error.get('type')}: {error.get('message')}" if error else ""
        super().__init__(f"task {task_id} ended {state}{detail}")
        self.task_id = task_id
        self.state = state
        self.error = error


class ResultTooLargeError(KubetasksError):
    """A handler returned a result larger than the configured cap."""


class RetryTask(Exception):
    """Raised by a handler to ask for another attempt, after ``delay`` seconds if given."""

    def __init__(self, message: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentTaskError(Exception):
    """Raised by a handler when retrying cannot help: the task fails at once."""


class TaskCancelledError(Exception):
    """Delivered to a handler's context when its task is cancelled while running."""


class TaskTimeoutError(Exception):
    """The attempt ran longer than its ``timeout`` and was stopped."""
