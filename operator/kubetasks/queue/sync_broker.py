"""The producer's side of the queues for synchronous code, without an event loop.

``kubetasks.Client.enqueue(...)`` is the call a web request makes. Run through the async
:class:`~kubetasks.queue.broker.Broker` on a private event loop, each call paid for a turn
of that loop (a task, futures, the selector) on top of its one round trip, and was slower
than a peer's single command on a plain socket. This broker sends the same script calls,
built by :mod:`kubetasks.queue.wire`, on a redis-py sync connection pool: an enqueue to a
queue this broker has registered already is one ``EVALSHA``, one round trip.

It does what a producer does (enqueue, read a task, cancel one) and nothing else; the
operator and the workers use :class:`Broker`. It is safe to share between threads: a
single-call enqueue goes out on a connection of the calling thread's own (``threading.local``,
made on its first enqueue: no pool checkout per call, which halved the client's CPU per call,
272 to 140 us here), everything else on the thread-safe pool, and the only state it changes
(the queues it registered, a cache of their keys, the list of its threads' connections) is
replaced under a lock or written with one atomic dict operation.
"""

from __future__ import annotations

import functools
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar, cast

import redis
from hiredis import pack_command

from kubetasks import outages
from kubetasks.clock import SYSTEM_CLOCK, Clock, to_ms
from kubetasks.queue import keys
from kubetasks.queue.broker import (
    CONNECTION_ERRORS,
    DEFAULT_RETENTION,
    POOL_OPTIONS,
    load_source,
    unavailable,
)
from kubetasks.queue.keys import QueueKeys
from kubetasks.queue.message import EnqueueResult, TaskInfo, TaskMessage
from kubetasks.queue.wire import cancel_call, plan_enqueue, task_info
from kubetasks.queuename import DEFAULT_NAMESPACE, validate_namespace

P = ParamSpec("P")
R = TypeVar("R")

# outages.REDIS was written for one event loop; threads that report to it take turns.
_OUTAGE_LOCK = threading.Lock()


def _unavailable(method: Callable[P, R]) -> Callable[P, R]:
    """The sync twin of ``broker._unavailable``: connection failures become
    :class:`BrokerUnavailableError`, and each failure and the first success after them are
    told to :data:`kubetasks.outages.REDIS`."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = method(*args, **kwargs)
        except CONNECTION_ERRORS as exc:
            with _OUTAGE_LOCK:
                error = unavailable(exc)
            raise error from exc
        if outages.REDIS.ongoing:  # the common case reads one attribute and takes no lock
            with _OUTAGE_LOCK:
                outages.REDIS.succeeded()
        return result

    return wrapper


class _Held:
    """What a thread's ``threading.local`` holds: its connection (a weak reference to this
    object closes it when the thread ends), and a poller of the connection's socket."""

    __slots__ = ("__weakref__", "conn", "polled", "poller")

    def __init__(self, conn: redis.connection.AbstractConnection) -> None:
        self.conn = conn
        self.poller: select.poll | None = None
        self.polled: object = None
        """The socket ``poller`` watches (a reconnect makes a new one)."""

    def wait_briefly(self, seconds: float) -> None:
        """Return once the connection has a reply to read, or after ``seconds``, polling
        its socket without sleeping. The read that follows then finds the reply there
        instead of putting the thread to sleep and being woken for it: on a virtual
        machine a wake-up (the vCPU halted, an interrupt to restart it) took about 50 us
        here, longer than an enqueue's reply takes to come: a trivial EVALSHA round trip
        took 77 us sleeping and 24 us polling (``bench/ENQUEUE_RESULTS.md``)."""
        # redis-py has no public accessor for a connection's socket; None when closed.
        sock = getattr(self.conn, "_sock", None)
        if sock is None:
            return
        if self.polled is not sock:
            self.poller = select.poll()
            self.poller.register(sock, select.POLLIN)
            self.polled = sock
        assert self.poller is not None
        poll, clock = self.poller.poll, time.perf_counter
        end = clock() + seconds
        while not poll(0) and clock() < end:
            pass


