"""Dependencies that can never be met end the Task with a reason instead of waiting forever:
a cycle (a self-dependency too), a dependency that never appears or never finishes (its
``dependencyTimeoutSeconds``), and a deadline that passes while the Task waits. Real control
plane, the operator and a worker as processes, real Redis."""

from __future__ import annotations

from fixtures.operator import Operator, StartWorkers, Tasks


def reason(status: dict[str, object]) -> tuple[object, object]:
    error = status.get("error") or {}
    assert isinstance(error, dict)
    return status.get("phase"), error.get("type")


def test_every_task_on_a_cycle_fails_naming_the_cycle(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    task_workers(1)
    tasks.create("self", "kubetasks.echo", dependsOn=["self"])
    tasks.create("a", "kubetasks.echo", dependsOn=["b"])
    tasks.create("b", "kubetasks.echo", dependsOn=["a"])
    tasks.create("x", "kubetasks.echo", dependsOn=["y"])
    tasks.create("y", "kubetasks.echo", dependsOn=["z"])
    tasks.create("z", "kubetasks.echo", dependsOn=["x"])
    tasks.create("hangs-from-it", "kubetasks.echo", dependsOn=["a"])
    expected = {
        "self": "dependency cycle self -> self",
        "a": "dependency cycle a -> b -> a",
        "b": "dependency cycle b -> a -> b",
        "x": "dependency cycle x -> y -> z -> x",
        "y": "dependency cycle y -> z -> x -> y",
        "z": "dependency cycle z -> x -> y -> z",
    }
    for name, message in expected.items():
        status = tasks.wait_phase(name, "Failed", "Succeeded", timeout=15)
        assert reason(status) == ("Failed", "DependencyCycle"), status
        assert status["error"]["message"] == message
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert (failed["status"], failed["reason"]) == ("True", "DependencyCycle")
    # Not on the cycle, but waiting on it: it fails because its dependency did.
    status = tasks.wait_phase("hangs-from-it", "Failed", timeout=15)
    assert reason(status) == ("Failed", "DependencyFailed")
    assert "dependency a ended Failed" in status["error"]["message"]
    tasks.create("healthy", "test.add", args=[1, 2])
    assert tasks.wait_phase("healthy", "Succeeded", timeout=10)["result"] == 3


def test_a_dependency_that_never_appears_or_never_finishes_times_out_by_name(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    task_workers(1)
    tasks.create("slow", "test.sleep", args=[60], queue="nobody")  # never runs: no workers
    tasks.create("on-ghost", "kubetasks.echo", dependsOn=["ghost"], dependencyTimeoutSeconds=2)
    tasks.create("on-slow", "kubetasks.echo", dependsOn=["slow"], dependencyTimeoutSeconds=3)
    assert tasks.wait_phase("on-ghost", "Waiting", timeout=5)
    status = tasks.wait_phase("on-ghost", "Failed", timeout=10)
    assert reason(status) == ("Failed", "DependencyTimeout")
    assert status["error"]["message"] == (
        "dependencies not succeeded within dependencyTimeoutSeconds=2: ghost (not found)"
    )
    status = tasks.wait_phase("on-slow", "Failed", timeout=10)
    assert reason(status) == ("Failed", "DependencyTimeout")
    assert status["error"]["message"].endswith(": slow (Queued)")


def test_a_deadline_applies_while_a_task_waits(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    task_workers(1)
    tasks.create("long", "test.sleep", args=[30])
    tasks.create("after-long", "kubetasks.echo", dependsOn=["long"], activeDeadlineSeconds=2)
    assert tasks.wait_phase("after-long", "Waiting", timeout=5)
    status = tasks.wait_phase("after-long", "DeadlineExceeded", "Failed", timeout=10)
    assert reason(status) == ("DeadlineExceeded", "DeadlineExceeded")
    assert status["error"]["message"] == "the deadline passed while waiting for long"
    # A dependency that appears late, within the timeout, is still waited for.
    tasks.create("first", "kubetasks.echo", dependsOn=["later"], dependencyTimeoutSeconds=30)
    assert tasks.wait_phase("first", "Waiting", timeout=5)
    tasks.create("later", "test.add", args=[1, 1])
    assert tasks.wait_phase("first", "Succeeded", timeout=10)
