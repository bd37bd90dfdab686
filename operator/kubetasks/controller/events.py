"""Kubernetes Events for Task transitions, posted once per observed phase change.

The operator sees every status write (its own and the workers') in its watch, so it posts
the events for all transitions from one place; workers never need event permissions.

Events are for people reading ``kubectl describe``; the status is the record. Posting one per
transition of hundreds of Tasks a second would double the API server's load, so posting has
a budget (a token bucket, like client-go's event spam filter): transitions beyond it are
counted in ``dropped`` and not posted. Warnings (failures, retries) are posted before the
budget runs dry: they get the whole burst, Normal events only the part above a reserve.
"""

from __future__ import annotations

from typing import Any

from kubetasks.budget import Budget
from kubetasks.clock import SYSTEM_CLOCK, Clock
from kubetasks.k8s.events import PostEvent
from kubetasks.vocabulary import FINAL_PHASES, TaskPhase

WARNINGS = frozenset(
    {TaskPhase.FAILED, TaskPhase.RETRYING, TaskPhase.DEADLINE_EXCEEDED, TaskPhase.CANCELLED}
)


def describe(status: dict[str, Any]) -> str:
    phase = status.get("phase")
    attempt = status.get("attempts")
    error = status.get("error") or {}
    if phase == TaskPhase.SUCCEEDED:
        return f"succeeded on attempt {attempt}"
    if phase in WARNINGS and error:
        return f"{error.get('type')}: {error.get('message', '')}"[:1024]
    for condition in status.get("conditions") or []:
        if condition.get("status") == "True" and condition.get("message"):
            return str(condition["message"])
    return str(phase)


class PhaseTracker:
    """Remembers the last phase seen per unfinished Task uid and posts an event when it
    changes."""

    def __init__(
        self,
        level: str = "all",
        per_second: float = 20.0,
        clock: Clock = SYSTEM_CLOCK,
        post: PostEvent | None = None,
    ) -> None:
        self.post = post
        """Posts the Events (None: they are counted only)."""
        self.level = level
        self.seen: dict[str, str] = {}
        self.budget = Budget(per_second, max(5 * per_second, 1.0), clock)
        self.posted = 0
        self.dropped = 0

    def observe(self, body: dict[str, Any]) -> None:
        status = body.get("status") or {}
        phase = status.get("phase")
        uid = body["metadata"]["uid"]
        if phase is None:
            # A new Task (most never show Queued: a worker's write comes first). Remember
            # it so that its first phase counts as a transition, not as an old Task.
            self.seen.setdefault(uid, "")
            return
        if self.seen.get(uid) == phase:
            return
        first_sight = uid not in self.seen
        if phase in FINAL_PHASES:
            self.seen.pop(uid, None)  # nothing follows a final phase: keep nothing of it
            if first_sight:
                return  # a Task that ended before it was seen: its events were posted
        else:
            self.seen[uid] = phase
        if self.level == "none" or (self.level == "failures" and phase not in WARNINGS):
            return
        warning = phase in WARNINGS
        if not self.budget.take(keep=0.0 if warning else self.budget.burst / 5):
            self.dropped += 1
            return
        self.posted += 1
        kind = "Warning" if warning else "Normal"
        if self.post is not None:
            self.post(body, kind, phase, describe(status))

    def forget(self, uid: str) -> None:
        self.seen.pop(uid, None)
