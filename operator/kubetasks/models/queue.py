"""The Queue resource: the settings of one queue, and its load as the operator counts it.

A queue exists as soon as a Task names it in ``spec.queue``; nothing has to be declared
first. A Queue of the same name in the same namespace only changes how that queue runs: it
can pause it, cap its running tasks and its start rate across every worker, give its Tasks
default and maximum timeouts, and say how long Redis keeps the records of finished tasks.
Without one, the queue runs with the defaults documented on each field.

The Queue's own name is the queue's name, so it must follow both Kubernetes' rule for object
names and the queue-name rule (``kubetasks.queuename``); the root CEL rule below adds what
the first does not already say (the length). Timeout bounds are the Task's own, read from
:class:`TaskSpec`, so a queue's default is always one a Task could have set itself.
"""

from __future__ import annotations

from typing import ClassVar, cast

from annotated_types import Ge, Le
from pydantic import Field

from kubetasks.models.base import CONDITIONS, MAX_QUEUE, QUEUE_NAME, Condition, Model, cel
from kubetasks.models.task import TaskSpec

#: Longest retention of finished task records: 30 days, in seconds.
MAX_RETENTION_SECONDS = 30 * 86400
#: Most tasks per second a rate limit may allow, and the largest burst.
MAX_RATE = 100_000


def _task_bounds(field: str) -> tuple[int, int]:
    """The (``ge``, ``le``) bounds of a TaskSpec field, to declare a queue-wide default of it."""
    constraints = TaskSpec.model_fields[field].metadata
    (low,) = [c.ge for c in constraints if isinstance(c, Ge)]
    (high,) = [c.le for c in constraints if isinstance(c, Le)]
    return cast(int, low), cast(int, high)


_TIMEOUT = _task_bounds("timeout_seconds")
_TTL = _task_bounds("ttl_seconds_after_finished")


class RateLimit(Model):
    """A token bucket shared by every worker of the queue: tasks start at most at
    ``perSecond`` on average, and at most ``burst`` at once after a quiet spell. A retry
    counts as a start; a task that is cancelled or past its deadline takes no token."""

    per_second: float = Field(gt=0, le=MAX_RATE)
    """Tasks that may start per second, on average, across all workers. Fractions are
    allowed: 0.5 is one task every two seconds. Required; at most 100000."""
    burst: int | None = Field(default=None, ge=1, le=MAX_RATE)
    """Tasks that may start at once when the bucket is full (its size): after a quiet spell,
    this many start together before the rate applies; over any interval, starts never exceed
    ``perSecond`` times its length plus ``burst``. Default: a tenth of a second's worth of
    ``perSecond``, at least 1 (2 for 20 per second), so that a worker asking a moment late
    loses no starts."""


class QueueSpec(Model):
    """How the queue runs; every field is optional."""

    rules: ClassVar = [
        cel(
            "!has(self.defaultTimeoutSeconds) || !has(self.maxTimeoutSeconds)"
            " || self.defaultTimeoutSeconds <= self.maxTimeoutSeconds",
            "defaultTimeoutSeconds must not exceed maxTimeoutSeconds",
            fieldPath=".defaultTimeoutSeconds",
        ),
    ]

    paused: bool = False
    """While true, no task of the queue starts: Tasks are still accepted and wait, running
    ones finish, and the WorkerPools serving it scale to their minimum. Set it back to false
    to resume. Default false."""
    max_in_flight: int | None = Field(default=None, ge=1, le=1_000_000)
    """Most tasks of the queue running at the same time, counted across every worker and
    WorkerPool; further tasks wait until one finishes. Default: no cap (each worker's
    concurrency is the only limit)."""
    rate_limit: RateLimit | None = None
    """Most tasks of the queue started per second across every worker (a token bucket).
    Default: no limit."""
    default_timeout_seconds: int | None = Field(default=None, ge=_TIMEOUT[0], le=_TIMEOUT[1])
    """``timeoutSeconds`` of the queue's Tasks that set none: the longest time one attempt
    may run, in seconds. Default: no limit (or ``maxTimeoutSeconds`` if set)."""
    max_timeout_seconds: int | None = Field(default=None, ge=_TIMEOUT[0], le=_TIMEOUT[1])
    """Longest time one attempt of the queue's Tasks may run, in seconds, whatever the Task
    asks for: a longer ``timeoutSeconds``, or none, is cut to this. At least
    ``defaultTimeoutSeconds``. Default: no limit."""
    retention_seconds: int | None = Field(default=None, ge=0, le=MAX_RETENTION_SECONDS)
    """How long Redis keeps the record of a finished task of the queue (its result or error,
    for the client and the CLI), in seconds; the Task resource itself is kept or deleted
    according to ``ttlSecondsAfterFinished``. At most 2592000 (30 days). Default 86400 (one
    day)."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=_TTL[0], le=_TTL[1])
    """``ttlSecondsAfterFinished`` of the queue's Tasks that set none: delete a Task this many
    seconds after it finished. A Task's own value wins. Default: keep."""


class QueueStatus(Model):
    """The queue's load as the operator last read it from Redis, and whether it is held back.

    The counts cover every task of the queue, those submitted as Task resources and those
    enqueued directly through the Redis fast path alike."""

    pending: int | None = Field(default=None, ge=0)
    """Tasks waiting for a worker."""
    scheduled: int | None = Field(default=None, ge=0)
    """Tasks waiting for a time: ``runAt``/``delaySeconds`` in the future, or a retry's
    backoff."""
    running: int | None = Field(default=None, ge=0)
    """Tasks a worker is running now."""
    dead: int | None = Field(default=None, ge=0)
    """Tasks that failed for good (or passed their deadline) whose records are still kept
    (``retentionSeconds``)."""
    processed: int | None = Field(default=None, ge=0)
    """Attempts that succeeded since the queue was first used (a counter that only grows)."""
    failed: int | None = Field(default=None, ge=0)
    """Attempts that failed since the queue was first used, retried ones included (a counter
    that only grows)."""
    oldest_pending_seconds: float | None = Field(default=None, ge=0)
    """How long the oldest pending task has waited, in seconds (0 when none waits)."""
    conditions: list[Condition] | None = Field(
        default=None, max_length=16, json_schema_extra=CONDITIONS
    )
    """Paused (``spec.paused`` is in effect) and Throttled (``maxInFlight`` or ``rateLimit``
    held tasks back at the last look), each True or False."""
    observed_generation: int | None = None
    """The spec generation the operator last applied to the queue."""


class Queue(Model):
    """Settings of one queue of this namespace: the Queue's name is the queue's name, as
    Tasks give it in ``spec.queue``. A queue without a Queue runs with the defaults. A queue
    whose name contains '_' cannot have a Queue, since Kubernetes names do not allow it."""

    rules: ClassVar = [
        cel(
            f"size(self.metadata.name) <= {MAX_QUEUE}"
            f" && self.metadata.name.matches('{QUEUE_NAME}')",
            f"metadata.name must be a queue name: at most {MAX_QUEUE} lowercase letters,"
            " digits, '-' or '.', starting and ending with a letter or digit",
        ),
    ]

    spec: QueueSpec
    status: QueueStatus | None = None
