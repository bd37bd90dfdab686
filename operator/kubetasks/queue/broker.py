"""The only module that talks to Redis.

Each state transition of a task is one Lua script (``scripts/<name>.lua``, prefixed with the
helpers in ``scripts/lib.lua``) run atomically on the server; this module loads the scripts,
wraps each in one typed coroutine and turns their return codes into values. Times are taken
from an injected clock and passed to the scripts, so the scripts themselves never read the
server clock and tests can drive them with fake time.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, ParamSpec, TypeVar, cast

import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript

from kubetasks import outages
from kubetasks.clock import SYSTEM_CLOCK, Clock, to_ms
from kubetasks.errors import BrokerUnavailableError
from kubetasks.queue import keys
from kubetasks.queue.keys import QueueKeys, SetKeys
from kubetasks.queue.message import (
    Dequeued,
    EnqueueResult,
    Leased,
    QueueSettings,
    QueueStats,
    SetState,
    TaskInfo,
    TaskMessage,
    check_size,
)
from kubetasks.queue.wire import (
    ENQUEUE_CHUNK,
    NOTIFY_CAP,
    cancel_call,
    error_type,
    plan_enqueue,
    task_info,
)
from kubetasks.queuename import DEFAULT_NAMESPACE, split_qualified, validate_namespace

log = logging.getLogger("kubetasks.broker")

#: Default seconds a finished task's record (result, error) is kept.
DEFAULT_RETENTION = 24 * 3600

_SCRIPT_NAMES = (
    "enqueue",
    "dequeue",
    "heartbeat",
    "ack",
    "retry",
    "fail",
    "requeue",
    "promote",
    "reclaim",
    "cancel",
    "forget",
    "configure",
    "expire",
    "rerun",
    "delete_dead",
    "purge_dead",
    "enqueue_items",
    "restore_set",
    "forget_items",
    "item_progress",
)
#: Seconds a connection attempt to Redis may take. Short: a connect sent while a Service
#: still routes to a Redis pod that is gone gets no answer, and the process is back only
#: when the attempt gives up and the next one reaches the new pod.
CONNECT_TIMEOUT = 2.0
#: Connections one process opens to Redis at most; more calls at once wait for one.
MAX_CONNECTIONS = 64
#: Seconds a call waits for a free connection before it fails as "Redis unavailable".
POOL_WAIT = 30.0
#: Priorities looked at, at most, to find the oldest pending task (the stats'
#: ``oldest_pending``): the first task of each priority in line is read, one round trip each.
OLDEST_PRIORITIES = 16
#: A pending task's score is ``-priority * PRIORITY_BAND + seq`` (enqueue.lua).
PRIORITY_BAND = 1 << 40


# How every connection pool of the queue package (this broker's, the sync one's) is made.
#
# A connect that gets no answer (a Service without endpoints, a dropped route) fails after
# CONNECT_TIMEOUT instead of hanging, so an outage ends for this process as soon as the
# server is back; keepalive finds connections the network dropped silently.
#
# A blocking pool: a call beyond MAX_CONNECTIONS at once waits for a free connection.
# redis-py's default pool raises "Too many connections" (a ConnectionError) past 100
# instead, and the operator admitting a burst of Tasks at once took that for Redis being down
# and left Tasks Pending.
POOL_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "max_connections": MAX_CONNECTIONS,
    "timeout": POOL_WAIT,
    "socket_connect_timeout": CONNECT_TIMEOUT,
    "socket_keepalive": True,
}

#: What redis-py raises when the server cannot be reached, or drops the connection mid-call.
CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def unavailable(exc: BaseException) -> BrokerUnavailableError:
    """The project's error for a connection failure, told to :data:`kubetasks.outages.REDIS`
    (which logs an outage once, when it begins). Every Redis client of the queue package,
    async or sync, raises this one."""
    outages.REDIS.failed(exc)
    return BrokerUnavailableError(f"Redis is unreachable: {exc}")


P = ParamSpec("P")
R = TypeVar("R")


def _unavailable(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn the client's connection failures into :class:`BrokerUnavailableError`, so
    callers above this module can handle "Redis is down" without importing redis; and
    tell :data:`kubetasks.outages.REDIS` of each failure and success, which logs the
    outage once, when it begins and when it ends."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = await method(*args, **kwargs)
        except BrokerUnavailableError:
            raise  # from a wrapped method this one called: translated once already
        except CONNECTION_ERRORS as exc:
            if args and isinstance(args[0], Broker):
                await args[0].drop_idle_connections()
            raise unavailable(exc) from exc
        outages.REDIS.succeeded()
        return result

    return wrapper


#: The same for a call on the broker's client from elsewhere in the queue package
#: (``acl.py``): a failed connection is a :class:`BrokerUnavailableError`, reported to the
#: outage log, never a raw redis error that a loop would log with its traceback.
reports_outages = _unavailable


#: A top-level definition of ``lib.lua`` (``local function f(`` or ``local NAME =``), with the
#: comment lines just above it.
_LIB_DEFINITION = re.compile(r"^(?:--[^\n]*\n)*local (?:function )?(\w+)", re.MULTILINE)


def load_source(name: str) -> str:
    """The source of one transition script, with the helpers of ``lib.lua`` it uses (and
    those they use) in front, in ``lib.lua``'s order. Every run of a script defines what is
    in front of it again, so a script carries only what it calls: the whole file cost each
    call about 2 us of the server's time."""
    folder = resources.files("kubetasks.queue") / "scripts"
    lib = (folder / "lib.lua").read_text()
    body = (folder / f"{name}.lua").read_text()
    found = list(_LIB_DEFINITION.finditer(lib))
    blocks = {
        m.group(1): lib[m.start() : nxt.start() if nxt else len(lib)]
        for m, nxt in zip(found, [*found[1:], None], strict=True)
    }
    wanted: set[str] = set()
    todo = [body]
    while todo:
        text = todo.pop()
        for word in set(re.findall(r"\b\w+\b", text)) & blocks.keys() - wanted:
            wanted.add(word)
            todo.append(blocks[word])
    return "".join(blocks[n] for n in blocks if n in wanted) + "\n" + body


