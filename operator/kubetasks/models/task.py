"""The Task resource: one unit of work, its options, and what became of it.

A Task's spec mirrors the options of ``kubetasks.Client.enqueue`` (see DESIGN.md); its status
is written by the operator (Queued, Scheduled, Waiting, Cancelled) and by the worker that runs
it (Running, Retrying, Succeeded, Failed). The bounds below keep one Task far below etcd's
1.5 MiB object limit: arguments and results are capped, lists are short.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from kubetasks.models.base import (
    ANY_JSON,
    CONDITIONS,
    DEPENDENCY,
    MAX_NAME,
    MAX_QUEUE,
    QUEUE_NAME,
    Condition,
    Model,
    Timestamp,
    cel,
)
from kubetasks.vocabulary import FINAL_PHASES, TaskPhase

#: Seconds a Task waits for its dependencies when it names no ``dependencyTimeoutSeconds``
#: (also for Tasks stored before the field existed).
DEFAULT_DEPENDENCY_TIMEOUT_SECONDS = 86400


class RetryBackoff(Model):
    """How long to wait before the next attempt: exponential, with jitter, up to a cap.

    The n-th retry waits ``min(maxSeconds, baseSeconds * 2**(n-1))``; with jitter, a random
    time between half of that and all of it, so failed tasks do not retry in lockstep.
    """

    rules: ClassVar = [
        cel("self.maxSeconds >= self.baseSeconds", "maxSeconds must be at least baseSeconds")
    ]

    base_seconds: float = Field(default=1.0, ge=0.01, le=86400)
    """Wait before the first retry, in seconds. Default 1."""
    max_seconds: float = Field(default=300.0, ge=0.01, le=604800)
    """Longest wait between two attempts, in seconds. Default 300 (5 minutes)."""
    jitter: bool = True
    """Randomize each wait between half and all of it. Default true."""


class TaskSpec(Model):
    """What to run, where, and with which delivery options."""

    rules: ClassVar = [
        cel(
            "!(has(self.runAt) && has(self.delaySeconds))",
            "runAt and delaySeconds are exclusive: set one of them",
        ),
        cel(
            "!(has(self.deadline) && has(self.activeDeadlineSeconds))",
            "deadline and activeDeadlineSeconds are exclusive: set one of them",
        ),
        cel(
            "has(self.uniqueKey) == has(self.uniqueForSeconds)",
            "uniqueKey and uniqueForSeconds go together: set both or neither",
        ),
        cel(
            "self.dependencyResults == 'None' || (has(self.dependsOn) && size(self.dependsOn) > 0)",
            "dependencyResults needs dependsOn: there are no results to pass without dependencies",
        ),
    ]

    handler: str = Field(
        max_length=MAX_NAME,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*([.:-][A-Za-z_][A-Za-z0-9_]*)*$",
    )
    """Registered name of the handler to run, as given to ``@kubetasks.task("name")``
    (for example ``email.send``, or the built-ins ``kubetasks.echo``, ``kubetasks.sleep``,
    ``kubetasks.fail``, ``kubetasks.http``). A name no worker knows ends the Task Failed."""
    args: list[Any] = Field(
        default_factory=list, max_length=64, json_schema_extra={"items": ANY_JSON}
    )
    """Positional arguments passed to the handler: any JSON values (at most 64)."""
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        max_length=64,
        json_schema_extra={"additionalProperties": ANY_JSON},
    )
    """Keyword arguments passed to the handler: an object of JSON values (at most 64 keys)."""
    queue: str = Field(
        default="default",
        max_length=MAX_QUEUE,
        pattern=QUEUE_NAME,
    )
    """Queue to put the Task on; only WorkerPools serving this queue run it. Default
    ``default``."""
    priority: int = Field(default=0, ge=-1000, le=1000)
    """Higher runs first within the queue; equal priorities run in creation order.
    From -1000 to 1000, default 0."""
    max_retries: int = Field(default=3, ge=0, le=100)
    """Attempts after the first one that may follow a failure. Default 3; 0 runs once."""
    retry_backoff: RetryBackoff | None = None
    """Wait between attempts (exponential with jitter and a cap). Default: 1 s doubling up to
    300 s, with jitter."""
    timeout_seconds: int | None = Field(default=None, ge=1, le=604800)
    """Longest time one attempt may run, in seconds; an attempt that overruns is stopped and
    counts as a failure. Default: no limit."""
    active_deadline_seconds: int | None = Field(default=None, ge=1, le=31536000)
    """Seconds after creation after which no attempt starts: the Task ends DeadlineExceeded.
    Exclusive with ``deadline``."""
    deadline: Timestamp | None = None
    """Time (RFC 3339) after which no attempt starts: the Task ends DeadlineExceeded.
    Exclusive with ``activeDeadlineSeconds``."""
    run_at: Timestamp | None = None
    """Earliest time (RFC 3339) to run the Task; it stays Scheduled until then. Exclusive with
    ``delaySeconds``."""
    delay_seconds: int | None = Field(default=None, ge=0, le=31536000)
    """Seconds after creation before the Task may run. Exclusive with ``runAt``."""
    unique_key: str | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    """While a Task with the same key on the same queue was enqueued less than
    ``uniqueForSeconds`` ago, this one is not run: it ends Failed with reason DuplicateTask.
    Needs ``uniqueForSeconds``."""
    unique_for_seconds: int | None = Field(default=None, ge=1, le=31536000)
    """How long ``uniqueKey`` holds, in seconds. Needs ``uniqueKey``."""
    depends_on: list[str] | None = Field(
        default=None,
        max_length=32,
        json_schema_extra={
            "items": {"type": "string", "maxLength": MAX_NAME + 8, "pattern": DEPENDENCY},
            "x-kubernetes-list-type": "set",
        },
    )
    """Names of Tasks in the same namespace that must succeed before this one is queued
    (``taskset/<name>`` names a TaskSet: a chord, whose results list is passed as the first
    positional argument, see the README); it is
    Waiting until then, and Failed (reason DependencyFailed) if one of them fails, (reason
    DependencyCycle, naming the cycle) if it depends on itself through them, or (reason
    DependencyTimeout, naming the dependency) if one of them does not exist or has not
    succeeded ``dependencyTimeoutSeconds`` after creation. A deadline applies while it waits."""
    dependency_timeout_seconds: int = Field(
        default=DEFAULT_DEPENDENCY_TIMEOUT_SECONDS, ge=1, le=31536000
    )
    """Seconds after creation by which every ``dependsOn`` Task must have succeeded; then the
    Task ends Failed with reason DependencyTimeout, naming what it still waits for. Default
    86400 (one day)."""
    dependency_results: Literal["None", "Args", "Kwarg"] = "None"
    """How the results of ``dependsOn`` reach the handler: ``None`` (not at all), ``Args``
    (prepended to ``args``, in ``dependsOn`` order) or ``Kwarg`` (as the keyword argument
    ``results``, a list in ``dependsOn`` order). Default ``None``."""
    cancel: bool = False
    """Set to true to cancel the Task without deleting it: a queued Task is removed, a running
    one is told to stop. It ends Cancelled and is never retried."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=31536000)
    """Delete the Task this many seconds after it finished (any final phase). Default: keep."""


