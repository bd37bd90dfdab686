"""What a handler's return or exception means for its task: one pure function.

The worker runs a handler, then calls :func:`decide` with what happened; the answer names the
transition to apply in Redis (ack, retry at a time, fail for good, cancel) and the status to
report. Keeping this in one switch, with time and randomness passed in, makes the retry and
deadline rules testable without a worker or a server. Model: asynq's handleFailedMessage.
"""

from __future__ import annotations

import asyncio
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from kubetasks.errors import (
    HandlerNotFoundError,
    PermanentTaskError,
    RetryTask,
    TaskCancelledError,
    TaskTimeoutError,
)

#: Largest result kept, as encoded JSON. Results go into Redis and onto the Task resource,
#: whose whole object must stay far below etcd's 1.5 MiB limit.
MAX_RESULT_BYTES = 64 * 1024
#: Longest error message and traceback kept (the traceback keeps its last lines).
MAX_ERROR_MESSAGE = 1024
MAX_TRACEBACK = 4096

Kind = Literal["succeeded", "retry", "failed", "cancelled", "deadline_exceeded"]


class InvalidArgumentsError(PermanentTaskError):
    """The task's args/kwargs do not fit the handler's signature: retrying cannot help."""


class ResultNotJsonError(PermanentTaskError):
    """The handler returned a value JSON cannot encode (the message names its type): the
    next attempt would return the same kind of value, so the task fails at once."""


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Exponential backoff between attempts: ``base * 2**(attempt-1)``, capped, with jitter."""

    base: float = 1.0
    """Delay before the first retry, in seconds."""
    cap: float = 300.0
    """Longest delay between two attempts, in seconds."""
    jitter: bool = True
    """Spread each delay uniformly over [delay/2, delay] so retries do not stampede."""


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    result: str | None = None
    """The result as encoded JSON (for 'succeeded')."""
    error: dict[str, Any] | None = None
    retry_at: float | None = None
    """Epoch seconds of the next attempt (for 'retry')."""

    @property
    def final(self) -> bool:
        return self.kind != "retry"


#: What happened to a task that Redis ended without a worker running it (see dequeue.lua and
#: reclaim.lua, which record the same types).
_ENDED = {
    "deadline_exceeded": ("DeadlineExceeded", "the deadline passed before an attempt could start"),
    "cancelled": ("Cancelled", "cancelled before it could run again"),
    "failed": ("WorkerLost", "its worker stopped while running its last attempt"),
}


def ended_outcome(state: str) -> Outcome:
    """The outcome to report for a task that ended inside Redis."""
    kind, message = _ENDED[state]
    return Outcome(cast(Kind, state), error={"type": kind, "message": message})


def backoff_delay(backoff: BackoffPolicy, attempt: int, rand: Callable[[], float]) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): exponential, capped,
    with "equal jitter" (uniform over the upper half) so a burst of failures spreads out."""
    delay = min(backoff.cap, backoff.base * 2.0 ** max(attempt - 1, 0))
    if backoff.jitter:
        delay = delay / 2 + rand() * delay / 2
    return delay


def describe(exc: BaseException, *, with_traceback: bool = True) -> dict[str, Any]:
    """The ``error`` record of a failure: type, message, and the tail of the traceback."""
    message = str(exc) or type(exc).__name__
    error: dict[str, Any] = {"type": type(exc).__name__, "message": message[:MAX_ERROR_MESSAGE]}
    if with_traceback and exc.__traceback__ is not None:
        tb = "".join(traceback.format_exception(exc))
        error["traceback"] = tb[-MAX_TRACEBACK:]
    return error


def decide(
    *,
    attempt: int,
    max_retries: int,
    backoff: BackoffPolicy,
    deadline: float | None,
    now: float,
    result: str | None = None,
    exc: BaseException | None = None,
    rand: Callable[[], float] = random.random,
) -> Outcome:
    """Map one finished attempt to its transition.

    ``result`` is the already-encoded JSON result of a successful attempt; ``exc`` is what
    the attempt raised. Exactly one of them describes the attempt.
    """
    if exc is None:
        assert result is not None
        if len(result.encode()) > MAX_RESULT_BYTES:
            return Outcome(
                "failed",
                error={
                    "type": "ResultTooLargeError",
                    "message": f"result is {len(result.encode())} bytes of JSON, over the"
                    f" {MAX_RESULT_BYTES}-byte cap: store large outputs elsewhere and return"
                    " a reference",
                },
            )
        return Outcome("succeeded", result=result)

    if isinstance(exc, TaskCancelledError | asyncio.CancelledError):
        return Outcome(
            "cancelled", error={"type": "Cancelled", "message": "cancelled while running"}
        )
    if isinstance(exc, PermanentTaskError | HandlerNotFoundError):
        return Outcome("failed", error=describe(exc))

    error = describe(exc, with_traceback=not isinstance(exc, RetryTask | TaskTimeoutError))
    if attempt > max_retries:
        error["message"] = f"{error['message']} (gave up after {attempt} attempts)"[
            :MAX_ERROR_MESSAGE
        ]
        return Outcome("failed", error=error)
    if isinstance(exc, RetryTask) and exc.delay is not None:
        delay = max(exc.delay, 0.0)
    else:
        delay = backoff_delay(backoff, attempt, rand)
    retry_at = now + delay
    if deadline is not None and retry_at > deadline:
        error["message"] = f"{error['message']} (the next attempt would start after the deadline)"
        return Outcome("deadline_exceeded", error=error)
    return Outcome("retry", error=error, retry_at=retry_at)
