"""Reading and steering queues from the outside: the dashboard's and the CLI's view of Redis.

Built on a :class:`~kubetasks.queue.broker.Broker` (its connection pool, its scripts, its
error translation), and like it the only other place that holds Redis commands. Nothing
here reads a whole state: a page of tasks is read by rank from the state's sorted set
(``ZRANGE start stop``), or, for the states that have none (succeeded, cancelled: finished
records only expire), with ``SCAN`` over the queue's task keys, a bounded number of steps per
call. Every reply is bounded by the page size and :data:`SCAN_BUDGET`.

Cursors are opaque strings: the rank of the next task for sorted sets (tasks leaving the
state while a user pages shift later pages, as in asynqmon), the ``SCAN`` cursor otherwise.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import cast

from kubetasks.queue import keys
from kubetasks.queue.broker import Broker, _unavailable
from kubetasks.queue.keys import QueueKeys
from kubetasks.queue.message import Attempt, QueueStats, TaskInfo, TaskMessage
from kubetasks.queue.wire import NOTIFY_CAP, attempt_history, task_info

#: Task records looked at, at most, to fill one page when a search or a state filter skips
#: some (the page then comes back short, with a cursor to go on).
SCAN_BUDGET = 2000
#: Dead tasks removed per script call of :meth:`Inspector.purge_dead`.
PURGE_CHUNK = 1000

#: Where each state's tasks are listed: (sorted set, the hash state it must have or None).
#: Succeeded and cancelled tasks are in no set; they are found by SCAN.
_INDEXED = {
    "pending": ("pending", None),
    "scheduled": ("scheduled", "scheduled"),
    "retrying": ("scheduled", "retrying"),
    "active": ("active", None),
    "dead": ("dead", None),
    "failed": ("dead", "failed"),
    "deadline_exceeded": ("dead", "deadline_exceeded"),
}
_SCANNED = ("succeeded", "cancelled")
#: Every state :meth:`Inspector.list_tasks` takes.
STATES = (*_INDEXED, *_SCANNED)
_SUMMARY_FIELDS = ("msg", "state", "attempts", "enqueued_at", "finished_at", "error")


class UnknownStateError(ValueError):
    """A state name :meth:`Inspector.list_tasks` does not know."""


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """One row of a task list."""

    id: str
    state: str
    handler: str
    attempts: int
    enqueued_at: float | None
    finished_at: float | None
    error_type: str | None
    error_message: str | None
    resource: str | None
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: list[TaskSummary]
    cursor: str | None
    """Pass it back for the next page; None when this one was the last."""
    total: int | None
    """Tasks in the state's sorted set (before any search); None for scanned states."""


@dataclass(frozen=True, slots=True)
class TaskDetail:
    info: TaskInfo
    history: list[Attempt]
    """Finished attempts, oldest first (the last 20)."""
    resource: tuple[str, str, str] | None
    """(namespace, name, uid) of the Task resource it came from."""
    rerun_of: str | None
    rerun_as: str | None


def matches(search: str | None, task_id: str, handler: str, labels: Mapping[str, str]) -> bool:
    """Whether a task matches a search: ``key=value`` matches a label, anything else an id
    prefix or a part of the handler name."""
    if not search:
        return True
    if "=" in search:
        key, _, value = search.partition("=")
        return labels.get(key.strip()) == value.strip()
    return task_id.startswith(search) or search in handler


def _summary(task_id: str, fields: Sequence[str | None]) -> TaskSummary | None:
    raw, state, attempts, enqueued, finished, error = fields
    if raw is None or state is None:
        return None  # the record expired while its id was still listed
    message = TaskMessage.decode(raw)
    err = json.loads(error) if error else None
    return TaskSummary(
        id=task_id,
        state=state,
        handler=message.handler,
        attempts=int(attempts or 0),
        enqueued_at=int(enqueued) / 1000 if enqueued else None,
        finished_at=int(finished) / 1000 if finished else None,
        error_type=err.get("type") if isinstance(err, dict) else None,
        error_message=err.get("message") if isinstance(err, dict) else None,
        resource=message.resource,
        labels=message.labels,
    )


