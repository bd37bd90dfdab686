"""The pure rules for Tasks that wait on others: cycles, dependency timeouts, deadlines while
waiting, and when a waiting Task is looked at again (time injected, no sleeps)."""

from __future__ import annotations

from typing import Any

import pytest

from kubetasks.clock import FakeClock
from kubetasks.controller.dependents import Dependents
from kubetasks.controller.intake import (
    DependencyState,
    build_message,
    find_cycle,
    wait_until,
    waiting_verdict,
)
from kubetasks.controller.waiting import WaitingTasks
from kubetasks.errors import MessageTooLargeError
from kubetasks.queue.message import MAX_MESSAGE_BYTES, TaskMessage, check_size
from kubetasks.timestamps import parse_rfc3339

CREATED = "2026-01-01T00:00:00Z"
T0 = parse_rfc3339(CREATED)


def body(name: str = "t", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "creationTimestamp": CREATED,
        },
        "spec": {"handler": "h", **spec},
    }


def graph(edges: dict[str, list[str]]) -> Any:
    return lambda name: edges.get(name, [])


@pytest.mark.parametrize(
    ("edges", "start", "cycle"),
    [
        ({"a": ["a"]}, "a", ["a", "a"]),
        ({"a": ["b"], "b": ["a"]}, "a", ["a", "b", "a"]),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, "b", ["b", "c", "a", "b"]),
        ({"a": ["x", "b"], "b": ["y", "c"], "c": ["z", "a"]}, "a", ["a", "b", "c", "a"]),
        ({"a": ["b"], "b": ["c"]}, "a", None),  # a chain ends
        ({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, "a", None),  # a diamond is fine
        ({"a": ["b"], "b": ["c"], "c": ["b"]}, "a", None),  # a cycle a only hangs from
    ],
)
def test_a_cycle_is_found_through_the_task_and_named_along_it(
    edges: dict[str, list[str]], start: str, cycle: list[str] | None
) -> None:
    assert find_cycle(start, graph(edges)) == cycle


def test_a_long_chain_is_walked_without_recursion() -> None:
    edges = {f"t{i}": [f"t{i + 1}"] for i in range(5000)} | {"t5000": ["t0"]}
    found = find_cycle("t0", graph(edges))
    assert found is not None and len(found) == 5002 and found[-1] == "t0"


def test_a_waiting_task_ends_at_its_dependency_timeout_naming_what_it_waits_for() -> None:
    task = body(dependsOn=["gone", "slow"], dependencyTimeoutSeconds=30)
    deps = DependencyState(False, waiting_for=("gone", "slow"))
    phases = {"gone": None, "slow": "Running"}
    assert wait_until(task, T0) == T0 + 30
    assert waiting_verdict(task, deps, phases, T0 + 29.9) is None
    verdict = waiting_verdict(task, deps, phases, T0 + 30)
    assert verdict is not None
    assert (verdict.phase, verdict.reason) == ("Failed", "DependencyTimeout")
    assert verdict.message == (
        "dependencies not succeeded within dependencyTimeoutSeconds=30:"
        " gone (not found), slow (Running)"
    )


def test_without_a_timeout_a_task_waits_a_day() -> None:
    assert wait_until(body(dependsOn=["a"]), T0) == T0 + 86400


def test_a_deadline_passing_while_waiting_ends_the_task_deadline_exceeded() -> None:
    task = body(dependsOn=["a"], activeDeadlineSeconds=5, dependencyTimeoutSeconds=60)
    deps = DependencyState(False, waiting_for=("a",))
    assert wait_until(task, T0) == T0 + 5
    assert waiting_verdict(task, deps, {"a": "Running"}, T0 + 4) is None
    verdict = waiting_verdict(task, deps, {"a": "Running"}, T0 + 5)
    assert verdict is not None
    assert (verdict.phase, verdict.reason) == ("DeadlineExceeded", "DeadlineExceeded")
    assert "while waiting for a" in verdict.message


def test_waiting_tasks_come_due_in_time_order_and_once() -> None:
    clock = FakeClock(T0)
    waiting = WaitingTasks(clock, read=None, readmit=None)  # type: ignore[arg-type]
    waiting.track(body("late"), T0 + 20)
    waiting.track(body("soon"), T0 + 5)
    waiting.track(body("gone"), T0 + 1)
    waiting.forget("uid-gone")
    waiting.track(body("moved"), T0 + 2)
    waiting.track(body("moved"), T0 + 30)  # tracked again with a later time
    assert waiting.take_due(T0 + 4) == []
    assert waiting.take_due(T0 + 20) == [("ns", "soon", "uid-soon"), ("ns", "late", "uid-late")]
    assert waiting.take_due(T0 + 25) == []
    assert waiting.take_due(T0 + 30) == [("ns", "moved", "uid-moved")]
    assert waiting.waiting() == 0


def test_a_message_over_the_limit_is_refused_naming_its_size_and_the_limit() -> None:
    check_size("x" * MAX_MESSAGE_BYTES)
    with pytest.raises(MessageTooLargeError, match=r"262145 bytes, more than the limit of 262144"):
        check_size("x" * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(MessageTooLargeError):  # bytes count, not characters
        check_size("é" * (MAX_MESSAGE_BYTES // 2 + 1))
    task = body(args=["x" * MAX_MESSAGE_BYTES])
    with pytest.raises(MessageTooLargeError, match="limit of 262144 bytes"):
        build_message(task, T0)
    assert isinstance(build_message(body(args=["x" * 1000]), T0), TaskMessage)


def test_a_task_failed_for_a_cycle_is_remembered_until_it_is_deleted_and_only_by_uid() -> None:
    deps = Dependents()
    a, b = body("a", dependsOn=["b"]), body("b", dependsOn=["a"])
    deps.observe(a)
    deps.observe(b)
    assert deps.depends_on("ns", "a") == ["b"]
    deps.on_cycle(a, "dependency cycle a -> b -> a")
    assert deps.unadmitted("ns", "a") is None  # no longer an edge to walk
    assert deps.cycle_of("ns", "a", "uid-a") == "dependency cycle a -> b -> a"
    assert deps.cycle_of("ns", "a", "uid-of-a-new-a") is None
    deps.deleted(a)
    assert deps.cycle_of("ns", "a", "uid-a") is None
