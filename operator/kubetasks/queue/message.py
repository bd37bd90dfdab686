"""What a task is while it travels through Redis.

A :class:`TaskMessage` is the immutable part of a task (what to run and how), encoded once at
enqueue and decoded by the worker that leases it. The mutable part (state, attempts, lease,
result, error) lives in separate fields of the task's hash, owned by the Lua transitions.
:class:`TaskInfo` is the read model of the whole record.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from kubetasks.errors import ConfigurationError, MessageTooLargeError
from kubetasks.outcome import BackoffPolicy
from kubetasks.queuename import validate_queue_name

#: States a task moves through in Redis. Terminal ones never change again.
PENDING, SCHEDULED, ACTIVE, RETRYING = "pending", "scheduled", "active", "retrying"
SUCCEEDED, FAILED, CANCELLED, DEADLINE_EXCEEDED = (
    "succeeded",
    "failed",
    "cancelled",
    "deadline_exceeded",
)
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED, DEADLINE_EXCEEDED})

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """Compact JSON, the one encoding of messages, results and errors."""
    return _dumps(value)


#: Most bytes (UTF-8) of one encoded message: arguments included. Redis would take more, but
#: every copy of a message is held by the worker that leases it, in the task's hash and, for
#: a Task resource, in etcd next to its result; a larger one is refused before it is queued.
MAX_MESSAGE_BYTES = 256 * 1024


def check_size(encoded: str) -> str:
    """``encoded`` if it fits :data:`MAX_MESSAGE_BYTES`, else MessageTooLargeError naming
    both sizes."""
    if len(encoded) * 4 > MAX_MESSAGE_BYTES:  # only long ones pay for counting bytes
        size = len(encoded.encode())
        if size > MAX_MESSAGE_BYTES:
            raise MessageTooLargeError(
                f"the task's encoded message is {size} bytes, more than the limit of"
                f" {MAX_MESSAGE_BYTES} bytes (256 KiB): pass large inputs by reference"
            )
    return encoded


@dataclass(frozen=True, slots=True)
class TaskMessage:
    id: str
    handler: str
    queue: str = "default"
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    """Higher runs first; bounded to [-1000, 1000]."""
    max_retries: int = 3
    """Attempts after the first one; 0 means never retry."""
    timeout: float | None = None
    """Seconds one attempt may run before it is stopped and counts as failed."""
    deadline: float | None = None
    """Epoch seconds after which no attempt starts."""
    run_at: float | None = None
    """Epoch seconds before which the task does not start."""
    backoff: BackoffPolicy = BackoffPolicy()
    unique_key: str | None = None
    unique_for: int | None = None
    """Seconds the unique key is held (released earlier when the task ends)."""
    resource: str | None = None
    """``namespace/name`` of the Task resource, when the task came through Kubernetes."""
    labels: dict[str, str] = field(default_factory=dict)
    """The Task resource's labels (what the inspector's search matches ``key=value`` on)."""
    taskset: str | None = None
    """Name of the TaskSet (in the queue's namespace) this task is an item of. Such a task
    has no ``resource``: it reports to Redis only, and the operator writes the set's status."""
    index: int | None = None
    """The item's index in its TaskSet (from 0)."""

    def __post_init__(self) -> None:
        validate_queue_name(self.queue)
        if not -1000 <= self.priority <= 1000:
            raise ConfigurationError(f"priority {self.priority} is outside [-1000, 1000]")
        if self.max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.unique_for is not None and self.unique_for <= 0:
            raise ConfigurationError(f"unique_for must be > 0 seconds, got {self.unique_for}")

    def encode(self) -> str:
        body: dict[str, Any] = {"id": self.id, "h": self.handler, "q": self.queue}
        if self.args:
            body["a"] = self.args
        if self.kwargs:
            body["k"] = self.kwargs
        if self.priority:
            body["p"] = self.priority
        if self.max_retries != 3:
            body["r"] = self.max_retries
        if self.timeout is not None:
            body["t"] = self.timeout
        if self.deadline is not None:
            body["d"] = self.deadline
        if self.run_at is not None:
            body["at"] = self.run_at
        if self.backoff != BackoffPolicy():
            body["b"] = [self.backoff.base, self.backoff.cap, self.backoff.jitter]
        if self.unique_key is not None:
            body["u"] = [self.unique_key, self.unique_for]
        if self.resource is not None:
            body["res"] = self.resource
        if self.labels:
            body["l"] = self.labels
        if self.taskset is not None:
            body["ts"] = [self.taskset, self.index]
        return dumps(body)

    @classmethod
    def decode(cls, raw: str | bytes) -> TaskMessage:
        body = json.loads(raw)
        backoff = BackoffPolicy(*body["b"]) if "b" in body else BackoffPolicy()
        unique = body.get("u") or (None, None)
        taskset = body.get("ts") or (None, None)
        return cls(
            id=body["id"],
            handler=body["h"],
            queue=body["q"],
            args=body.get("a", []),
            kwargs=body.get("k", {}),
            priority=body.get("p", 0),
            max_retries=body.get("r", 3),
            timeout=body.get("t"),
            deadline=body.get("d"),
            run_at=body.get("at"),
            backoff=backoff,
            unique_key=unique[0],
            unique_for=unique[1],
            resource=body.get("res"),
            labels=body.get("l", {}),
            taskset=taskset[0],
            index=taskset[1],
        )


@dataclass(frozen=True, slots=True)
class Leased:
    """A task a worker holds: the message and which attempt this is (1-based)."""

    message: TaskMessage
    attempt: int
    ended: str | None = None
    """Set when Redis ended the task instead of handing it out: 'deadline_exceeded',
    'cancelled', or 'failed' (its worker died holding its last attempt). The worker only
    reports such a task; it never runs it."""


@dataclass(frozen=True, slots=True)
class Dequeued:
    """What one dequeue call gave: the tasks, and what held the queue back, if anything."""

    tasks: list[Leased]
    held: str | None = None
    """'paused', 'capped' (its maxInFlight is reached) or 'throttled' (its rate limit)."""
    retry_after: float = 0.0
    """For 'capped' and 'throttled': seconds until a start may be possible again."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One finished attempt of a task, from the history its record keeps."""

    number: int
    worker: str | None
    started_at: float | None
    """Epoch seconds."""
    finished_at: float | None
    outcome: str
    """'succeeded', 'retried', 'failed', 'deadline_exceeded', 'cancelled' or 'lost' (its
    worker stopped holding it)."""
    error_type: str | None


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """Everything Redis knows about one task."""

    id: str
    queue: str
    state: str
    message: TaskMessage
    attempts: int
    worker: str | None
    enqueued_at: float | None
    started_at: float | None
    finished_at: float | None
    next_retry_at: float | None
    result: Any
    error: dict[str, Any] | None
    cancel_requested: bool

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES


#: Seconds of starts a rate limit's bucket holds when the Queue sets no burst.
BURST_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """What a Queue resource sets for its queue, as the Lua transitions read it from the
    queue's ``config`` hash. None everywhere means "no limit" / "the default"."""

    paused: bool = False
    max_in_flight: int | None = None
    """Most tasks of the queue running at once, across every worker."""
    rate: float | None = None
    """Starts per second across every worker (a token bucket)."""
    burst: int | None = None
    """Starts the bucket may save up (default: :attr:`bucket_size`)."""
    default_timeout: float | None = None
    max_timeout: float | None = None
    retention: int | None = None
    """Seconds finished records stay in Redis (default: the broker's)."""

    _FIELDS = ("max_in_flight", "rate", "burst", "default_timeout", "max_timeout", "retention")

    @property
    def bucket_size(self) -> int:
        """The token bucket's size: ``burst``, else :data:`BURST_SECONDS` worth of starts (at
        least one). Over any interval, starts never exceed the rate times its length plus
        this; a bucket of one would lose the starts of every moment a worker asks late."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(round((self.rate or 0.0) * BURST_SECONDS, 9)))

    def to_fields(self) -> list[str]:
        """Field, value, ... for the config hash (unset fields are left out; the bucket size
        is written out whole, so the dequeue script needs no default of its own)."""
        out: list[str] = ["paused", "1"] if self.paused else []
        for name in self._FIELDS:
            value = self.bucket_size if name == "burst" and self.rate is not None else None
            value = value if value is not None else getattr(self, name)
            if value is not None:
                out += [name, str(value)]
        return out

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> QueueSettings | None:
        if not fields:
            return None

        def num(name: str, kind: type[int] | type[float]) -> Any:
            raw = fields.get(name)
            return None if raw is None else kind(float(raw))

        return cls(
            paused=fields.get("paused") == "1",
            max_in_flight=num("max_in_flight", int),
            rate=num("rate", float),
            burst=num("burst", int),
            default_timeout=num("default_timeout", float),
            max_timeout=num("max_timeout", float),
            retention=num("retention", int),
        )

    def timeout_for(self, asked: float | None) -> float | None:
        """The timeout one attempt runs with: what the task asked for, else the queue's
        default, never more than the queue's maximum."""
        timeout = asked if asked is not None else self.default_timeout
        if self.max_timeout is not None:
            timeout = self.max_timeout if timeout is None else min(timeout, self.max_timeout)
        return timeout


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    pending: int
    scheduled: int
    """Delayed tasks and retries not yet due (``due`` counts those whose time has come)."""
    due: int
    active: int
    dead: int
    processed: int
    failed: int
    """Failed attempts, retried or not."""
    namespace: str = "default"
    oldest_pending: float | None = None
    """Seconds the oldest pending task has waited (None: nothing pending; detail only).
    Exact while a queue's pending tasks have at most ``OLDEST_PRIORITIES`` priorities."""
    settings: QueueSettings | None = None
    """The queue's settings from its Queue resource (None: it has none)."""
    tokens: float | None = None
    """Starts its rate limit allows right now (detail only; None without a rate limit)."""

    @property
    def depth(self) -> int:
        """Work that wants a worker now: pending, due and running tasks."""
        return self.pending + self.due + self.active


@dataclass(slots=True)
class SetState:
    """What Redis holds of one TaskSet's items (``Broker.taskset_state``)."""

    exists: bool
    """False: Redis has no record of the set (not started, or its data was lost)."""
    next: int
    """Items enqueued so far: indexes below it were sent to the queue."""
    succeeded: int
    failed: int
    running: int
    restored: bool = False
    """The bookkeeping was put back from the set's status after Redis lost it."""
    done_indexes: set[int] = field(default_factory=set)
    failed_indexes: set[int] = field(default_factory=set)
    errors: dict[int, str] = field(default_factory=dict)
    """index -> error JSON of the first failed items."""
    running_progress: float = 0.0
    """Sum of the fractions the running items reported with ``ctx.progress`` (0 to each)."""


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    id: str
    queue: str
    outcome: str
    """'queued', 'scheduled', 'exists' or 'duplicate'."""
    holder: str | None = None
    """For 'duplicate': the id of the task that holds the unique key."""
