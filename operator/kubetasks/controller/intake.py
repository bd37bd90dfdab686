"""From a Task resource to a queued task: the pure decisions of the Task controller.

Given a Task's body and the current time, these functions say what the operator should do
next (wait for dependencies, fail, cancel, or enqueue a message and report a phase), so the
kopf handlers only read, call these, and write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubetasks.errors import ConfigurationError
from kubetasks.models.task import DEFAULT_DEPENDENCY_TIMEOUT_SECONDS
from kubetasks.outcome import BackoffPolicy
from kubetasks.queue import TaskMessage
from kubetasks.queue.message import check_size
from kubetasks.queuename import validate_queue_name
from kubetasks.timestamps import parse_rfc3339
from kubetasks.vocabulary import FINAL_PHASES, TASKSET_DEPENDENCY, TaskPhase


def resource_name(body: dict[str, Any]) -> str:
    meta = body["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


def created_at(body: dict[str, Any], default: float) -> float:
    stamp = body["metadata"].get("creationTimestamp")
    return parse_rfc3339(stamp) if stamp else default


def deadline_of(body: dict[str, Any], now: float) -> float | None:
    """Epoch seconds after which no attempt of the Task may start, or None."""
    spec = body.get("spec") or {}
    if spec.get("deadline"):
        return parse_rfc3339(spec["deadline"])
    if spec.get("activeDeadlineSeconds"):
        return created_at(body, now) + float(spec["activeDeadlineSeconds"])
    return None


def build_message(
    body: dict[str, Any], now: float, dependency_results: list[Any] | None = None
) -> TaskMessage:
    """The queue message for a Task. Raises ConfigurationError naming a field that the
    schema could not check (the API server validated everything else), and
    MessageTooLargeError when the encoded message would exceed ``MAX_MESSAGE_BYTES``."""
    spec = body.get("spec") or {}
    created = created_at(body, now)
    backoff = spec.get("retryBackoff") or {}
    run_at = None
    if spec.get("runAt"):
        run_at = parse_rfc3339(spec["runAt"])
    elif spec.get("delaySeconds"):
        run_at = created + float(spec["delaySeconds"])
    deadline = deadline_of(body, now)
    args = list(spec.get("args") or [])
    kwargs = dict(spec.get("kwargs") or {})
    if dependency_results is not None:
        mode = spec.get("dependencyResults", "None")
        if mode == "None":
            # A chord: each TaskSet dependency's results (a list by index) go first.
            names = spec.get("dependsOn") or []
            args = [
                r
                for d, r in zip(names, dependency_results, strict=False)
                if d.startswith(TASKSET_DEPENDENCY)
            ] + args
        elif mode == "Args":
            args = [*dependency_results, *args]
        elif mode == "Kwarg":
            kwargs["results"] = dependency_results
    unique_for = spec.get("uniqueForSeconds")
    # Checked here too, not only by the schema: a Task stored under an older, looser CRD
    # must fail naming its field before anything of it reaches Redis.
    queue = validate_queue_name(spec.get("queue", "default"), "spec.queue")
    try:
        message = TaskMessage(
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
            labels=dict(body["metadata"].get("labels") or {}),
        )
    except KeyError as exc:
        raise ConfigurationError(f"spec.{exc.args[0]} is required") from None
    check_size(message.encode())
    return message


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


@dataclass(frozen=True)
class Verdict:
    """How a waiting Task ends: its phase, reason and message."""

    phase: str
    reason: str
    message: str


def waiting_verdict(
    body: dict[str, Any], deps: DependencyState, phases: dict[str, str | None], now: float
) -> Verdict | None:
    """Whether a Task that still waits for ``deps.waiting_for`` must end now: its deadline
    has passed (DeadlineExceeded), or its ``dependencyTimeoutSeconds`` (Failed with reason
    DependencyTimeout, naming each awaited dependency with its phase, or "not found").
    ``phases`` maps dependencies to their phase (None: not found, or no phase yet). None:
    it goes on waiting."""
    deadline = deadline_of(body, now)
    if deadline is not None and now >= deadline:
        return Verdict(
            TaskPhase.DEADLINE_EXCEEDED,
            "DeadlineExceeded",
            f"the deadline passed while waiting for {', '.join(deps.waiting_for)}",
        )
    timeout = dependency_timeout(body)
    if now >= created_at(body, now) + timeout:
        named = ", ".join(
            f"{name} ({phases.get(name) or 'not found'})" for name in deps.waiting_for
        )
        return Verdict(
            TaskPhase.FAILED,
            "DependencyTimeout",
            f"dependencies not succeeded within dependencyTimeoutSeconds={timeout:g}: {named}",
        )
    return None


def dependency_timeout(body: dict[str, Any]) -> float:
    spec = body.get("spec") or {}
    return float(spec.get("dependencyTimeoutSeconds") or DEFAULT_DEPENDENCY_TIMEOUT_SECONDS)


def wait_until(body: dict[str, Any], now: float) -> float:
    """When a waiting Task must be looked at again even if no event comes: the earlier of
    its deadline and the end of its dependency timeout."""
    until = created_at(body, now) + dependency_timeout(body)
    deadline = deadline_of(body, now)
    return min(until, deadline) if deadline is not None else until


def find_cycle(start: str, depends_on: Callable[[str], Sequence[str]]) -> list[str] | None:
    """A dependency cycle through ``start``, as the names along it from ``start`` back to it
    (``["a", "b", "a"]``; a self-dependency is ``["a", "a"]``), or None.

    ``depends_on(name)`` gives the ``dependsOn`` of a Task that has not been admitted yet
    (empty for one that is unknown, queued or finished: those cannot close a cycle)."""
    path = [start]
    on_path = {start}
    seen: set[str] = set()
    stack = [iter(depends_on(start))]
    while stack:
        name = next(stack[-1], None)
        if name is None:
            stack.pop()
            on_path.discard(path.pop())
            continue
        if name == start:
            return [*path, start]
        if name in seen or name in on_path:
            continue  # a cycle that does not pass through start is found from its own Tasks
        seen.add(name)
        path.append(name)
        on_path.add(name)
        stack.append(iter(depends_on(name)))
    return None


def cycle_text(cycle: Sequence[str]) -> str:
    return " -> ".join(cycle)


def queued_phase(message: TaskMessage, now: float) -> str:
    return TaskPhase.SCHEDULED if message.run_at and message.run_at > now else TaskPhase.QUEUED
