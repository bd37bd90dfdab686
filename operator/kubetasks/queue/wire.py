"""What the brokers send to Redis and how they read the replies, without any I/O.

Two brokers run the same Lua scripts on the same keys: the async
:class:`~kubetasks.queue.broker.Broker` (workers, the operator, ``AsyncClient``) and the
sync :class:`~kubetasks.queue.sync_broker.SyncBroker` behind ``kubetasks.Client``. Both
build their script arguments and decode the replies here, so a task enqueued by one is,
field for field, the task the other would have written, and a change of the layout is made
once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubetasks.clock import to_ms
from kubetasks.queue import keys
from kubetasks.queue.keys import QueueKeys
from kubetasks.queue.message import Attempt, EnqueueResult, TaskInfo, TaskMessage, check_size

#: Most wake-up tokens kept per queue; enough to wake every idle worker of a large pool.
NOTIFY_CAP = 256
#: Tasks sent to Redis in one enqueue script call.
ENQUEUE_CHUNK = 500


@dataclass(frozen=True, slots=True)
class EnqueueCall:
    """One run of ``enqueue.lua``: its KEYS and ARGV, and the tasks it carries in ARGV order."""

    keys: list[str]
    args: list[Any]
    messages: list[TaskMessage]


@dataclass(frozen=True, slots=True)
class EnqueuePlan:
    """Everything one enqueue sends: the queues to add to the registry first (``keys.QUEUES``,
    outside every queue's slot, so no script can), then the script calls."""

    queues: list[QueueKeys]
    calls: list[EnqueueCall]
    order: list[TaskMessage]
    """The tasks in the order the caller gave them."""

    def results(self, replies: Sequence[Sequence[str]]) -> list[EnqueueResult]:
        """One result per task, in the caller's order, from one reply per call."""
        if len(self.order) == 1:  # the one-call enqueue: no map from ids to results
            ((code,),) = replies
            return [_result(self.order[0], code)]
        outcomes: dict[str, EnqueueResult] = {}
        for call, reply in zip(self.calls, replies, strict=True):
            for msg, code in zip(call.messages, reply, strict=True):
                outcomes[msg.id] = _result(msg, code)
        return [outcomes[m.id] for m in self.order]


def _result(msg: TaskMessage, code: str) -> EnqueueResult:
    """What ``enqueue.lua`` answered for ``msg``."""
    if code.startswith("duplicate:"):
        return EnqueueResult(msg.id, msg.queue, "duplicate", code[len("duplicate:") :])
    return EnqueueResult(msg.id, msg.queue, code, None)


def plan_enqueue(
    messages: Iterable[TaskMessage],
    keys_of: Callable[[str], QueueKeys],
    now_ms: int,
    spent: Mapping[str, int] | None = None,
) -> EnqueuePlan:
    """The script calls that add ``messages``: one per queue and chunk of
    :data:`ENQUEUE_CHUNK`. Every queue name and every message size is checked here, before a
    broker writes anything: a refused queue must not reach the registry, which every loop of
    the operator walks, and an oversized message fails the whole call.

    ``spent`` maps task ids to attempts already used, for tasks restored after Redis lost
    them: attempt numbers then continue where the Task resource's status left off.
    """
    spent = spent or {}
    order = messages if isinstance(messages, list) else list(messages)
    if len(order) == 1:  # the one-call enqueue, without the grouping below
        qk = keys_of(order[0].queue)
        encoded = [check_size(order[0].encode())]
        return EnqueuePlan([qk], [_call(qk, now_ms, order, encoded, spent)], order)
    by_queue: dict[str, list[TaskMessage]] = defaultdict(list)
    for msg in order:
        by_queue[msg.queue].append(msg)
    queue_keys = {queue: keys_of(queue) for queue in by_queue}
    # every size is checked before anything is sent
    encoded_of = {id(m): check_size(m.encode()) for m in order}
    calls = []
    for queue, msgs in by_queue.items():
        qk = queue_keys[queue]
        for start in range(0, len(msgs), ENQUEUE_CHUNK):
            chunk = msgs[start : start + ENQUEUE_CHUNK]
            encoded = [encoded_of[id(m)] for m in chunk]
            calls.append(_call(qk, now_ms, chunk, encoded, spent))
    return EnqueuePlan(list(queue_keys.values()), calls, order)


def _call(
    qk: QueueKeys,
    now_ms: int,
    chunk: list[TaskMessage],
    encoded: list[str],
    spent: Mapping[str, int],
) -> EnqueueCall:
    """The one ``enqueue.lua`` call that adds ``chunk`` (tasks of one queue, ``encoded``) to
    ``qk``."""
    args: list[Any] = [
        now_ms, qk.task_prefix, qk.unique_prefix, NOTIFY_CAP, keys.ENQUEUED, qk.qualified
    ]  # fmt: skip
    for m, body in zip(chunk, encoded, strict=True):
        args += (
            m.id,
            body,
            m.priority,
            to_ms(m.run_at) if m.run_at else 0,
            m.max_retries,
            to_ms(m.deadline) if m.deadline else 0,
            m.unique_key or "",
            m.unique_for or 0,
            spent.get(m.id, 0),
        )
    return EnqueueCall([qk.pending, qk.scheduled, qk.seq, qk.notify, qk.deadlines], args, chunk)


def cancel_call(
    qk: QueueKeys, now_ms: int, retention: int, task_id: str
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``cancel.lua`` for one task."""
    keys_ = [qk.pending, qk.scheduled, qk.active, qk.config]
    return keys_, [now_ms, qk.task_prefix, qk.unique_prefix, retention, task_id]


def error_type(error: str) -> str:
    """The ``type`` of an error record (JSON), for the attempt history; '' when it has none."""
    try:
        kind = json.loads(error).get("type")
    except (ValueError, AttributeError):
        return ""
    return kind if isinstance(kind, str) else ""


def attempt_history(raw: Mapping[str, str]) -> list[Attempt]:
    """The attempts recorded in a task's hash (fields ``a:<n>``, written by ``lib.lua``'s
    ``record_attempt``: ``worker|started ms|finished ms|outcome|error type``), oldest first."""
    found = []
    for name, value in raw.items():
        if not name.startswith("a:") or not name[2:].isdigit():
            continue
        parts = value.rsplit("|", 4)  # the worker id, first, is the only part with a '|'
        if len(parts) != 5:
            continue
        worker, started, finished, outcome, kind = parts
        found.append(
            Attempt(
                number=int(name[2:]),
                worker=worker or None,
                started_at=_seconds(started),
                finished_at=_seconds(finished),
                outcome=outcome,
                error_type=kind or None,
            )
        )
    return sorted(found, key=lambda a: a.number)


def _seconds(value: str | None) -> float | None:
    return None if value is None or value in ("", "0") else int(value) / 1000


def task_info(queue: str, task_id: str, raw: Mapping[str, str]) -> TaskInfo | None:
    """The read model of a task from its hash (``HGETALL`` of ``QueueKeys.task(id)``);
    None for an empty hash (no such task)."""
    if not raw:
        return None
    return TaskInfo(
        id=task_id,
        queue=queue,
        state=raw["state"],
        message=TaskMessage.decode(raw["msg"]),
        attempts=int(raw.get("attempts", 0)),
        worker=raw.get("worker") or None,
        enqueued_at=_seconds(raw.get("enqueued_at")),
        started_at=_seconds(raw.get("started_at")),
        finished_at=_seconds(raw.get("finished_at")),
        next_retry_at=_seconds(raw.get("next_retry_at")),
        result=json.loads(raw["result"]) if "result" in raw else None,
        error=json.loads(raw["error"]) if raw.get("error") else None,
        cancel_requested=raw.get("cancel") == "1",
    )
