"""Submit tasks straight to Redis and follow them: the producer side of the work engine.

This is the fast path for high-volume producers inside the cluster (and the whole API of a
Redis-only deployment). :class:`AsyncClient` is the implementation; :class:`Client` is the
same API for synchronous code, running the async client on a private event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Coroutine, Iterable, Mapping, Sequence
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
from kubetasks.settings import namespace as namespace_setting
from kubetasks.settings import redis_url

T = TypeVar("T")


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
            id=self.task_id or str(uuid.uuid4()),
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


class AsyncTaskHandle:
    """A submitted task: its id, how the enqueue went, and its status and result."""

    def __init__(self, client: AsyncClient, result: EnqueueResult) -> None:
        self._client = client
        self.id = result.id
        self.queue = result.queue
        self.outcome = result.outcome
        """'queued', 'scheduled', 'exists' or 'duplicate'."""
        self.duplicate_of = result.holder

    def __repr__(self) -> str:
        return f"<task {self.id} on {self.queue}: {self.outcome}>"

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
        request = _request(handler, args, options)
        (handle,) = await self.enqueue_many([request])
        if handle.outcome == "duplicate":
            raise DuplicateTaskError(str(request.unique_key or handler), handle.duplicate_of or "")
        return handle

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
        pause = 0.002
        while True:
            info = await self.broker.get_task(queue, task_id)
            if info is None:
                raise TaskNotFoundError(f"task {task_id} is not known on queue {queue!r}")
            if info.done:
                if info.state == SUCCEEDED:
                    return info.result
                raise TaskFailedError(task_id, info.state, info.error)
            if deadline is not None and loop.time() + pause > deadline:
                raise TimeoutError(f"task {task_id} is still {info.state} after {timeout}s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)


_REQUEST_FIELDS = set(TaskRequest.__dataclass_fields__) - {"handler", "args", "kwargs"}


def _request(handler: str, args: Sequence[Any], options: Mapping[str, Any]) -> TaskRequest:
    opts = {k: v for k, v in options.items() if k in _REQUEST_FIELDS}
    kwargs = {k: v for k, v in options.items() if k not in _REQUEST_FIELDS}
    return TaskRequest(handler, tuple(args), kwargs, **opts)


class TaskHandle:
    """Synchronous face of :class:`AsyncTaskHandle`."""

    def __init__(self, client: Client, handle: AsyncTaskHandle) -> None:
        self._client = client
        self._handle = handle
        self.id = handle.id
        self.queue = handle.queue
        self.outcome = handle.outcome
        self.duplicate_of = handle.duplicate_of

    def __repr__(self) -> str:
        return repr(self._handle)

    def status(self) -> TaskInfo | None:
        return self._client._run(self._handle.status())

    def result(self, timeout: float | None = None) -> Any:
        return self._client._run(self._handle.result(timeout))


class Client:
    """Submit and follow tasks from synchronous code.

    ``Client(redis_url).enqueue("email.send", "a@example.com", queue="mail", delay=10)``.
    In async code use :class:`AsyncClient`; this class runs its own event loop and refuses
    to be called from inside a running one.
    """

    def __init__(
        self, url: str | None = None, *, namespace: str | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._async = AsyncClient(url, namespace=namespace, clock=clock)
        self.namespace = self._async.namespace

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._loop.run_until_complete(coro)
        coro.close()
        raise ConfigurationError("kubetasks.Client is synchronous: use AsyncClient in async code")

    def close(self) -> None:
        if not self._loop.is_closed():
            self._run(self._async.close())
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def enqueue(self, handler: str, *args: Any, **options: Any) -> TaskHandle:
        return TaskHandle(self, self._run(self._async.enqueue(handler, *args, **options)))

    def enqueue_many(self, requests: Iterable[TaskRequest]) -> list[TaskHandle]:
        return [TaskHandle(self, h) for h in self._run(self._async.enqueue_many(requests))]

    def status(self, task_id: str, queue: str = "default") -> TaskInfo | None:
        return self._run(self._async.status(task_id, queue))

    def cancel(self, task_id: str, queue: str = "default") -> str:
        return self._run(self._async.cancel(task_id, queue))

    def queue_stats(self, queue: str) -> QueueStats:
        return self._run(self._async.queue_stats(queue))

    def queues(self, *, all_namespaces: bool = False) -> list[QueueStats]:
        return self._run(self._async.queues(all_namespaces=all_namespaces))
