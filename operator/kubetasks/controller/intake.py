"""From a Task resource to a queued task: the pure decisions of the Task controller.

Given a Task's body and the current time, these functions say what the operator should do
next (wait for dependencies, fail, cancel, or enqueue a message and report a phase), so the
kopf handlers only read, call these, and write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetasks.errors import ConfigurationError
from kubetasks.outcome import BackoffPolicy
from kubetasks.queue import TaskMessage
from kubetasks.queuename import validate_queue_name
from kubetasks.timestamps import parse_rfc3339
from kubetasks.vocabulary import FINAL_PHASES, TaskPhase


def resource_name(body: dict[str, Any]) -> str:
    meta = body["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


def created_at(body: dict[str, Any], default: float) -> float:
    stamp = body["metadata"].get("creationTimestamp")
    return parse_rfc3339(stamp) if stamp else default


def build_message(
    body: dict[str, Any], now: float, dependency_results: list[Any] | None = None
) -> TaskMessage:
    """The queue message for a Task. Raises ConfigurationError naming a field that the
    schema could not check (the API server validated everything else)."""
    spec = body.get("spec") or {}
    created = created_at(body, now)
    backoff = spec.get("retryBackoff") or {}
    run_at = None
    if spec.get("runAt"):
        run_at = parse_rfc3339(spec["runAt"])
    elif spec.get("delaySeconds"):
        run_at = created + float(spec["delaySeconds"])
    deadline = None
    if spec.get("deadline"):
        deadline = parse_rfc3339(spec["deadline"])
    elif spec.get("activeDeadlineSeconds"):
        deadline = created + float(spec["activeDeadlineSeconds"])
    args = list(spec.get("args") or [])
    kwargs = dict(spec.get("kwargs") or {})
    if dependency_results is not None:
        mode = spec.get("dependencyResults", "None")
        if mode == "Args":
            args = [*dependency_results, *args]
        elif mode == "Kwarg":
            kwargs["results"] = dependency_results
    unique_for = spec.get("uniqueForSeconds")
    # Checked here too, not only by the schema: a Task stored under an older, looser CRD
    # must fail naming its field before anything of it reaches Redis.
    queue = validate_queue_name(spec.get("queue", "default"), "spec.queue")
    try:
        return TaskMessage(
            id=body["metadata"]["uid"],
            handler=spec["handler"],
            queue=queue,
            args=args,
            kwargs=kwargs,
            priority=int(spec.get("priority", 0)),
            max_retries=int(spec.get("maxRetries", 3)),
            timeout=spec.get("timeoutSeconds"),
            deadline=deadline,
            run_at=run_at,
            backoff=BackoffPolicy(
                base=float(backoff.get("baseSeconds", 1.0)),
                cap=float(backoff.get("maxSeconds", 300.0)),
                jitter=bool(backoff.get("jitter", True)),
            ),
            unique_key=spec.get("uniqueKey") if unique_for else None,
            unique_for=unique_for,
            resource=resource_name(body),
        )
    except KeyError as exc:
        raise ConfigurationError(f"spec.{exc.args[0]} is required") from None


@dataclass(frozen=True)
class DependencyState:
    ready: bool
    """Every dependency succeeded."""
    failed: str | None = None
    """Why the Task can never run (a dependency failed or is missing), or None."""
    results: list[Any] | None = None
    waiting_for: tuple[str, ...] = ()


def dependency_state(
    depends_on: list[str], phases: dict[str, tuple[str | None, Any]]
) -> DependencyState:
    """``phases`` maps each known Task name in the namespace to (phase, result)."""
    waiting: list[str] = []
    results: list[Any] = []
    for name in depends_on:
        phase, result = phases.get(name, (None, None))
        if phase == TaskPhase.SUCCEEDED:
            results.append(result)
        elif phase in FINAL_PHASES:
            return DependencyState(False, failed=f"dependency {name} ended {phase}")
        else:
            waiting.append(name)
    if waiting:
        return DependencyState(False, waiting_for=tuple(waiting))
    return DependencyState(True, results=results)


def queued_phase(message: TaskMessage, now: float) -> str:
    return TaskPhase.SCHEDULED if message.run_at and message.run_at > now else TaskPhase.QUEUED