class Inspector:
    """Read and steer the queues of the broker's namespace (:meth:`in_namespace` for
    another one)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def in_namespace(self, namespace: str) -> Inspector:
        return Inspector(self.broker.in_namespace(namespace))

    @property
    def namespace(self) -> str:
        return self.broker.namespace

    async def _summaries(self, qk: QueueKeys, ids: Sequence[str]) -> list[TaskSummary | None]:
        async with self.broker.redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hmget(qk.task(task_id), *_SUMMARY_FIELDS)
            found = await pipe.execute()
        return [_summary(t, f) for t, f in zip(ids, found, strict=True)]

    async def _matching(
        self, qk: QueueKeys, ids: Sequence[str], state: str | None, search: str | None
    ) -> list[int]:
        """The offsets in ``ids`` of the tasks in ``state`` (None: any) matching ``search``."""
        async with self.broker.redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hmget(qk.task(task_id), "state", "msg")
            found = await pipe.execute()
        out = []
        for i, (task_id, (st, raw)) in enumerate(zip(ids, found, strict=True)):
            if raw is None or (state is not None and st != state):
                continue
            if search and not task_id.startswith(search):
                body = json.loads(raw)  # the message's wire form: handler 'h', labels 'l'
                if not matches(search, task_id, body.get("h", ""), body.get("l") or {}):
                    continue
            out.append(i)
        return out

    @_unavailable
    async def list_tasks(
        self,
        queue: str,
        state: str,
        *,
        cursor: str | None = None,
        limit: int = 50,
        search: str | None = None,
    ) -> TaskPage:
        """One page of the tasks of ``queue`` in ``state`` (one of :data:`STATES`), in the
        set's order (pending: the order they will run in; scheduled, retrying: by due
        time; active: by lease expiry; dead: by when they died)."""
        if state not in STATES:
            raise UnknownStateError(f"unknown state {state!r}: one of {', '.join(STATES)}")
        limit = max(1, limit)
        qk = self.broker.keys(queue)
        if state in _SCANNED:
            return await self._scan(qk, state, cursor, limit, search)
        set_name, wanted = _INDEXED[state]
        key = cast(str, getattr(qk, set_name))
        position = int(cursor) if cursor else 0
        filtered = bool(search) or wanted is not None
        step = min(max(limit, 100), SCAN_BUDGET) if filtered else limit
        out: list[TaskSummary] = []
        looked = 0
        total = int(await self.broker.redis.zcard(key))
        while looked < SCAN_BUDGET:
            ids = cast(
                list[str], await self.broker.redis.zrange(key, position, position + step - 1)
            )
            if not ids:
                return TaskPage(out, None, total)
            # Filtered: the state and the message of each first (no error, no result), the
            # whole summary of the matches only.
            offsets = await self._matching(qk, ids, wanted, search) if filtered else range(len(ids))
            matched = len(offsets)
            offsets = offsets[: limit - len(out)]  # no more summaries than the page holds
            picked = [ids[i] for i in offsets]
            for offset, summary in zip(offsets, await self._summaries(qk, picked), strict=True):
                if summary is None:
                    continue  # its record expired since it was listed
                out.append(summary)
                if len(out) == limit:
                    following = position + offset + 1
                    more = following < total
                    return TaskPage(out, str(following) if more else None, total)
            if len(offsets) < matched:
                # some records expired meanwhile and the page is not full: go on right after
                # the last one read, so that no match of this chunk is skipped
                position += offsets[-1] + 1
                looked += offsets[-1] + 1
                continue
            position += len(ids)
            looked += len(ids)
            if len(ids) < step:
                return TaskPage(out, None, total)
        return TaskPage(out, str(position), total)

    async def _scan(
        self, qk: QueueKeys, state: str, cursor: str | None, limit: int, search: str | None
    ) -> TaskPage:
        # A SCAN step returns a bounded batch that cannot be resumed in the middle: the page
        # holds what the steps found (possibly a little more than ``limit``). Each step's
        # keys are read for their state first (a short reply), then the matches in full.
        position = int(cursor) if cursor else 0
        out: list[TaskSummary] = []
        count = max(limit, 100)
        pattern = qk.task_prefix + "*"
        for _ in range(max(SCAN_BUDGET // count, 1)):
            position, found = await self.broker.redis.scan(position, match=pattern, count=count)
            ids = [str(k)[len(qk.task_prefix) :] for k in found]
            if ids:
                async with self.broker.redis.pipeline(transaction=False) as pipe:
                    for task_id in ids:
                        pipe.hget(qk.task(task_id), "state")
                    states = await pipe.execute()
                wanted = [t for t, st in zip(ids, states, strict=True) if st == state]
                for summary in await self._summaries(qk, wanted):
                    if summary is None or summary.state != state:
                        continue
                    if search and not matches(search, summary.id, summary.handler, summary.labels):
                        continue
                    out.append(summary)
            if position == 0:
                return TaskPage(out, None, None)
            if len(out) >= limit:
                break
        return TaskPage(out, str(position), None)

    @_unavailable
    async def task(self, queue: str, task_id: str) -> TaskDetail | None:
        """Everything known of one task, or None."""
        raw = cast(
            dict[str, str], await self.broker.redis.hgetall(self.broker.keys(queue).task(task_id))
        )
        info = task_info(queue, task_id, raw)
        if info is None:
            return None
        resource = None
        if info.message.resource:
            namespace, _, name = info.message.resource.partition("/")
            resource = (namespace, name, task_id)  # a Task's uid is its task id
        return TaskDetail(
            info=info,
            history=attempt_history(raw),
            resource=resource,
            rerun_of=raw.get("rerun_of"),
            rerun_as=raw.get("rerun_as"),
        )

    @_unavailable
    async def rerun_dead(self, queue: str, task_id: str) -> str | None:
        """Run a dead task again under a new id; returns that id, or None when ``task_id``
        is not a dead task of ``queue``. The new task keeps what to run and how, without
        the old deadline, unique key or Task resource: it is the queue's own, and its
        result is read here (a Task resource is re-run with ``kubetasks tasks rerun``)."""
        qk = self.broker.keys(queue)
        raw = await self.broker.redis.hget(qk.task(task_id), "msg")
        if raw is None:
            return None
        new_id = str(uuid.uuid4())
        old = TaskMessage.decode(raw)
        message = replace(
            old, id=new_id, deadline=None, run_at=None, unique_key=None, unique_for=None,
            resource=None,
        )  # fmt: skip
        reply = await self.broker._run(
            "rerun",
            [qk.dead, qk.pending, qk.seq, qk.notify],
            [
                self.broker._now_ms(),
                qk.task_prefix,
                task_id,
                new_id,
                message.encode(),
                message.priority,
                message.max_retries,
                NOTIFY_CAP,
                keys.ENQUEUED,
                qk.qualified,
            ],
        )
        return new_id if reply == "queued" else None

    async def rerun_all_dead(self, queue: str, *, chunk: int = 500) -> list[tuple[str, str]]:
        """Re-run every dead task of ``queue``, a chunk of ids at a time; returns the (old,
        new) id pairs."""
        done = []
        skipped = 0  # ids left in the dead set (a record expired): the next chunk starts after
        while ids := await self.dead_ids(queue, start=skipped, count=chunk):
            for old in ids:
                new_id = await self.rerun_dead(queue, old)
                if new_id is None:
                    skipped += 1
                else:
                    done.append((old, new_id))
        return done

    @_unavailable
    async def delete_dead(self, queue: str, task_id: str) -> bool:
        """Remove one dead task and its record; False when it is not a dead task."""
        qk = self.broker.keys(queue)
        return bool(await self.broker._run("delete_dead", [qk.dead], [qk.task_prefix, task_id]))

    @_unavailable
    async def purge_dead(self, queue: str) -> int:
        """Remove every dead task of ``queue``; returns how many."""
        qk = self.broker.keys(queue)
        removed = 0
        while True:
            n = int(await self.broker._run("purge_dead", [qk.dead], [qk.task_prefix, PURGE_CHUNK]))
            removed += n
            if n < PURGE_CHUNK:
                return removed

    @_unavailable
    async def dead_ids(self, queue: str, *, start: int = 0, count: int = PURGE_CHUNK) -> list[str]:
        """A slice of the dead set's ids, oldest first (for re-running them all in chunks)."""
        key = self.broker.keys(queue).dead
        return cast(list[str], await self.broker.redis.zrange(key, start, start + count - 1))

    async def queue_overview(self, namespaces: Iterable[str] | None = None) -> list[QueueStats]:
        """Counts of every queue (of ``namespaces``, default: every namespace): pending,
        scheduled, running, dead, processed and failed counters, oldest pending age."""
        wanted = set(namespaces) if namespaces is not None else None
        out = []
        for namespace, queue in await self.broker.all_queues():
            if wanted is None or namespace in wanted:
                out.append(await self.broker.in_namespace(namespace).stats(queue, detail=True))
        return out

    async def known(self, queue: str) -> bool:
        """Whether ``queue`` of this namespace is in the registry of queues ever used."""
        return queue in await self.broker.queues()
