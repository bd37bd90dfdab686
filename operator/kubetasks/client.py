"""Submit tasks straight to Redis and follow them: the producer side of the work engine.

This is the fast path for high-volume producers inside the cluster (and the whole API of a
Redis-only deployment). :class:`AsyncClient` is the API for async code, on the async
broker; :class:`Client` is the same API for synchronous code, on the sync broker
(``queue/sync_broker.py``): one round trip per enqueue and no event loop, since that call is
what a web request makes. Both build the same messages here and the same script calls in
``queue/wire.py``, so a task is the same whichever client sent it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from kubetasks.clock import SYSTEM_CLOCK, Clock
from kubetasks.errors import (
    ConfigurationError,
    DuplicateTaskError,
    TaskFailedError,
    TaskNotFoundError,
)
from kubetasks.outcome import BackoffPolicy
from kubetasks.queue import Broker, EnqueueResult, QueueStats, TaskInfo, TaskMessage
from kubetasks.queue.message import SUCCEEDED, dumps
from kubetasks.queue.sync_broker import SyncBroker
from kubetasks.settings import CLIENT_SPIN_MICROSECONDS, redis_url
from kubetasks.settings import namespace as namespace_setting

T = TypeVar("T")


def new_task_id() -> str:
    """A random task id: a version-4 UUID as text, made from 16 random bytes without building
    a :class:`uuid.UUID` (0.9 us against 2.8 for ``str(uuid.uuid4())``; every one-call
    enqueue makes one)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


#: The variant bits of RFC 9562 (``10xx``) set on the first hex digit of the fourth group.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def _epoch(value: datetime | float | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    if value.tzinfo is None:
        raise ConfigurationError(f"datetime {value!r} needs a time zone (use UTC)")
    return value.timestamp()


@dataclass(frozen=True)
class TaskRequest:
    """One task to submit, with every option :meth:`AsyncClient.enqueue` takes."""

    handler: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    delay: float | None = None
    """Seconds from now before the task may start (exclusive with ``run_at``)."""
    run_at: datetime | float | None = None
    max_retries: int = 3
    timeout: float | None = None
    """Seconds one attempt may run."""
    deadline: datetime | float | None = None
    """No attempt starts after this time."""
    unique_for: int | None = None
    """Refuse duplicates for this many seconds (or until the task ends)."""
    unique_key: str | None = None
    """What makes two tasks duplicates; default: the handler, args and kwargs."""
    backoff: BackoffPolicy = BackoffPolicy()
    task_id: str | None = None
    """Your own id (enqueueing an id twice changes nothing); default a random UUID."""

    def to_message(self, now: float) -> TaskMessage:
        if self.delay is not None and self.run_at is not None:
            raise ConfigurationError("give either delay or run_at, not both")
        if self.delay is not None and self.delay < 0:
            raise ConfigurationError(f"delay must be >= 0 seconds, got {self.delay}")
        run_at = now + self.delay if self.delay else _epoch(self.run_at)
        unique_key = self.unique_key
        if self.unique_for is not None and unique_key is None:
            canonical = dumps([self.handler, list(self.args), dict(sorted(self.kwargs.items()))])
            unique_key = f"{self.handler}:{hashlib.sha1(canonical.encode()).hexdigest()}"
        if unique_key is not None and self.unique_for is None:
            raise ConfigurationError("unique_key needs unique_for (seconds to hold it)")
        return TaskMessage(
            id=self.task_id or new_task_id(),
            handler=self.handler,
            queue=self.queue,
            args=list(self.args),
            kwargs=dict(self.kwargs),
            priority=self.priority,
            max_retries=self.max_retries,
            timeout=self.timeout,
            deadline=_epoch(self.deadline),
            run_at=run_at,
            backoff=self.backoff,
            unique_key=unique_key,
            unique_for=self.unique_for,
        )


class _Handle:
    """What both handles tell of a submitted task: its id and how the enqueue went."""

    def __init__(self, result: EnqueueResult) -> None:
        self.id = result.id
        self.queue = result.queue
        self.outcome = result.outcome
        """'queued', 'scheduled', 'exists' or 'duplicate'."""
        self.duplicate_of = result.holder

    def __repr__(self) -> str:
        return f"<task {self.id} on {self.queue}: {self.outcome}>"


def _checked(handler: str, unique_key: str | None, result: EnqueueResult) -> EnqueueResult:
    """``result`` of a single enqueue, or :class:`DuplicateTaskError` when it was refused
    (named by the unique key the caller gave, else by the handler)."""
    if result.outcome == "duplicate":
        raise DuplicateTaskError(str(unique_key or handler), result.holder or "")
    return result