#: Rules on a Task's spec across updates (not on a PeriodicTask's template, which may change).
SPEC_UPDATE_RULES = [
    cel("self.handler == oldSelf.handler", "spec.handler is immutable: create a new Task"),
    cel("self.queue == oldSelf.queue", "spec.queue is immutable: create a new Task"),
    cel("self.cancel || !oldSelf.cancel", "a cancelled Task cannot be resumed: create a new one"),
]


class TaskError(Model):
    """Why an attempt or the Task failed."""

    type: str = Field(max_length=256)
    """Exception class name (HandlerNotFoundError, InvalidArgumentsError, TaskTimeoutError,
    ResultTooLargeError, or the handler's own), or a reason such as DependencyFailed or
    DuplicateTask."""
    message: str = Field(default="", max_length=2048)
    """The error message (at most 1024 characters are kept)."""
    traceback: str | None = Field(default=None, max_length=8192)
    """The last lines of the Python traceback (at most 4096 characters)."""


class TaskProgress(Model):
    """How far the running attempt got, as its handler reported with ``ctx.progress``."""

    fraction: float = Field(ge=0, le=1)
    """Done so far, from 0 to 1."""
    message: str = Field(default="", max_length=256)
    """What the handler is doing (at most 256 characters)."""
    updated_at: Timestamp | None = None
    """When the handler reported it."""


class TaskStatus(Model):
    """What became of the Task; written by the operator and the worker, never backwards."""

    rules: ClassVar = [
        cel(
            "!has(oldSelf.phase) || !(oldSelf.phase in "
            + str([phase.value for phase in FINAL_PHASES])
            + ") || (has(self.phase) && self.phase == oldSelf.phase)",
            "a finished Task's phase cannot change",
        ),
        cel(
            "!has(oldSelf.attempts) || (has(self.attempts) && self.attempts >= oldSelf.attempts)",
            "status.attempts cannot decrease",
        ),
    ]

    phase: TaskPhase | None = None
    """Pending, Waiting (for dependsOn), Scheduled (runAt in the future), Queued, Running,
    Retrying (an attempt failed, another follows at nextRetryAt), or one of the final phases
    Succeeded, Failed, Cancelled, DeadlineExceeded."""
    attempts: int | None = Field(default=None, ge=0, le=1000)
    """Attempts started so far."""
    queued_at: Timestamp | None = None
    """When the operator put the Task on its queue."""
    started_at: Timestamp | None = None
    """When the latest attempt started."""
    finished_at: Timestamp | None = None
    """When the Task reached its final phase."""
    next_retry_at: Timestamp | None = None
    """When the next attempt may start (phase Retrying)."""
    worker: str | None = Field(default=None, max_length=MAX_NAME)
    """The worker (pod name) that ran the latest attempt."""
    result: Any = Field(default=None, json_schema_extra=ANY_JSON)
    """The handler's return value (phase Succeeded). Results larger than 64 KiB of JSON are
    refused: the Task fails with ResultTooLargeError instead."""
    error: TaskError | None = None
    """The last error (phases Retrying and Failed)."""
    progress: TaskProgress | None = None
    """The latest progress the handler reported (``ctx.progress``); status writes for it
    are coalesced, at most one per KUBETASKS_PROGRESS_INTERVAL_SECONDS per Task, and the last
    value is written with the final status."""
    conditions: list[Condition] | None = Field(
        default=None, max_length=16, json_schema_extra=CONDITIONS
    )
    """Queued, Running, Succeeded and Failed, each True or False, so that
    ``kubectl wait --for=condition=Succeeded task/NAME`` works."""
    observed_generation: int | None = None
    """The spec generation the operator last acted on."""


class Task(Model):
    """A unit of work for kubetasks workers: a handler name, its arguments, delivery options."""

    spec: TaskSpec
    status: TaskStatus | None = None
