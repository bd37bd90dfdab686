"""The status patches that move a Task resource from phase to phase (pure).

Two writers share a Task's status: the operator (Pending, Waiting, Scheduled, Queued, and
Cancelled/Failed for reasons it decides) and the workers (Running, Retrying, Succeeded,
Failed, DeadlineExceeded). Both build their patches here, so the shape of the status, the
conditions that ``kubectl wait`` reads, and the rule that status never moves backwards live
in one place. The API server enforces that rule too (CEL transition rules on the CRD), so a
late write from a stale worker is refused atomically instead of being read-then-checked.
"""

from __future__ import annotations

from typing import Any

from kubetasks.timestamps import rfc3339_millis
from kubetasks.vocabulary import FINAL_PHASES, TaskPhase

#: Worker outcome kinds (kubetasks.outcome) to phases.
OUTCOME_PHASE = {
    "succeeded": TaskPhase.SUCCEEDED,
    "retry": TaskPhase.RETRYING,
    "failed": TaskPhase.FAILED,
    "cancelled": TaskPhase.CANCELLED,
    "deadline_exceeded": TaskPhase.DEADLINE_EXCEEDED,
}

#: Condition types a Task carries; ``kubectl wait --for=condition=Succeeded task/x`` works.
CONDITION_TYPES = ("Queued", "Running", "Succeeded", "Failed")


def conditions(phase: str, at: float, reason: str, message: str = "") -> list[dict[str, Any]]:
    """The whole condition list for a phase: each writer sets all of it at once, so the
    list always agrees with the phase (merge patches replace lists whole)."""
    when = rfc3339_millis(at)
    truth = {
        "Queued": phase in (TaskPhase.QUEUED, TaskPhase.SCHEDULED, TaskPhase.RETRYING),
        "Running": phase == TaskPhase.RUNNING,
        "Succeeded": phase == TaskPhase.SUCCEEDED,
        "Failed": phase in (TaskPhase.FAILED, TaskPhase.CANCELLED, TaskPhase.DEADLINE_EXCEEDED),
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
    if phase == TaskPhase.QUEUED:
        status["queuedAt"] = rfc3339_millis(at)
    if phase in FINAL_PHASES:
        status["finishedAt"] = rfc3339_millis(at)
        if phase != TaskPhase.SUCCEEDED:
            status["error"] = {"type": reason, "message": message[:1024]}
    if generation is not None:
        status["observedGeneration"] = generation
    if extra:
        status.update(extra)
    return {"status": status}


def running_patch(attempt: int, worker: str, at: float) -> dict[str, Any]:
    return {
        "status": {
            "phase": TaskPhase.RUNNING,
            "attempts": attempt,
            "startedAt": rfc3339_millis(at),
            "worker": worker,
            "nextRetryAt": None,
            "conditions": conditions(
                TaskPhase.RUNNING, at, "Started", f"attempt {attempt} on {worker}"
            ),
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
    if phase == TaskPhase.RETRYING:
        assert retry_at is not None
        status["nextRetryAt"] = rfc3339_millis(retry_at)
        status["error"] = error
        message = f"attempt {attempt} failed; next attempt at {status['nextRetryAt']}"
    else:
        status["finishedAt"] = rfc3339_millis(at)
        status["nextRetryAt"] = None
        if phase == TaskPhase.SUCCEEDED:
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
    if current.get("phase") in FINAL_PHASES:
        return False
    return int(new.get("attempts", 0) or 0) >= int(current.get("attempts", 0) or 0) or (
        "attempts" not in new
    )