def _known(info: TaskInfo | None, queue: str, task_id: str) -> TaskInfo:
    """``info`` of a task waited for; raises :class:`TaskNotFoundError` when there is none and
    :class:`TaskFailedError` when the task ended without a result."""
    if info is None:
        raise TaskNotFoundError(f"task {task_id} is not known on queue {queue!r}")
    if info.done and info.state != SUCCEEDED:
        raise TaskFailedError(task_id, info.state, info.error)
    return info


#: Seconds between polls of a task's state while waiting for its result: doubling from the
#: first to the longest, so a fast task is seen at once and a slow one costs little.
FIRST_POLL, LONGEST_POLL = 0.002, 0.1


class AsyncTaskHandle(_Handle):
    """A submitted task: its id, how the enqueue went, and its status and result."""

    def __init__(self, client: AsyncClient, result: EnqueueResult) -> None:
        super().__init__(result)
        self._client = client

    async def status(self) -> TaskInfo | None:
        return await self._client.broker.get_task(self.queue, self.id)

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the task to end; return its result or raise :class:`TaskFailedError`."""
        return await self._client.wait_result(self.queue, self.id, timeout)


class AsyncClient:
    """Submit to and read the queues of one namespace: ``namespace``, else
    ``$KUBETASKS_NAMESPACE``, else the pod's own, else ``default``. A task is run by the
    workers of that namespace only."""

    def __init__(
        self, url: str | None = None, *, namespace: str | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.namespace = namespace_setting(namespace)
        self.broker = Broker.from_url(redis_url(url), namespace=self.namespace, clock=clock)

    async def close(self) -> None:
        await self.broker.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def enqueue(self, handler: str, *args: Any, **options: Any) -> AsyncTaskHandle:
        """Submit one task. Options are :class:`TaskRequest`'s fields; other keyword
        arguments are the task's kwargs. Raises :class:`DuplicateTaskError` when a task
        with the same unique key is still held."""
        message, unique_key = _message(handler, args, options, self.broker.clock.now())
        (result,) = await self.broker.enqueue([message])
        return AsyncTaskHandle(self, _checked(handler, unique_key, result))

    async def enqueue_many(self, requests: Iterable[TaskRequest]) -> list[AsyncTaskHandle]:
        """Submit a batch in a few round trips; duplicates are reported per handle."""
        now = self.broker.clock.now()
        results = await self.broker.enqueue([r.to_message(now) for r in requests])
        return [AsyncTaskHandle(self, r) for r in results]

    async def status(self, task_id: str, queue: str = "default") -> TaskInfo | None:
        return await self.broker.get_task(queue, task_id)

    async def cancel(self, task_id: str, queue: str = "default") -> str:
        return await self.broker.cancel(queue, task_id)

    async def queue_stats(self, queue: str) -> QueueStats:
        return await self.broker.stats(queue, detail=True)

    async def queues(self, *, all_namespaces: bool = False) -> list[QueueStats]:
        """Every queue of the client's namespace (or of all namespaces), with its settings
        and the age of its oldest pending task."""
        if all_namespaces:
            found = await self.broker.all_queues()
        else:
            found = [(self.namespace, q) for q in await self.broker.queues()]
        return [await self.broker.in_namespace(ns).stats(q, detail=True) for ns, q in found]

    async def wait_result(self, queue: str, task_id: str, timeout: float | None = None) -> Any:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = FIRST_POLL
        while True:
            info = _known(await self.broker.get_task(queue, task_id), queue, task_id)
            if info.done:
                return info.result
            if deadline is not None and loop.time() + pause > deadline:
                raise TimeoutError(f"task {task_id} is still {info.state} after {timeout}s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_POLL)


_REQUEST_FIELDS = set(TaskRequest.__dataclass_fields__) - {"handler", "args", "kwargs"}
#: Options whose message is built from them as given (no time, id or key to work out).
_PLAIN = frozenset({"queue", "priority", "max_retries", "timeout"})
_DEFAULTS = {name: TaskRequest.__dataclass_fields__[name].default for name in _PLAIN}


def _request(handler: str, args: Sequence[Any], options: Mapping[str, Any]) -> TaskRequest:
    opts = {k: v for k, v in options.items() if k in _REQUEST_FIELDS}
    kwargs = {k: v for k, v in options.items() if k not in _REQUEST_FIELDS}
    return TaskRequest(handler, tuple(args), kwargs, **opts)


def _message(
    handler: str, args: Sequence[Any], options: Mapping[str, Any], now: float
) -> tuple[TaskMessage, str | None]:
    """The message of a one-call enqueue, and the unique key the caller gave. With plain
    options only (the common call), the message is built at once: the same message as
    ``_request(...).to_message(now)``, without making the request on the way (a frozen
    dataclass of 14 fields, a tenth of the client's own time per call)."""
    if not options.keys() & _REQUEST_FIELDS - _PLAIN:
        kwargs = {k: v for k, v in options.items() if k not in _PLAIN}
        get = options.get
        message = TaskMessage(
            id=new_task_id(),
            handler=handler,
            queue=get("queue", _DEFAULTS["queue"]),
            args=list(args),
            kwargs=kwargs,
            priority=get("priority", _DEFAULTS["priority"]),
            max_retries=get("max_retries", _DEFAULTS["max_retries"]),
            timeout=get("timeout", _DEFAULTS["timeout"]),
        )
        return message, None
    request = _request(handler, args, options)
    return request.to_message(now), request.unique_key


def _refuse_in_async_code() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise ConfigurationError("kubetasks.Client is synchronous: use AsyncClient in async code")


class TaskHandle(_Handle):
    """Synchronous face of :class:`AsyncTaskHandle`."""

    def __init__(self, client: Client, result: EnqueueResult) -> None:
        super().__init__(result)
        self._client = client

    def status(self) -> TaskInfo | None:
        return self._client.status(self.id, self.queue)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task to end; return its result or raise :class:`TaskFailedError`."""
        return self._client.wait_result(self.queue, self.id, timeout)


class Client:
    """Submit and follow tasks from synchronous code.

    ``Client(redis_url).enqueue("email.send", "a@example.com", queue="mail", delay=10)``.
    One client may be shared by every thread of a process. In async code use
    :class:`AsyncClient`; this class blocks, and refuses to be called from inside a running
    event loop.

    Enqueues, statuses, results and cancels go through the sync broker, one round trip each;
    :meth:`queue_stats` and :meth:`queues`, which read many keys, run the async broker on a
    private event loop, made on first use (one call at a time: the loop is behind a lock).
    """

    def __init__(
        self, url: str | None = None, *, namespace: str | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.namespace = namespace_setting(namespace)
        self._url = redis_url(url)
        self.broker = SyncBroker.from_url(
            self._url,
            namespace=self.namespace,
            clock=clock,
            spin=CLIENT_SPIN_MICROSECONDS.get() / 1e6,
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async: AsyncClient | None = None

    def _run(self, call: Callable[[AsyncClient], Coroutine[Any, Any, T]]) -> T:
        """``call`` on the async client, on this client's private loop."""
        _refuse_in_async_code()
        with self._lock:
            if self._loop is None or self._async is None:
                self._loop = asyncio.new_event_loop()
                self._async = AsyncClient(self._url, namespace=self.namespace, clock=self._clock)
            return self._loop.run_until_complete(call(self._async))

    def close(self) -> None:
        _refuse_in_async_code()
        self.broker.close()
        with self._lock:
            if self._loop is not None and self._async is not None:
                self._loop.run_until_complete(self._async.close())
                self._loop.close()
                self._loop = self._async = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def enqueue(self, handler: str, *args: Any, **options: Any) -> TaskHandle:
        """Submit one task, as :meth:`AsyncClient.enqueue` does."""
        _refuse_in_async_code()
        message, unique_key = _message(handler, args, options, self._clock.now())
        (result,) = self.broker.enqueue([message])
        return TaskHandle(self, _checked(handler, unique_key, result))

    def enqueue_many(self, requests: Iterable[TaskRequest]) -> list[TaskHandle]:
        """Submit a batch in one round trip per 500 tasks of one queue, all in one pipeline
        when there are more; duplicates are reported per handle."""
        _refuse_in_async_code()
        now = self._clock.now()
        results = self.broker.enqueue([r.to_message(now) for r in requests])
        return [TaskHandle(self, r) for r in results]

    def status(self, task_id: str, queue: str = "default") -> TaskInfo | None:
        _refuse_in_async_code()
        return self.broker.get_task(queue, task_id)

    def cancel(self, task_id: str, queue: str = "default") -> str:
        _refuse_in_async_code()
        return self.broker.cancel(queue, task_id)

    def wait_result(self, queue: str, task_id: str, timeout: float | None = None) -> Any:
        """Wait for a task to end, as :meth:`AsyncClient.wait_result` does."""
        _refuse_in_async_code()
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = FIRST_POLL
        while True:
            info = _known(self.broker.get_task(queue, task_id), queue, task_id)
            if info.done:
                return info.result
            if deadline is not None and time.monotonic() + pause > deadline:
                raise TimeoutError(f"task {task_id} is still {info.state} after {timeout}s")
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_POLL)

    def queue_stats(self, queue: str) -> QueueStats:
        return self._run(lambda c: c.queue_stats(queue))

    def queues(self, *, all_namespaces: bool = False) -> list[QueueStats]:
        return self._run(lambda c: c.queues(all_namespaces=all_namespaces))
