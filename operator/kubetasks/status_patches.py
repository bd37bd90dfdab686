"""Task phases and the status patches that move a Task resource between them (pure).

Two writers share a Task's status: the operator (Pending, Waiting, Scheduled, Queued, and
Cancelled/Failed for reasons it decides) and the workers (Running, Retrying, Succeeded,
Failed, DeadlineExceeded). Both build their patches here, so the shape of the status, the
conditions that ``kubectl wait`` reads, and the rule that status never moves backwards live
in one place. The API server enforces that rule too (CEL transition rules on the CRD), so a
late write from a stale worker is refused atomically instead of being read-then-checked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

PENDING, WAITING, SCHEDULED, QUEUED = "Pending", "Waiting", "Scheduled", "Queued"
RUNNING, RETRYING = "Running", "Retrying"
SUCCEEDED, FAILED, CANCELLED, DEADLINE_EXCEEDED = (
    "Succeeded",
    "Failed",
    "Cancelled",
    "DeadlineExceeded",
)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, DEADLINE_EXCEEDED})
ACTIVE = frozenset({PENDING, WAITING, SCHEDULED, QUEUED, RUNNING, RETRYING})

#: Worker outcome kinds (kubetasks.outcome) to phases.
OUTCOME_PHASE = {
    "succeeded": SUCCEEDED,
    "retry": RETRYING,
    "failed": FAILED,
    "cancelled": CANCELLED,
    "deadline_exceeded": DEADLINE_EXCEEDED,
}

#: Condition types a Task carries; ``kubectl wait --for=condition=Succeeded task/x`` works.
CONDITION_TYPES = ("Queued", "Running", "Succeeded", "Failed")


def timestamp(epoch: float) -> str:
    """RFC 3339 with milliseconds, in UTC."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def parse_timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def conditions(phase: str, at: float, reason: str, message: str = "") -> list[dict[str, Any]]:
    """The whole condition list for a phase: each writer sets all of it at once, so the
    list always agrees with the phase (merge patches replace lists whole)."""
    when = timestamp(at)
    truth = {
        "Queued": phase in (QUEUED, SCHEDULED, RETRYING),
        "Running": phase == RUNNING,
        "Succeeded": phase == SUCCEEDED,
        "Failed": phase in (FAILED, CANCELLED, DEADLINE_EXCEEDED),
    }
    return [
        {
            "type": kind,
            "status": "True" if truth[kind] else "False",
            "reason": reason,
            "message": message[:1024],
            "lastTransitionTime": when,
        }
        for kind in CONDITION_TYPES
    ]


def operator_patch(
    phase: str,
    at: float,
    reason: str,
    message: str = "",
    *,
    generation: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A phase the operator decides: Pending (with why), Waiting, Scheduled, Queued,
    Cancelled, or Failed for a reason outside any handler (a failed dependency)."""
    status: dict[str, Any] = {"phase": phase, "conditions": conditions(phase, at, reason, message)}
    if phase == QUEUED:
        status["queuedAt"] = timestamp(at)
    if phase in TERMINAL:
        status["finishedAt"] = timestamp(at)
        if phase != SUCCEEDED:
            status["error"] = {"type": reason, "message": message[:1024]}
    if generation is not None:
        status["observedGeneration"] = generation
    if extra:
        status.update(extra)
    return {"status": status}


def running_patch(attempt: int, worker: str, at: float) -> dict[str, Any]:
    return {
        "status": {
            "phase": RUNNING,
            "attempts": attempt,
            "startedAt": timestamp(at),
            "worker": worker,
            "nextRetryAt": None,
            "conditions": conditions(RUNNING, at, "Started", f"attempt {attempt} on {worker}"),
        }
    }


def finished_patch(
    kind: str,
    attempt: int,
    at: float,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
    retry_at: float | None = None,
) -> dict[str, Any]:
    """The status after an attempt ends; ``kind`` is an outcome kind (see OUTCOME_PHASE)."""
    phase = OUTCOME_PHASE[kind]
    status: dict[str, Any] = {"phase": phase, "attempts": attempt}
    if phase == RETRYING:
        assert retry_at is not None
        status["nextRetryAt"] = timestamp(retry_at)
        status["error"] = error
        message = f"attempt {attempt} failed; next attempt at {status['nextRetryAt']}"
    else:
        status["finishedAt"] = timestamp(at)
        status["nextRetryAt"] = None
        if phase == SUCCEEDED:
            status["result"] = result
            status["error"] = None
            message = f"succeeded on attempt {attempt}"
        else:
            status["error"] = error
            message = (error or {}).get("message", "")
    reason = phase if error is None else str((error or {}).get("type", phase))
    status["conditions"] = conditions(phase, at, reason, message)
    return {"status": status}


def is_forward(current: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether writing status ``new`` over ``current`` moves forward: a terminal phase is
    final, and a lower attempt never overwrites a higher one. (The CRD's CEL transition
    rules enforce the same on the server.)"""
    if not current:
        return True
    if current.get("phase") in TERMINAL:
        return False
    return int(new.get("attempts", 0) or 0) >= int(current.get("attempts", 0) or 0) or (
        "attempts" not in new
    )
