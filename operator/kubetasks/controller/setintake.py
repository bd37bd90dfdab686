"""From a TaskSet resource and what Redis holds of its items to the next step (pure).

The TaskSet controller reads the set's counters from Redis, calls :func:`decide`, enqueues
what it says and writes the status it builds; nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubetasks.controller.intake import build_message
from kubetasks.models.taskset import MAX_FAILURES
from kubetasks.queue import SetState, TaskMessage
from kubetasks.status_patches import CONDITION_TYPES
from kubetasks.timestamps import rfc3339_millis
from kubetasks.vocabulary import TaskSetPhase

#: Most items enqueued by one tick of one set (a 10,000-item set goes out in a few ticks,
#: so one large set never holds up the others for long).
BATCH = 5000


def total_of(spec: dict[str, Any]) -> int:
    items = spec.get("items")
    return len(items) if items is not None else int(spec.get("count") or 0)


def min_succeeded(spec: dict[str, Any]) -> int:
    policy = spec.get("successPolicy") or {}
    return int(policy.get("minSucceeded") or total_of(spec))


def item_id(uid: str, index: int) -> str:
    """The task id of an item: the same for every enqueue of it, so enqueueing it twice
    changes nothing."""
    return f"{uid}-{index}"


def item_messages(body: dict[str, Any], indexes: Iterable[int], now: float) -> list[TaskMessage]:
    """The queue messages of the items at ``indexes``. Raises what ``build_message`` raises
    (ConfigurationError naming a field, MessageTooLargeError)."""
    meta = body["metadata"]
    spec = body["spec"]
    template = dict(spec["template"]["spec"])
    items = spec.get("items")
    base_args = list(template.get("args") or [])
    base_kwargs = dict(template.get("kwargs") or {})
    labels = dict((spec["template"].get("metadata") or {}).get("labels") or {})
    out = []
    for index in indexes:
        args, kwargs = base_args, base_kwargs
        if items is not None:
            item = items[index] or {}
            if item.get("args") is not None:
                args = list(item["args"])
            if item.get("kwargs"):
                kwargs = {**base_kwargs, **item["kwargs"]}
        item_body = {
            "metadata": {
                "uid": item_id(meta["uid"], index),
                "namespace": meta["namespace"],
                "name": meta["name"],
                "creationTimestamp": meta.get("creationTimestamp"),
                "labels": labels,
            },
            "spec": {**template, "args": args, "kwargs": kwargs},
        }
        message = build_message(item_body, now)
        out.append(
            TaskMessage(
                **{
                    **{f: getattr(message, f) for f in message.__dataclass_fields__},
                    "resource": None,
                    "taskset": meta["name"],
                    "index": index,
                }
            )
        )
    return out


def index_ranges(indexes: Iterable[int]) -> str:
    """Indexes as Kubernetes Indexed Jobs write them: ``0-4,7``."""
    parts: list[str] = []
    start = prev = None
    for i in sorted(set(indexes)):
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = i
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def parse_ranges(text: str | None) -> list[int]:
    """The indexes of a range string (the inverse of :func:`index_ranges`)."""
    out: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


@dataclass(frozen=True)
class SetDecision:
    phase: str
    enqueue: list[int]
    """Indexes to enqueue now."""
    upto: int
    """The cursor after them: every index below it was sent to the queue (or had ended)."""
    reason: str = ""
    message: str = ""


def decide(spec: dict[str, Any], state: SetState, ended: set[int] | None = None) -> SetDecision:
    """What a running set does next: end, or top up its items so that at most
    ``parallelism`` are queued or running.

    A set succeeds as soon as its success policy is met (the items still in flight are then
    dropped); it fails only once every item ended without meeting it, so that every item's
    outcome can be read, as an Indexed Job with a per-index backoff limit does.

    ``ended``: the indexes recorded as ended, when some of them may lie at or beyond the
    cursor (after a restore from status: the cursor restarts at 0 and ended items are
    skipped); None: every ended item is below the cursor."""
    total = total_of(spec)
    need = min_succeeded(spec)
    done = state.succeeded + state.failed
    if state.succeeded >= need:
        return SetDecision(
            TaskSetPhase.SUCCEEDED,
            [],
            state.next,
            "Succeeded",
            f"{state.succeeded}/{total} items succeeded",
        )
    if done >= total:
        return SetDecision(
            TaskSetPhase.FAILED,
            [],
            state.next,
            "ItemsFailed",
            f"{state.failed}/{total} items failed; {need} had to succeed",
        )
    cap = spec.get("parallelism")
    below = done if ended is None else sum(1 for i in ended if i < state.next)
    in_flight = state.next - below
    room = total if cap is None else max(0, int(cap) - in_flight)
    room = min(room, BATCH)
    picked: list[int] = []
    i = state.next
    while i < total and len(picked) < room:
        if ended is None or i not in ended:
            picked.append(i)
        i += 1
    if ended is not None:
        while i < total and i in ended:  # ended items right after the batch need no slot
            i += 1
    return SetDecision(TaskSetPhase.RUNNING, picked, i)


def failures(errors: dict[int, str]) -> list[dict[str, Any]]:
    out = []
    for index in sorted(errors)[:MAX_FAILURES]:
        try:
            error = json.loads(errors[index]) or {}
        except ValueError:
            error = {}
        out.append(
            {
                "index": index,
                "type": str(error.get("type", ""))[:256],
                "message": str(error.get("message", ""))[:1024],
            }
        )
    return out


def set_conditions(phase: str, at: float, reason: str, message: str) -> list[dict[str, Any]]:
    when = rfc3339_millis(at)
    truth = {
        "Queued": False,
        "Running": phase == TaskSetPhase.RUNNING,
        "Succeeded": phase == TaskSetPhase.SUCCEEDED,
        "Failed": phase in (TaskSetPhase.FAILED, TaskSetPhase.CANCELLED),
    }
    return [
        {
            "type": kind,
            "status": "True" if truth[kind] else "False",
            "reason": reason or phase,
            "message": message[:1024],
            "lastTransitionTime": when,
        }
        for kind in CONDITION_TYPES
        if kind != "Queued"
    ]


def aggregate(spec: dict[str, Any], state: SetState) -> dict[str, Any]:
    """The counting part of the status (without phase and conditions)."""
    total = total_of(spec)
    queued = max(0, state.next - state.succeeded - state.failed - state.running)
    return {
        "total": total,
        "succeeded": state.succeeded,
        "failed": state.failed,
        "running": state.running,
        "queued": queued,
        "completedIndexes": index_ranges(state.done_indexes),
        "failedIndexes": index_ranges(state.failed_indexes),
        "failures": failures(state.errors),
        "progress": progress(spec, state),
    }


def progress(spec: dict[str, Any], state: SetState) -> float:
    """The mean over items: an ended item counts 1, a running one the fraction it last
    reported with ``ctx.progress`` (through Redis only), one not started 0."""
    total = total_of(spec)
    if not total:
        return 1.0
    return min(1.0, round((state.succeeded + state.failed + state.running_progress) / total, 4))
