"""Kubernetes Events for Task transitions, posted once per observed phase change.

The operator sees every status write (its own and the workers') in its watch, so it posts
the events for all transitions from one place; workers never need event permissions.
"""

from __future__ import annotations

from typing import Any, cast

import kopf

from kubetasks.transitions import (
    CANCELLED,
    DEADLINE_EXCEEDED,
    FAILED,
    RETRYING,
    SUCCEEDED,
    TERMINAL,
)

WARNINGS = frozenset({FAILED, RETRYING, DEADLINE_EXCEEDED, CANCELLED})


def describe(status: dict[str, Any]) -> str:
    phase = status.get("phase")
    attempt = status.get("attempts")
    error = status.get("error") or {}
    if phase == SUCCEEDED:
        return f"succeeded on attempt {attempt}"
    if phase in WARNINGS and error:
        return f"{error.get('type')}: {error.get('message', '')}"[:1024]
    for condition in status.get("conditions") or []:
        if condition.get("status") == "True" and condition.get("message"):
            return str(condition["message"])
    return str(phase)


class PhaseTracker:
    """Remembers the last phase seen per Task uid and posts an event when it changes."""

    def __init__(self, level: str = "all") -> None:
        self.level = level
        self.seen: dict[str, str] = {}

    def observe(self, body: dict[str, Any]) -> None:
        status = body.get("status") or {}
        phase = status.get("phase")
        uid = body["metadata"]["uid"]
        if phase is None or self.seen.get(uid) == phase:
            return
        first_sight = uid not in self.seen
        self.seen[uid] = phase
        if first_sight and phase in TERMINAL:
            return  # an old Task seen at start-up: its events were posted long ago
        if self.level == "none" or (self.level == "failures" and phase not in WARNINGS):
            return
        kind = "Warning" if phase in WARNINGS else "Normal"
        kopf.event(cast(kopf.Body, body), type=kind, reason=phase, message=describe(status))

    def forget(self, uid: str) -> None:
        self.seen.pop(uid, None)
