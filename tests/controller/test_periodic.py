"""PeriodicTasks end to end: the operator as a process on the real control plane, child Tasks
seen as `kubectl get tasks` would show them.

Every slot's child is named ``<periodic task>-<slot in Unix seconds>`` and annotated with the
slot, so the tests check what ran by slot: each expected slot exactly once, none missing,
none in windows where nothing may run.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from fixtures.controlplane import Kubectl
from fixtures.operator import TERMINAL, Operator, StartWorkers, Tasks, kube_env
from kubetasks.scheduling import parse_rfc3339

GROUP, VERSION = "kubetasks.dev", "v1alpha1"
PARENT_LABEL = "kubetasks.dev/periodic-task"
SCHEDULED = "kubetasks.dev/scheduled-time"
CREATED_AT = "kubetasks.dev/created-at"
ECHO = {"handler": "kubetasks.echo", "args": ["tick"]}


class PeriodicTasks:
    def __init__(self, api: k8s.ApiClient, namespace: str, tasks: Tasks) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.namespace = namespace
        self.tasks = tasks

    def create(self, name: str, schedule: str, template: dict[str, Any], **spec: Any) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "PeriodicTask",
            "metadata": {"name": name},
            "spec": {"schedule": schedule, "taskTemplate": {"spec": template}, **spec},
        }
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "periodictasks", body
        )

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "periodictasks", name, {"spec": spec}
        )

    def status(self, name: str) -> dict[str, Any]:
        body = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "periodictasks", name
        )
        return dict(body.get("status") or {})

    def children(self, name: str) -> dict[int, dict[str, Any]]:
        """This PeriodicTask's child Tasks by slot (Unix seconds); a repeated slot fails."""
        found: dict[int, dict[str, Any]] = {}
        items = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "tasks", label_selector=f"{PARENT_LABEL}={name}"
        )["items"]
        for item in items:
            slot = int(parse_rfc3339(item["metadata"]["annotations"][SCHEDULED]))
            assert item["metadata"]["name"] == f"{name}-{slot}"
            assert slot not in found, f"slot {slot} ran twice"
            found[slot] = item
        return found

    def wait(
        self, what: str, check: Callable[[], Any], timeout: float = 20, every: float = 0.2
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what}")


class MetricslessOperator(Operator):
    """An operator process that serves no metrics: the default metrics port is fixed, so
    two operators (here, or another test run on the same machine) would collide on it."""

    def start(self) -> None:
        if "--metrics-port" not in self.argv:
            self.argv += ["--metrics-port", "0"]
        super().start()


