"""How many workers a pool needs: a pure decision, fed by the autoscaler loop.

The load of a pool is every task that wants a worker now: pending, due (delayed or retry
tasks whose time has come) and running. Counting the running ones matters: a queue whose
tasks were all taken looks empty, yet removing the pods that run them would only hand the
tasks back. Replicas follow ``ceil(load / target per replica)`` between the pool's bounds,
with the stabilization of the Kubernetes HPA: scaling up goes to the lowest count wanted over
the scale-up window (0 s by default: at once), scaling down to the highest count wanted over
the scale-down window, so a short lull does not remove pods. A pool at zero with work waiting
always gets its first replica at once.

A queue's settings (its Queue resource) bound what its load can use (:func:`usable`): a
paused queue counts only its running tasks, so its pools go to their minimum once those
end; a queue with ``maxInFlight`` never counts more than that many tasks; and a rate limit
is capacity, not backlog: of the waiting tasks only those the rate lets start within
:data:`RATE_HORIZON` seconds count, so a throttled queue with a long backlog does not scale
its pools to the maximum for work that could not start anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScalePolicy:
    min_replicas: int
    max_replicas: int
    target_per_replica: int
    """Tasks (pending + due + running) one replica is meant to carry."""
    scale_up_window: float = 0.0
    """Seconds of past recommendations whose lowest bounds a scale-up."""
    scale_down_window: float = 60.0
    """Seconds of past recommendations whose highest bounds a scale-down."""


@dataclass(frozen=True)
class QueueDepth:
    pending: int
    due_scheduled: int
    active: int

    @property
    def load(self) -> int:
        return self.pending + self.due_scheduled + self.active


#: Seconds of starts a rate-limited queue's backlog counts for.
RATE_HORIZON = 1.0


@dataclass(frozen=True)
class QueueLimits:
    """What a queue's Queue resource sets that bounds the workers it can use."""

    paused: bool = False
    max_in_flight: int | None = None
    rate: float | None = None
    """Starts per second."""


def usable(depth: QueueDepth, limits: QueueLimits) -> QueueDepth:
    """The part of one queue's load that workers can take on: all of it without limits."""
    if limits.paused:
        return QueueDepth(0, 0, depth.active)
    room = depth.pending + depth.due_scheduled
    if limits.rate is not None:
        room = min(room, math.ceil(limits.rate * RATE_HORIZON))
    if limits.max_in_flight is not None:
        room = min(room, max(limits.max_in_flight - depth.active, 0))
    pending = min(depth.pending, room)
    return QueueDepth(pending, min(depth.due_scheduled, room - pending), depth.active)


@dataclass(frozen=True)
class History:
    """Recent recommendations, (time, replicas), oldest first."""

    recommendations: tuple[tuple[float, int], ...] = ()

    def add(self, now: float, replicas: int, keep: float) -> History:
        kept = tuple((t, r) for t, r in self.recommendations if t >= now - keep)
        return History((*kept, (now, replicas)))

    def since(self, start: float) -> list[int]:
        return [r for t, r in self.recommendations if t >= start]


@dataclass(frozen=True)
class ScaleDecision:
    desired: int
    reason: str


def recommend(depth: QueueDepth, policy: ScalePolicy) -> int:
    """Replicas for this load alone, within the bounds."""
    wanted = math.ceil(depth.load / max(policy.target_per_replica, 1))
    return max(policy.min_replicas, min(policy.max_replicas, wanted))


def decide(
    depth: QueueDepth, current: int, policy: ScalePolicy, history: History, now: float
) -> tuple[ScaleDecision, History]:
    """The replicas to set now, and the history to pass to the next call."""
    raw = recommend(depth, policy)
    history = history.add(now, raw, max(policy.scale_up_window, policy.scale_down_window))
    load = (
        f"{depth.load} tasks ({depth.pending} pending, {depth.due_scheduled} due, "
        f"{depth.active} running) at {policy.target_per_replica} per replica"
    )
    low, high = policy.min_replicas, policy.max_replicas
    if not low <= current <= high:
        return ScaleDecision(max(low, min(high, current)), f"outside [{low}, {high}]"), history
    if raw > current:
        if current == 0:
            return ScaleDecision(raw, f"waking from zero: {load}"), history
        desired = max(current, min(history.since(now - policy.scale_up_window)))
        if desired == current:
            window = policy.scale_up_window
            return ScaleDecision(current, f"scale-up held by the {window:g}s window"), history
        return ScaleDecision(desired, f"scale up: {load}"), history
    if raw < current:
        desired = min(current, max(history.since(now - policy.scale_down_window)))
        if desired == current:
            window = policy.scale_down_window
            return ScaleDecision(current, f"scale-down held by the {window:g}s window"), history
        return ScaleDecision(desired, f"scale down: {load}"), history
    return ScaleDecision(current, f"steady: {load}"), history