class SyncBroker:
    """Enqueue to, read and cancel the tasks of one namespace's queues, synchronously.

    Every call is one round trip, except the first enqueue to each queue, which first adds
    the queue to the registry (``keys.QUEUES``: every loop of the operator walks it; it lies
    outside the queue's Cluster slot, so the enqueue script cannot add it itself), as
    :class:`Broker` does; an enqueue of more than one script call (several queues, or more
    than ``wire.ENQUEUE_CHUNK`` tasks) is one pipeline. A script the server does not know
    (restarted, ``SCRIPT FLUSH``) is loaded again and the call retried once.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        clock: Clock = SYSTEM_CLOCK,
        retention: int = DEFAULT_RETENTION,
        spin: float = 0.0,
    ) -> None:
        self.redis = client
        self.spin = spin
        """Seconds a single-call enqueue polls for its reply before it sleeps for it."""
        self.namespace = validate_namespace(namespace)
        self.clock = clock
        self.retention = retention
        self._keys: dict[str, QueueKeys] = {}
        self._registered: frozenset[str] = frozenset()
        """Qualified names this broker has added to the registry (replaced, never changed
        in place, so reading it needs no lock)."""
        self._lock = threading.Lock()
        # redis-py's Script sends EVALSHA and, on NOSCRIPT, SCRIPT LOAD and EVALSHA once more
        # (and stores the digest the server returns: the same one, so threads may race there).
        self._enqueue = client.register_script(load_source("enqueue"))
        self._cancel = client.register_script(load_source("cancel"))
        self._local = threading.local()
        self._own: weakref.WeakSet[redis.connection.AbstractConnection] = weakref.WeakSet()
        """The connections of :meth:`_send_enqueue`, one per thread, closed by :meth:`close`;
        weak, so that the connection of a thread that ended (a thread per request) is
        closed when the thread's ``threading.local`` lets it go, not held until then."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SyncBroker:
        pool = redis.BlockingConnectionPool.from_url(url, **POOL_OPTIONS)
        return cls(redis.Redis.from_pool(pool), **kwargs)

    @_unavailable
    def close(self) -> None:
        with self._lock:
            own, self._own = list(self._own), weakref.WeakSet()
        for conn in own:
            conn.disconnect()  # type: ignore[no-untyped-call]
        self.redis.close()

    def _connection(self) -> redis.connection.AbstractConnection:
        return self._held().conn

    def _held(self) -> _Held:
        """This thread's own connection, made on its first enqueue. A connection held by one
        thread needs no pool checkout (a lock, a peek at the socket) per call. When the
        thread ends, its ``threading.local`` drops the holder and the connection is closed
        (a server that starts a thread per request leaves no socket behind)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None:
            return held
        pool = self.redis.connection_pool
        conn: redis.connection.AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        held = _Held(conn)
        weakref.finalize(held, conn.disconnect)
        with self._lock:
            self._own.add(conn)
        self._local.held = held
        return held

    def _send_enqueue(self, call_keys: list[str], args: list[Any]) -> Any:
        """One ``EVALSHA`` of the enqueue script on this thread's connection, packed in one
        go; on NOSCRIPT (server restarted, ``SCRIPT FLUSH``) the script is loaded and the
        call sent once more. A connection that failed mid-call is dropped: the next call
        connects afresh, never reading a reply meant for this one."""
        held = self._held()
        conn = held.conn
        script = self._enqueue
        try:
            for attempt in (1, 2):
                command = ("EVALSHA", script.sha, len(call_keys), *call_keys, *args)
                # hiredis (a dependency) packs str and int arguments, all an enqueue sends,
                # in one C call, without redis-py's check of each argument's type
                packed = [pack_command(command)]
                conn.send_packed_command(packed, check_health=False)  # type: ignore[no-untyped-call]
                if self.spin:
                    held.wait_briefly(self.spin)
                try:
                    return conn.read_response()
                except redis.exceptions.NoScriptError:
                    if attempt == 2:
                        raise
                    load = ("SCRIPT", "LOAD", script.script)
                    conn.send_command(*load, check_health=False)  # type: ignore[no-untyped-call]
                    script.sha = conn.read_response()
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        raise AssertionError("unreachable")

    def keys(self, queue: str) -> QueueKeys:
        qk = self._keys.get(queue)
        if qk is None:
            # Two threads may both build it; setdefault keeps one, atomically.
            qk = self._keys.setdefault(queue, QueueKeys(self.namespace, queue))
        return qk

    def _register(self, queue_keys: Iterable[QueueKeys]) -> None:
        registered = self._registered
        new_queues = {qk.qualified for qk in queue_keys if qk.qualified not in registered}
        if not new_queues:
            return
        # Threads that find a new queue at once: one adds it while the others wait.
        with self._lock:
            new_queues -= self._registered
            if new_queues:
                self.redis.sadd(keys.QUEUES, *new_queues)
                self._registered |= new_queues

    @_unavailable
    def enqueue(
        self, messages: Iterable[TaskMessage], *, spent: Mapping[str, int] | None = None
    ) -> list[EnqueueResult]:
        """Add tasks exactly as :meth:`Broker.enqueue` does (same checks, same script calls)."""
        plan = plan_enqueue(messages, self.keys, to_ms(self.clock.now()), spent)
        if not plan.calls:
            return []
        self._register(plan.queues)
        if len(plan.calls) == 1:
            (call,) = plan.calls
            replies = [self._send_enqueue(call.keys, call.args)]
        else:
            # The pipeline asks SCRIPT EXISTS first (and loads the script if need be): one
            # more round trip, for a batch.
            with self.redis.pipeline(transaction=False) as pipe:
                for call in plan.calls:
                    self._enqueue(keys=call.keys, args=call.args, client=pipe)
                replies = pipe.execute()
        return plan.results(replies)

    @_unavailable
    def get_task(self, queue: str, task_id: str) -> TaskInfo | None:
        raw = cast(dict[str, str], self.redis.hgetall(self.keys(queue).task(task_id)))
        return task_info(queue, task_id, raw)

    @_unavailable
    def cancel(self, queue: str, task_id: str) -> str:
        """Cancel a task: 'cancelled', 'cancelling' (running), 'missing' or its final state."""
        keys_, args = cancel_call(
            self.keys(queue), to_ms(self.clock.now()), self.retention, task_id
        )
        return str(self._cancel(keys=keys_, args=args))