def _tokens(settings: QueueSettings, bucket: list[str | None], now: int) -> float:
    """Tokens in a rate limit's bucket at ``now``, refilled as the dequeue script does."""
    rate, burst = settings.rate or 0.0, settings.bucket_size
    stored, at = bucket
    if stored is None or at is None:
        return float(burst)
    return min(float(burst), float(stored) + max(now - int(at), 0) * rate / 1000)


class _Shared:
    """What every namespace view of one broker shares."""

    def __init__(self) -> None:
        self.known_queues: set[str] = set()
        """Qualified names this process has registered already."""
        self.registering = asyncio.Lock()
        self.evicted_queues = 0
        self.views: dict[str, Broker] = {}


class Broker:
    """Async access to the queues of one namespace in one Redis server (or Sentinel- or
    Cluster-routed client).

    Every queue a broker names is a queue of its ``namespace``: a worker's broker is bound
    to its pod's namespace, a client's to the namespace it was given. The operator, which
    serves every namespace, holds one broker and takes a view per namespace with
    :meth:`in_namespace` (the views share the connection pool and the loaded scripts).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        clock: Clock = SYSTEM_CLOCK,
        retention: int = DEFAULT_RETENTION,
    ) -> None:
        self.redis = client
        self.namespace = validate_namespace(namespace)
        self.clock = clock
        self.retention = retention
        self._keys: dict[str, QueueKeys] = {}
        self._shared = _Shared()
        self._shared.views[self.namespace] = self
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(load_source(name)) for name in _SCRIPT_NAMES
        }

    def in_namespace(self, namespace: str) -> Broker:
        """The same broker, addressing the queues of ``namespace``."""
        view = self._shared.views.get(namespace)
        if view is None:
            view = copy.copy(self)
            view.namespace = validate_namespace(namespace)
            view._keys = {}
            self._shared.views[namespace] = view
        return view

    @property
    def evicted_queues(self) -> int:
        """Entries of the queue registry removed because they name no valid queue (written
        by an older version: a name that failed the queue-name rule, or one of the layout
        before namespaces)."""
        return self._shared.evicted_queues

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Broker:
        pool = aioredis.BlockingConnectionPool.from_url(url, **POOL_OPTIONS)
        return cls(aioredis.Redis.from_pool(pool), **kwargs)

    async def drop_idle_connections(self) -> None:
        """After a call failed to connect or lost its connection: the server may have
        restarted, and then every idle pooled connection is stale and would fail once, each
        in whichever call takes it next (a sweep whose ping passed and whose next call
        failed). They reconnect on their next use instead."""
        pool = getattr(self.redis, "connection_pool", None)  # none on a Cluster client
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.disconnect(inuse_connections=False)

    @_unavailable
    async def close(self) -> None:
        await self.redis.aclose()

    @_unavailable
    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    def keys(self, queue: str) -> QueueKeys:
        qk = self._keys.get(queue)
        if qk is None:
            qk = self._keys[queue] = QueueKeys(self.namespace, queue)
        return qk

    async def _register(self, queue_keys: Iterable[QueueKeys]) -> None:
        shared = self._shared
        new_queues = {qk.qualified for qk in queue_keys} - shared.known_queues
        if not new_queues:
            return
        # Calls started at once (asyncio.gather) all find a new queue unregistered: one adds
        # it while the others wait, rather than each paying a SADD round trip first.
        async with shared.registering:
            new_queues -= shared.known_queues
            if new_queues:
                await self.redis.sadd(keys.QUEUES, *new_queues)
                shared.known_queues |= new_queues

    def _now_ms(self) -> int:
        return to_ms(self.clock.now())

    async def _run(self, name: str, keys_: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=list(keys_), args=list(args))

    # -- producing -------------------------------------------------------------------------

    @_unavailable
    async def enqueue(
        self, messages: Iterable[TaskMessage], *, spent: Mapping[str, int] | None = None
    ) -> list[EnqueueResult]:
        """Add tasks, one script call per queue and chunk, all chunks in one pipeline.

        ``spent`` maps task ids to attempts already used, for tasks restored after Redis lost
        them: attempt numbers then continue where the Task resource's status left off.
        """
        plan = plan_enqueue(messages, self.keys, self._now_ms(), spent)
        if not plan.calls:
            return []
        await self._register(plan.queues)
        script = self._scripts["enqueue"]
        if len(plan.calls) == 1:
            # One call (the operator's one Task at a time): EVALSHA straight away. A pipeline
            # would first ask SCRIPT EXISTS, a second round trip for every Task.
            (call,) = plan.calls
            replies = [await script(keys=call.keys, args=call.args)]
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for call in plan.calls:
                    await script(keys=call.keys, args=call.args, client=pipe)
                replies = await pipe.execute()
        return plan.results(replies)

    # -- consuming -------------------------------------------------------------------------

    @_unavailable
    async def dequeue(
        self, queue: str, worker_id: str, count: int, lease_seconds: float
    ) -> list[Leased]:
        """Lease up to ``count`` tasks (see :meth:`lease` for why there may be fewer)."""
        return (await self.lease(queue, worker_id, count, lease_seconds)).tasks

    @_unavailable
    async def lease(self, queue: str, worker_id: str, count: int, lease_seconds: float) -> Dequeued:
        """Lease up to ``count`` pending tasks within the queue's settings (pause, cap on
        tasks in flight, rate limit), each with the timeout the queue allows it."""
        qk = self.keys(queue)
        now = self._now_ms()
        hold, wait, default_timeout, max_timeout, flat = await self._run(
            "dequeue",
            [qk.pending, qk.active, qk.dead, qk.stats, qk.config, qk.bucket],
            [
                now,
                now + to_ms(lease_seconds),
                count,
                worker_id,
                qk.task_prefix,
                qk.unique_prefix,
                self.retention,
            ],
        )
        limits = None
        if int(default_timeout) or int(max_timeout):
            limits = QueueSettings(
                default_timeout=int(default_timeout) or None, max_timeout=int(max_timeout) or None
            )
        tasks = []
        for i in range(0, len(flat), 4):
            message = TaskMessage.decode(flat[i + 1])
            if limits is not None:
                timeout = limits.timeout_for(message.timeout)
                if timeout != message.timeout:
                    message = dataclasses.replace(message, timeout=timeout)
            tasks.append(
                Leased(message, int(flat[i + 2]), None if flat[i + 3] == "active" else flat[i + 3])
            )
        return Dequeued(tasks, hold or None, int(wait) / 1000)

    @_unavailable
    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until a wake-up token arrives on one of the queues, or the timeout passes."""
        notify = [self.keys(q).notify for q in queues]
        return await self.redis.blpop(notify, timeout=max(timeout, 0.001)) is not None

    @_unavailable
    async def heartbeat(
        self, queue: str, worker_id: str, task_ids: Sequence[str], lease_seconds: float
    ) -> tuple[list[str], list[str]]:
        """Extend leases; returns (ids to cancel, ids this worker no longer holds)."""
        if not task_ids:
            return [], []
        qk = self.keys(queue)
        lease_until = self._now_ms() + to_ms(lease_seconds)
        cancel, lost = await self._run(
            "heartbeat", [qk.active], [lease_until, qk.task_prefix, worker_id, *task_ids]
        )
        return list(cancel), list(lost)

    @_unavailable
    async def ack(
        self, queue: str, worker_id: str, done: Sequence[tuple[str, int, str]]
    ) -> list[str]:
        """Record successes ``(id, attempt, result JSON)``; returns the ids not acked."""
        if not done:
            return []
        qk = self.keys(queue)
        args: list[Any] = [
            self._now_ms(),
            qk.task_prefix,
            qk.unique_prefix,
            self.retention,
            worker_id,
        ]
        for item in done:
            args.extend(item)
        return list(await self._run("ack", [qk.active, qk.stats, qk.config], args))

    @_unavailable
    async def retry(
        self, queue: str, worker_id: str, task_id: str, attempt: int, retry_at: float, error: str
    ) -> bool:
        qk = self.keys(queue)
        return bool(
            await self._run(
                "retry",
                [qk.active, qk.scheduled, qk.stats, qk.notify],
                [
                    self._now_ms(),
                    qk.task_prefix,
                    worker_id,
                    task_id,
                    attempt,
                    to_ms(retry_at),
                    error,
                    NOTIFY_CAP,
                    error_type(error),
                ],
            )
        )

    @_unavailable
    async def fail(
        self, queue: str, worker_id: str, task_id: str, attempt: int, state: str, error: str
    ) -> bool:
        qk = self.keys(queue)
        return bool(
            await self._run(
                "fail",
                [qk.active, qk.dead, qk.stats, qk.config],
                [
                    self._now_ms(),
                    qk.task_prefix,
                    qk.unique_prefix,
                    self.retention,
                    worker_id,
                    task_id,
                    attempt,
                    state,
                    error,
                    error_type(error),
                ],
            )
        )

    @_unavailable
    async def requeue(self, queue: str, worker_id: str, task_id: str, attempt: int) -> bool:
        qk = self.keys(queue)
        return bool(
            await self._run(
                "requeue",
                [qk.active, qk.pending, qk.notify],
                [qk.task_prefix, worker_id, task_id, attempt, NOTIFY_CAP],
            )
        )

    # -- TaskSets --------------------------------------------------------------------------

    @_unavailable
    async def enqueue_items(
        self, queue: str, uid: str, name: str, total: int, items: Sequence[TaskMessage], upto: int
    ) -> int | None:
        """Add a TaskSet's items (each with its ``index``; all share the first one's priority,
        retries and deadline) and move the set's cursor to ``upto``; one script call per
        :data:`ENQUEUE_CHUNK` items, all in one pipeline. Returns how many were new, or None
        when Redis no longer has the set (nothing was added: :meth:`restore_taskset` first,
        which also starts a new set)."""
        qk = self.keys(queue)
        sk = qk.taskset(uid)
        await self._register([qk])
        script = self._scripts["enqueue_items"]
        now = self._now_ms()
        calls = []
        for start in range(0, max(len(items), 1), ENQUEUE_CHUNK):
            chunk = items[start : start + ENQUEUE_CHUNK]
            first = chunk[0] if chunk else None
            args: list[Any] = [
                now, qk.task_prefix, NOTIFY_CAP, keys.ENQUEUED, qk.qualified,
                first.priority if first else 0, first.max_retries if first else 0,
                to_ms(first.deadline) if first and first.deadline else 0,
                total, name,
                upto if start + ENQUEUE_CHUNK >= len(items) else (chunk[-1].index or 0) + 1,
            ]  # fmt: skip
            for m in chunk:
                args += (m.id, m.index, check_size(m.encode()))
            calls.append(([qk.pending, qk.seq, qk.notify, qk.deadlines, sk.key], args))
        if len(calls) == 1:
            replies = [await script(keys=calls[0][0], args=calls[0][1])]
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for call_keys, args in calls:
                    await script(keys=call_keys, args=args, client=pipe)
                replies = await pipe.execute()
        if any(int(r) < 0 for r in replies):
            return None
        return sum(int(r) for r in replies)

    @_unavailable
    async def taskset_state(self, queue: str, uid: str, *, indexes: bool) -> SetState:
        """What Redis knows of a TaskSet's items: counts, and with ``indexes`` the indexes
        that ended and the first errors."""
        sk = self.keys(queue).taskset(uid)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(sk.key)
            pipe.scard(sk.done)
            pipe.scard(sk.failed)
            pipe.scard(sk.run)
            pipe.hlen(sk.progress)
            if indexes:
                pipe.smembers(sk.done)
                pipe.smembers(sk.failed)
                pipe.hgetall(sk.errors)
            found = await pipe.execute()
        head = cast(dict[str, str], found[0])
        state = SetState(
            exists=bool(head),
            next=int(head.get("next", 0)),
            succeeded=int(found[1]),
            failed=int(found[2]),
            running=int(found[3]),
            restored=head.get("restored") == "1",
        )
        if int(found[4]) and state.running:
            # Some item reported progress: the fractions of the ones running now (an ended
            # item counts as 1 anyway, and its fraction stays in the hash until the set's
            # keys go). Two more round trips, only for sets whose handlers report.
            running = list(await self.redis.smembers(sk.run))
            if running:
                reported = await self.redis.hmget(sk.progress, running)
                state.running_progress = sum(float(f) for f in reported if f is not None)
        if indexes:
            state.done_indexes = {int(i) for i in found[5]}
            state.failed_indexes = {int(i) for i in found[6]}
            state.errors = {int(i): e for i, e in cast(dict[str, str], found[7]).items()}
        return state

    @_unavailable
    async def item_progress(
        self, queue: str, worker_id: str, task_id: str, attempt: int, fraction: float
    ) -> bool:
        """A running TaskSet item's progress, into its set's progress hash (see
        ``item_progress.lua``); False when the attempt is no longer this worker's."""
        qk = self.keys(queue)
        found = await self._run(
            "item_progress", [qk.task_prefix + task_id], [worker_id, attempt, repr(fraction)]
        )
        return bool(found)

    @_unavailable
    async def taskset_results(self, queue: str, uid: str) -> dict[int, str]:
        """index -> result JSON of the items of a TaskSet that returned one."""
        raw = await self.redis.hgetall(self.keys(queue).taskset(uid).results)
        return {int(i): r for i, r in cast(dict[str, str], raw).items()}

    @_unavailable
    async def restore_taskset(
        self,
        queue: str,
        uid: str,
        name: str,
        total: int,
        done: Sequence[int],
        failed: Sequence[int],
    ) -> bool:
        """Put back a TaskSet's bookkeeping that Redis lost, from what its status recorded;
        False when Redis still had it (nothing changed)."""
        qk = self.keys(queue)
        sk = qk.taskset(uid)
        await self._register([qk])
        return bool(
            await self._run(
                "restore_set",
                [sk.key, sk.done, sk.failed],
                [total, name, len(done), *done, *failed],
            )
        )

    @_unavailable
    async def forget_items(
        self, queue: str, uid: str, ids: Sequence[str], *, drop_set: bool
    ) -> int:
        """Drop items of a TaskSet (running ones are told to stop); with ``drop_set``, its
        bookkeeping too (the set was deleted). One script call per chunk of ids."""
        qk = self.keys(queue)
        sk: SetKeys = qk.taskset(uid)
        base = [qk.pending, qk.scheduled, qk.active, qk.dead, qk.deadlines]
        chunks = [ids[i : i + ENQUEUE_CHUNK] for i in range(0, len(ids), ENQUEUE_CHUNK)] or [[]]
        dropped = 0
        for n, chunk in enumerate(chunks):
            last = drop_set and n == len(chunks) - 1
            keys_ = base + (sk.all() if last else [])
            dropped += int(
                await self._run("forget_items", keys_, [qk.task_prefix, "1" if last else "0",
                                                         *chunk])
            )  # fmt: skip
        return dropped

    # -- maintenance -----------------------------------------------------------------------

    @_unavailable
    async def promote(self, queue: str, limit: int = 1000) -> tuple[int, float | None]:
        """Move due tasks to pending; returns (moved, when the next one is due or None)."""
        qk = self.keys(queue)
        moved, next_due = await self._run(
            "promote",
            [qk.scheduled, qk.pending, qk.notify],
            [self._now_ms(), qk.task_prefix, limit, NOTIFY_CAP],
        )
        return int(moved), (None if int(next_due) < 0 else int(next_due) / 1000)

    @_unavailable
    async def reclaim(
        self, queue: str, *, worker_id: str | None = None, limit: int = 1000
    ) -> tuple[int, list[Leased]]:
        """Take back expired leases (or all tasks of one worker); returns how many went back
        to pending, and the tasks that ended failed because their last attempt was lost."""
        qk = self.keys(queue)
        requeued, dead = await self._run(
            "reclaim",
            [qk.active, qk.pending, qk.dead, qk.stats, qk.notify, qk.config],
            [
                self._now_ms(),
                qk.task_prefix,
                qk.unique_prefix,
                self.retention,
                limit,
                worker_id or "",
                NOTIFY_CAP,
            ],
        )
        return int(requeued), [
            Leased(TaskMessage.decode(dead[i + 1]), int(dead[i + 2]), "failed")
            for i in range(0, len(dead), 3)
        ]

    @_unavailable
    async def epoch(self, fresh: str) -> str:
        """The server's data epoch marker; set to ``fresh`` (a new random token) first if it
        has none (a new server, or one that lost its data)."""
        if await self.redis.set(keys.EPOCH, fresh, nx=True):
            return fresh
        return str(await self.redis.get(keys.EPOCH) or fresh)

    def forget_registered(self) -> None:
        """Forget which queues this process registered: after a loss of Redis's data the
        registry is empty, and the next enqueue of each queue must add it again."""
        self._shared.known_queues.clear()

    @_unavailable
    async def expire(self, queue: str, limit: int = 1000) -> list[Leased]:
        """End the tasks whose deadline passed while they waited (no worker needed); returns
        them, ended ``deadline_exceeded``, for their status to be written."""
        qk = self.keys(queue)
        ended = await self._run(
            "expire",
            [qk.deadlines, qk.pending, qk.scheduled, qk.dead, qk.stats, qk.config],
            [self._now_ms(), qk.task_prefix, qk.unique_prefix, self.retention, limit],
        )
        return [
            Leased(TaskMessage.decode(ended[i + 1]), int(ended[i + 2]), "deadline_exceeded")
            for i in range(0, len(ended), 3)
        ]

    @_unavailable
    async def cancel(self, queue: str, task_id: str) -> str:
        """Cancel a task: 'cancelled', 'cancelling' (running), 'missing' or its final state."""
        call = cancel_call(self.keys(queue), self._now_ms(), self.retention, task_id)
        return str(await self._run("cancel", *call))

    @_unavailable
    async def forget(self, queue: str, task_id: str) -> str:
        """Remove a task whose resource was deleted: 'forgotten', 'cancelling' (running; it is
        flagged and its record expires after it stops) or 'missing'."""
        qk = self.keys(queue)
        return str(
            await self._run(
                "forget",
                [qk.pending, qk.scheduled, qk.active, qk.dead],
                [qk.task_prefix, qk.unique_prefix, self.retention, task_id],
            )
        )

    @_unavailable
    async def missing(self, queue: str, task_ids: Sequence[str]) -> list[str]:
        """The ids among ``task_ids`` that Redis has no record of."""
        if not task_ids:
            return []
        qk = self.keys(queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.exists(qk.task(task_id))
            found = await pipe.execute()
        return [t for t, present in zip(task_ids, found, strict=True) if not present]

    # -- reading ---------------------------------------------------------------------------

    @_unavailable
    async def live_ids(self, queue: str) -> list[str]:
        """Ids of the tasks not finished yet: waiting, scheduled (or backing off) and running."""
        qk = self.keys(queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in (qk.pending, qk.scheduled, qk.active):
                pipe.zrange(key, 0, -1)
            found = await pipe.execute()
        return [task_id for ids in found for task_id in ids]

    @_unavailable
    async def get_task(self, queue: str, task_id: str) -> TaskInfo | None:
        raw = cast(dict[str, str], await self.redis.hgetall(self.keys(queue).task(task_id)))
        return task_info(queue, task_id, raw)

    @_unavailable
    async def stats(self, queue: str, *, detail: bool = False) -> QueueStats:
        """Counts and settings of one queue; ``detail`` adds the age of its oldest pending
        task (a round trip per priority in line, and one: for status, the CLI and the
        dashboard, not every poll)."""
        qk = self.keys(queue)
        now = self._now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(qk.pending)
            pipe.zcard(qk.scheduled)
            pipe.zcount(qk.scheduled, "-inf", now)
            pipe.zcard(qk.active)
            pipe.zcard(qk.dead)
            pipe.hmget(qk.stats, "processed", "failed")
            pipe.hgetall(qk.config)
            if detail:
                pipe.zrange(qk.pending, 0, 0, withscores=True)
                pipe.hmget(qk.bucket, "tokens", "at")
            found = await pipe.execute()
        pending, scheduled, due, active, dead, (processed, failed), config = found[:7]
        settings = QueueSettings.from_fields(config)
        oldest = tokens = None
        if detail:
            oldest = await self._oldest(qk, found[7], now)
            if settings is not None and settings.rate is not None:
                tokens = _tokens(settings, found[8], now)
        return QueueStats(
            queue=queue,
            pending=pending,
            scheduled=scheduled - due,
            due=due,
            active=active,
            dead=dead,
            processed=int(processed or 0),
            failed=int(failed or 0),
            namespace=self.namespace,
            oldest_pending=oldest,
            settings=settings,
            tokens=tokens,
        )

    async def _oldest(
        self, qk: QueueKeys, first: list[tuple[str, float]], now: int
    ) -> float | None:
        """Seconds the oldest pending task has waited, from ``first`` (the first in line,
        with its score). Within one priority the line is in enqueue order, so the oldest is
        the first of some priority: the first of each is read (no page of the line), up to
        :data:`OLDEST_PRIORITIES` of them."""
        ids: list[str] = []
        while first and len(ids) < OLDEST_PRIORITIES:
            task_id, score = first[0]
            ids.append(task_id)
            following = (math.floor(score / PRIORITY_BAND) + 1) * PRIORITY_BAND
            first = cast(
                list[tuple[str, float]],
                await self.redis.zrangebyscore(
                    qk.pending, following, "+inf", start=0, num=1, withscores=True
                ),
            )
        if not ids:
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hget(qk.task(task_id), "enqueued_at")
            times = [int(t) for t in await pipe.execute() if t]
        return max(now - min(times), 0) / 1000 if times else None

    @_unavailable
    async def settings(self, queue: str) -> QueueSettings | None:
        """The queue's settings (None: it has none, so the defaults apply)."""
        fields = cast(dict[str, str], await self.redis.hgetall(self.keys(queue).config))
        return QueueSettings.from_fields(fields)

    @_unavailable
    async def configure(self, queue: str, settings: QueueSettings | None) -> int:
        """Set the queue's settings (None: back to the defaults) and wake idle workers when
        it may start tasks; returns the wake-up tokens pushed."""
        qk = self.keys(queue)
        fields = settings.to_fields() if settings is not None else []
        if settings is not None:
            # A queue configured before any task came is still one the operator watches.
            await self._register([qk])
        woken = await self._run(
            "configure", [qk.config, qk.pending, qk.notify], [NOTIFY_CAP, *fields]
        )
        return int(woken)

    async def enqueued(self) -> AsyncIterator[tuple[str, str]]:
        """(namespace, queue) of every namespace as tasks are enqueued on them (pub/sub; may
        miss messages while disconnected, so use it to react faster, never as the only
        trigger)."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.ENQUEUED)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    queue = split_qualified(str(message["data"]))
                    if queue is not None:
                        yield queue
        except CONNECTION_ERRORS as exc:
            outages.REDIS.failed(exc)
            raise BrokerUnavailableError(f"Redis is unreachable: {exc}") from exc
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    @_unavailable
    async def report_worker(self, worker_id: str, in_flight: int, ttl: float) -> None:
        """Record how busy a worker is (read by the autoscaler to pick idle pods first)."""
        key = keys.worker_key(worker_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={"in_flight": in_flight, "at": self._now_ms()})
            pipe.pexpire(key, to_ms(ttl))
            await pipe.execute()

    @_unavailable
    async def worker_loads(self, worker_ids: Sequence[str]) -> dict[str, int | None]:
        """Tasks in flight per worker, None for a worker that has not reported lately."""
        if not worker_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in worker_ids:
                pipe.hget(keys.worker_key(worker_id), "in_flight")
            found = await pipe.execute()
        return {w: None if v is None else int(v) for w, v in zip(worker_ids, found, strict=True)}

    @_unavailable
    async def queues(self) -> list[str]:
        """The queues of this broker's namespace ever used."""
        return [name for namespace, name in await self.all_queues() if namespace == self.namespace]

    @_unavailable
    async def all_queues(self) -> list[tuple[str, str]]:
        """(namespace, queue) of every queue ever used, in every namespace, without invalid
        entries: one written by an older version (a name registered before it was checked,
        or a bare name of the layout before namespaces) is logged, removed and counted in
        ``evicted_queues``, so no loop over the queues trips on it."""
        names = cast(set[str], await self.redis.smembers(keys.QUEUES))
        found = {name: split_qualified(name) for name in names}
        bad = [name for name, queue in found.items() if queue is None]
        if bad:
            await self.redis.srem(keys.QUEUES, *bad)
            self._shared.evicted_queues += len(bad)
            log.warning("removed invalid queue names from the registry: %s", sorted(bad))
        return sorted(queue for queue in found.values() if queue is not None)