@pytest.fixture
def operator(
    control_plane: ControlPlane, redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[Operator]:
    op = MetricslessOperator(
        kube_env(control_plane, redis_url), tmp_path / "operator.log", namespace
    )
    yield op
    op.stop()


@pytest.fixture
def periodic(kube_api: k8s.ApiClient, namespace: str, tasks: Tasks) -> PeriodicTasks:
    return PeriodicTasks(kube_api, namespace, tasks)


def consecutive(slots: list[int], step: int) -> bool:
    return all(b - a == step for a, b in itertools.pairwise(slots))


def test_every_two_seconds_one_task_per_slot_on_time(
    operator: Operator, periodic: PeriodicTasks, kubectl: Kubectl, namespace: str
) -> None:
    periodic.create("tick", "*/2 * * * * *", ECHO)
    children = periodic.wait("4 runs", lambda: len(periodic.children("tick")) >= 4 or None)
    children = periodic.children("tick")
    slots = sorted(children)
    assert all(slot % 2 == 0 for slot in slots)
    assert consecutive(slots, 2), slots
    for slot, child in children.items():
        lateness = parse_rfc3339(child["metadata"]["annotations"][CREATED_AT]) - slot
        assert 0 <= lateness < 1.0, (slot, lateness)
        owner = child["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("PeriodicTask", "tick", True)
        assert child["spec"]["handler"] == "kubetasks.echo"

    def caught_up() -> dict[str, Any] | None:
        status = periodic.status("tick")
        last = status.get("lastScheduleTime")
        return status if last and parse_rfc3339(last) >= slots[-1] else None

    status = periodic.wait("status to catch up", caught_up)
    last = int(parse_rfc3339(status["lastScheduleTime"]))
    assert int(parse_rfc3339(status["nextScheduleTime"])) == last + 2
    # No workers: every run is still queued, so active lists them all.
    assert f"tick-{last}" in status["active"] and status["activeCount"] == len(status["active"])
    assert [c["status"] for c in status["conditions"] if c["type"] == "ScheduleValid"] == ["True"]
    shown = kubectl("get", "periodictask", "tick", "-n", namespace)
    assert "*/2 * * * * *" in shown.stdout and "UTC" in shown.stdout, shown.stdout


def test_operator_restarted_across_slots_runs_no_slot_twice_and_catches_up_once(
    operator: Operator, periodic: PeriodicTasks, task_workers: StartWorkers
) -> None:
    task_workers(1)
    periodic.create("restart", "*/2 * * * * *", ECHO, successfulTasksHistoryLimit=100)
    periodic.wait("2 runs", lambda: len(periodic.children("restart")) >= 2)
    operator.kill()
    down_from = time.time()
    before = set(periodic.children("restart"))
    time.sleep(5)  # two or three slots pass with no operator
    operator.start()
    up_at = time.time()
    operator.wait_ready()
    periodic.wait(
        "runs after the restart",
        lambda: len([s for s in periodic.children("restart") if s > up_at + 2]) >= 2,
    )
    children = periodic.children("restart")
    after = sorted(s for s in children if s not in before)
    # The slots that passed while it was down did not run, except at most the latest one,
    # as the catch-up when it came back; from there on every slot ran, each once.
    assert after[0] - max(before) >= 4, (sorted(before), after, down_from, up_at)
    assert after[0] >= up_at - 2, (after, up_at)
    assert consecutive(after, 2), after
    for child in children.values():
        status = child.get("status") or {}
        if status.get("phase") in TERMINAL:
            assert status["attempts"] == 1
    status = periodic.status("restart")
    assert status["missedSlots"] >= 1


def test_two_operators_side_by_side_run_every_slot_exactly_once(
    operator: Operator,
    periodic: PeriodicTasks,
    control_plane: ControlPlane,
    redis_url: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    second = MetricslessOperator(
        kube_env(control_plane, redis_url), tmp_path / "operator-2.log", namespace
    )
    try:
        # Both operators are standalone (no peering), so both act on every slot.
        periodic.create("both", "* * * * * *", ECHO)
        started = time.time()
        time.sleep(60)
        assert second.proc is not None and second.proc.poll() is None
    finally:
        second.stop()
    slots = sorted(s for s in periodic.children("both") if s < time.time() - 1)
    first_slot = int(started) + 1
    assert slots[0] <= first_slot + 1, (started, slots[:3])
    assert consecutive(slots, 1), [b for a, b in itertools.pairwise(slots) if b - a != 1]
    assert len(slots) >= 58
    logs = operator.log.read_text() + second.log.read_text()
    # Both really raced: the API server refused some creates as AlreadyExists.
    assert "already ran" in logs


def test_forbid_skips_while_a_run_is_active(
    operator: Operator, periodic: PeriodicTasks, task_workers: StartWorkers
) -> None:
    task_workers(1)
    periodic.create(
        "forbid",
        "*/2 * * * * *",
        {"handler": "kubetasks.sleep", "kwargs": {"seconds": 5}},
        concurrencyPolicy="Forbid",
        startingDeadlineSeconds=0,
    )
    # Count from the first run's start (a worker process can take seconds to come up).
    first = periodic.wait("a first run", lambda: sorted(periodic.children("forbid")))[0]
    periodic.tasks.wait_phase(f"forbid-{first}", "Running", timeout=30)
    time.sleep(12)
    periodic.patch("forbid", {"suspend": True})
    children = periodic.children("forbid")
    slots = sorted(children)
    assert 2 <= len(slots) <= 3, slots  # not the 6 or more an unrestricted schedule has
    assert all(b - a >= 6 for a, b in itertools.pairwise(slots)), slots
    runs = []
    for slot in slots:
        status = periodic.tasks.wait_phase(f"forbid-{slot}", "Succeeded", timeout=10)
        runs.append((parse_rfc3339(status["startedAt"]), parse_rfc3339(status["finishedAt"])))
    for (_, end), (start, _) in itertools.pairwise(runs):
        assert start >= end, runs  # never two at once


def test_replace_cancels_the_active_run(
    operator: Operator, periodic: PeriodicTasks, task_workers: StartWorkers
) -> None:
    task_workers(1, "--concurrency", "4")
    periodic.create(
        "replace",
        "*/3 * * * * *",
        {"handler": "kubetasks.sleep", "kwargs": {"seconds": 30}},
        concurrencyPolicy="Replace",
        failedTasksHistoryLimit=10,
    )
    periodic.wait("2 runs", lambda: len(periodic.children("replace")) >= 2, timeout=15)
    first = sorted(periodic.children("replace"))[0]
    status = periodic.tasks.wait_phase(f"replace-{first}", *TERMINAL, timeout=15)
    assert status["phase"] == "Cancelled"
    periodic.patch("replace", {"suspend": True})
    latest = sorted(periodic.children("replace"))[-1]
    assert periodic.tasks.status(f"replace-{latest}").get("phase") not in TERMINAL


def test_suspend_stops_runs_and_resuming_does_not_flood(
    operator: Operator, periodic: PeriodicTasks
) -> None:
    periodic.create("paused", "* * * * * *", ECHO, suspend=True)
    time.sleep(4)
    assert periodic.children("paused") == {}
    status = periodic.status("paused")
    assert "nextScheduleTime" not in status
    resumed_at = time.time()
    periodic.patch("paused", {"suspend": False})
    periodic.wait("the catch-up run", lambda: periodic.children("paused"), every=0.05)
    # One catch-up for the latest slot, not one per missed second.
    slots = sorted(periodic.children("paused"))
    assert len(slots) <= 2 and slots[0] >= int(resumed_at) - 1, (slots, resumed_at)
    missed = periodic.wait("missed slots", lambda: periodic.status("paused").get("missedSlots"))
    assert missed >= 2


def test_history_limits_delete_the_oldest_finished_runs(
    operator: Operator, periodic: PeriodicTasks, task_workers: StartWorkers
) -> None:
    task_workers(1)
    periodic.create("ok", "* * * * * *", ECHO, successfulTasksHistoryLimit=2)
    periodic.create(
        "bad",
        "* * * * * *",
        {"handler": "kubetasks.fail", "kwargs": {"permanent": True}},
        failedTasksHistoryLimit=1,
    )
    time.sleep(7)
    periodic.patch("ok", {"suspend": True})
    periodic.patch("bad", {"suspend": True})

    def settled(name: str, keep: int) -> dict[int, dict[str, Any]] | None:
        children = periodic.children(name)
        phases = [(c.get("status") or {}).get("phase") for c in children.values()]
        done = all(p in TERMINAL for p in phases)
        return children if done and len(children) == keep else None

    ok = periodic.wait("2 successful kept", lambda: settled("ok", 2), timeout=15)
    bad = periodic.wait("1 failed kept", lambda: settled("bad", 1), timeout=15)
    assert max(ok) - min(ok) == 1  # the two newest
    status = periodic.status("ok")
    assert int(parse_rfc3339(status["lastScheduleTime"])) == max(ok)
    assert parse_rfc3339(status["lastSuccessfulTime"]) >= max(ok)
    assert (bad[max(bad)]["status"]["phase"]) == "Failed"


@pytest.mark.parametrize(
    ("spec", "reason", "message"),
    [
        ({"schedule": "0 0 30 2 *"}, "InvalidSchedule", "never fires"),
        ({"schedule": "0 0 * * 1#2"}, "InvalidSchedule", "not supported"),
        ({"schedule": "@daily", "timeZone": "Mars/Olympus_Mons"}, "InvalidTimeZone", "unknown"),
    ],
)
def test_an_invalid_schedule_is_a_condition_not_a_crash(
    operator: Operator,
    periodic: PeriodicTasks,
    spec: dict[str, Any],
    reason: str,
    message: str,
) -> None:
    schedule = spec.pop("schedule")
    periodic.create("invalid", schedule, ECHO, **spec)
    condition = periodic.wait(
        "the ScheduleValid condition",
        lambda: next(
            (c for c in periodic.status("invalid").get("conditions") or []
             if c["type"] == "ScheduleValid"),
            None,
        ),
    )  # fmt: skip
    assert (condition["status"], condition["reason"]) == ("False", reason)
    assert message in condition["message"]
    # Fixing it makes it valid; the operator kept running throughout.
    periodic.patch("invalid", {"schedule": "@hourly", "timeZone": "UTC"})
    periodic.wait(
        "valid again",
        lambda: any(
            c["type"] == "ScheduleValid" and c["status"] == "True"
            for c in periodic.status("invalid").get("conditions") or []
        ),
    )
    assert "nextScheduleTime" in periodic.status("invalid")
    assert operator.proc is not None and operator.proc.poll() is None
