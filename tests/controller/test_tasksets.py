"""TaskSets end to end: the real control plane, the operator and workers as processes, real
Redis. One object stands for many tasks; assertions are on what `kubectl` shows and on what
the handlers saw."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from devenv.controlplane import ControlPlane
from fixtures.controlplane import Kubectl
from fixtures.operator import Operator, StartWorkers, Tasks, TaskSets, kube_env
from kubetasks.controller.setintake import parse_ranges
from kubetasks.queue.keys import QueueKeys

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def cli_env(control_plane: ControlPlane, redis_url: str) -> dict[str, str]:
    return kube_env(control_plane, redis_url)


def test_a_count_set_runs_every_index_and_kubectl_wait_sees_it_succeed(
    operator: Operator,
    task_workers: StartWorkers,
    tasksets: TaskSets,
    kubectl: Kubectl,
    namespace: str,
) -> None:
    task_workers(1)
    tasksets.create("squares", {"handler": "test.item", "args": ["x"]}, count=50)
    wait = kubectl(
        "wait", "--for=condition=Succeeded", "taskset/squares", "-n", namespace, "--timeout=60s"
    )
    assert wait.returncode == 0, wait.stderr
    status = tasksets.status("squares")
    assert (status["phase"], status["total"], status["succeeded"], status["failed"]) == (
        "Succeeded", 50, 50, 0,
    )  # fmt: skip
    assert status["completedIndexes"] == "0-49"
    assert status["failedIndexes"] == ""
    assert status["progress"] == 1.0
    assert status["startedAt"] <= status["finishedAt"]
    shown = kubectl("get", "taskset", "squares", "-n", namespace)
    header, row = shown.stdout.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "TOTAL", "SUCCEEDED", "FAILED", "RUNNING"], header
    assert row.split()[:5] == ["squares", "50", "50", "0", "0"], row
    # No Task objects were made for the items.
    assert "No resources found" in kubectl("get", "tasks", "-n", namespace).stderr


def started_per_index(log: Path) -> dict[int, list[int]]:
    """index -> attempts started, from the items' log lines."""
    found: dict[int, list[int]] = {}
    for line in log.read_text().splitlines():
        kind, index, attempt = line.split()
        if kind == "start":
            found.setdefault(int(index), []).append(int(attempt))
    return found


def most_at_once(log: Path) -> int:
    """The most items running at the same time, replayed from the start/end lines."""
    running = peak = 0
    for line in log.read_text().splitlines():
        running += 1 if line.startswith("start") else -1
        peak = max(peak, running)
    return peak


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubetasks.cli", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


FAIL = [3, 500, 999]
FLAKY = [10, 20, 700]
FAST_RETRIES = {"maxRetries": 2, "retryBackoff": {"baseSeconds": 0.05, "maxSeconds": 0.1}}


@pytest.mark.timeout(300)
def test_a_thousand_items_with_failures_and_retries_end_with_every_outcome_recorded(
    operator: Operator,
    task_workers: StartWorkers,
    tasksets: TaskSets,
    kubectl: Kubectl,
    namespace: str,
    tmp_path: Path,
    cli_env: dict[str, str],
) -> None:
    log = tmp_path / "items.log"
    task_workers(2, "--concurrency", "20")
    template = {"handler": "test.item", "kwargs": {"fail": FAIL, "flaky": FLAKY, "log": str(log)}}
    tasksets.create("thousand", template | FAST_RETRIES, count=1000)
    wait = kubectl(
        "wait", "--for=condition=Failed", "taskset/thousand", "-n", namespace, "--timeout=240s"
    )
    assert wait.returncode == 0, wait.stderr
    status = tasksets.status("thousand")
    assert (status["phase"], status["succeeded"], status["failed"]) == ("Failed", 997, 3)
    assert status["failedIndexes"] == "3,500,999"
    assert status["completedIndexes"] == "0-2,4-499,501-998"
    assert [(f["index"], f["message"]) for f in status["failures"]] == [
        (i, f"item {i} fails on purpose") for i in FAIL
    ]
    assert "ItemsFailed" in status["error"]
    started = started_per_index(log)
    assert sorted(started) == list(range(1000))
    assert {i: started[i] for i in FLAKY} == {i: [1, 2] for i in FLAKY}
    assert all(len(a) == 1 for i, a in started.items() if i not in FLAKY)
    # Per-item outcomes stay queryable.
    shown = run_cli("taskset", "results", "thousand", "-n", namespace, "-o", "json", env=cli_env)
    assert shown.returncode == 0, shown.stderr
    items = json.loads(shown.stdout)["items"]
    assert [i["state"] for i in items].count("succeeded") == 997
    assert items[10]["attempts"] == 2 and items[10]["result"]["index"] == 10
    assert items[500]["state"] == "failed"
    assert items[500]["error"]["message"] == "item 500 fails on purpose"
    table = run_cli("taskset", "results", "thousand", "-n", namespace, env=cli_env)
    assert "item 999 fails on purpose" in table.stdout


def test_count_mode_hands_each_item_its_index_and_the_set_name(
    operator: Operator, task_workers: StartWorkers, tasksets: TaskSets, redis_url: str
) -> None:
    task_workers(1)
    body = tasksets.create("indexed", {"handler": "test.item"}, count=7)
    tasksets.wait_phase("indexed", "Succeeded")
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        key = QueueKeys(tasksets.namespace, "default").taskset(body["metadata"]["uid"]).results
        results = {int(i): json.loads(v) for i, v in r.hgetall(key).items()}
    assert results == {i: {"index": i, "taskset": "indexed", "args": []} for i in range(7)}


def test_parallelism_caps_the_items_running_at_once(
    operator: Operator, task_workers: StartWorkers, tasksets: TaskSets, tmp_path: Path
) -> None:
    log = tmp_path / "items.log"
    task_workers(2, "--concurrency", "10")
    template = {"handler": "test.item", "kwargs": {"log": str(log), "seconds": 0.3}}
    tasksets.create("capped", template, count=15, parallelism=3)
    seen_running = set()
    deadline = time.monotonic() + 90
    while (status := tasksets.status("capped")).get("phase") != "Succeeded":
        assert time.monotonic() < deadline, status
        seen_running.add(status.get("running"))
        assert (status.get("running") or 0) + (status.get("queued") or 0) <= 3, status
        time.sleep(0.1)
    assert status["succeeded"] == 15
    assert sorted(started_per_index(log)) == list(range(15))
    assert most_at_once(log) <= 3
    assert most_at_once(log) >= 2, "20 free worker slots; the cap, not the workers, limits"


def test_a_success_policy_ends_the_set_once_enough_items_succeeded(
    operator: Operator, task_workers: StartWorkers, tasksets: TaskSets
) -> None:
    task_workers(1)
    template = {"handler": "test.item", "kwargs": {"fail": [0, 1, 2, 3]}}
    tasksets.create("enough", template, count=10, successPolicy={"minSucceeded": 6})
    status = tasksets.wait_phase("enough", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded"
    assert status["succeeded"] >= 6
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Running": "False", "Succeeded": "True", "Failed": "False"}


def test_cancel_stops_a_running_set_and_nothing_more_starts(
    operator: Operator, task_workers: StartWorkers, tasksets: TaskSets, tmp_path: Path
) -> None:
    log = tmp_path / "items.log"
    task_workers(1)
    template = {"handler": "test.item", "kwargs": {"log": str(log), "seconds": 1}}
    tasksets.create("stopme", template, count=20, parallelism=2)
    deadline = time.monotonic() + 30
    while not (tasksets.status("stopme").get("running") or 0):
        assert time.monotonic() < deadline, "no item ever ran"
        time.sleep(0.1)
    tasksets.patch("stopme", {"cancel": True})
    status = tasksets.wait_phase("stopme", "Cancelled", "Succeeded", "Failed")
    assert status["phase"] == "Cancelled"
    assert "spec.cancel" in status["error"]
    time.sleep(3)  # a running item is told to stop on its worker's next heartbeat
    started = len(started_per_index(log))
    time.sleep(2)
    assert len(started_per_index(log)) == started <= 4


def test_ttl_deletes_a_finished_set_and_its_redis_records(
    operator: Operator, task_workers: StartWorkers, tasksets: TaskSets, redis_url: str
) -> None:
    task_workers(1)
    body = tasksets.create("brief", {"handler": "test.item"}, count=3, ttlSecondsAfterFinished=1)
    deadline = time.monotonic() + 60
    while tasksets.get("brief") is not None:
        assert time.monotonic() < deadline, tasksets.status("brief")
        time.sleep(0.2)
    keys = QueueKeys(tasksets.namespace, "default")
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        assert not r.keys(keys.taskset(body["metadata"]["uid"]).key + "*")
        assert not r.keys(keys.task_prefix + body["metadata"]["uid"] + "-*")


def test_items_progress_reaches_the_sets_status_before_they_end_and_goes_with_the_set(
    operator: Operator,
    task_workers: StartWorkers,
    tasksets: TaskSets,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """Four items each report up to 0.5 (fifty reports in a tight loop) and wait: the set's
    status.progress is the mean over its items, through Redis only (no item has an object),
    strictly between 0 and 1 while none has ended, 1.0 at the end. Deleting the set takes
    its progress hash with its other keys."""
    release = tmp_path / "release"
    task_workers(1, "--concurrency", "4")
    body = tasksets.create("halfway", {"handler": "test.halfway", "args": [str(release)]},
                           count=4)  # fmt: skip
    uid = body["metadata"]["uid"]
    deadline = time.monotonic() + 60
    while (status := tasksets.status("halfway")).get("progress") != 0.5:
        assert time.monotonic() < deadline, status
        assert status.get("succeeded", 0) == 0, status
        assert 0.0 <= (status.get("progress") or 0.0) < 0.5, status
        time.sleep(0.1)
    assert status["running"] == 4 and status["succeeded"] == 0, status
    keys = QueueKeys(tasksets.namespace, "default")
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        assert r.hgetall(keys.taskset(uid).progress) == {str(i): "0.5" for i in range(4)}
    release.touch()
    while (status := tasksets.status("halfway")).get("phase") != "Succeeded":
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status["progress"] == 1.0
    assert status["succeeded"] == 4
    tasksets.delete("halfway")
    while tasksets.get("halfway") is not None:
        assert time.monotonic() < deadline, tasksets.status("halfway")
        time.sleep(0.1)
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        assert not r.keys(keys.taskset(uid).key + "*")


def test_a_chord_passes_the_sets_results_to_its_callback(
    operator: Operator, task_workers: StartWorkers, tasksets: TaskSets, tasks: Tasks
) -> None:
    task_workers(1)
    tasks.create("total", "test.sum_results", args=["extra"], dependsOn=["taskset/parts"])
    assert tasks.wait_phase("total", "Waiting")["phase"] == "Waiting"
    tasksets.create("parts", {"handler": "test.item"}, count=5)
    status = tasks.wait_phase("total", "Succeeded", "Failed")
    assert status["result"] == {"count": 5, "sum": 10, "nulls": 0}


def test_repair_sweeps_over_a_task_waiting_for_a_set_and_leave_it_waiting(
    repairing_operator: Operator, task_workers: StartWorkers, tasksets: TaskSets, tasks: Tasks
) -> None:
    """The repair reads a ``taskset/<name>`` dependency as a TaskSet, not as a Task named
    "taskset/..." (which a real cluster's RBAC refuses, and no Task can be named)."""
    tasks.create("total", "test.sum_results", dependsOn=["taskset/later"])
    assert tasks.wait_phase("total", "Waiting")["phase"] == "Waiting"
    deadline = time.monotonic() + 30
    while repairing_operator.metrics()["kubetasks_operator_repair_sweeps_total"] < 3:
        assert time.monotonic() < deadline, "the repair did not sweep three times"
        time.sleep(0.2)
    told = repairing_operator.log.read_text()
    assert "skipped repair" not in told and "Traceback" not in told, told[-3000:]
    assert tasks.status("total")["phase"] == "Waiting"
    task_workers(1)
    tasksets.create("later", {"handler": "test.item"}, count=3)
    status = tasks.wait_phase("total", "Succeeded", "Failed")
    assert status["result"] == {"count": 3, "sum": 3, "nulls": 0}


def test_results_too_large_to_pass_reach_the_callback_through_its_context(
    operator: Operator, task_workers: StartWorkers, tasksets: TaskSets, tasks: Tasks
) -> None:
    task_workers(1)
    tasksets.create("big", {"handler": "test.item", "kwargs": {"pad": 1000}}, count=100)
    tasks.create("reader", "test.read_results", dependsOn=["taskset/big"])
    status = tasks.wait_phase("reader", "Succeeded", "Failed", timeout=90)
    assert status["result"] == {"reference": True, "indexes": list(range(100))}


def test_a_failed_set_fails_its_dependent_naming_the_set(
    operator: Operator, task_workers: StartWorkers, tasksets: TaskSets, tasks: Tasks
) -> None:
    task_workers(1)
    tasksets.create("broken", {"handler": "test.item", "kwargs": {"fail": [1]}}, count=3)
    tasks.create("after", "test.sum_results", dependsOn=["taskset/broken"])
    tasksets.create("later", {"handler": "test.item"}, count=2, dependsOn=["taskset/broken"])
    status = tasks.wait_phase("after", "Failed", "Succeeded")
    assert status["phase"] == "Failed"
    assert status["error"]["type"] == "DependencyFailed"
    assert "taskset/broken" in status["error"]["message"]
    later = tasksets.wait_phase("later", "Failed", "Succeeded")
    assert "DependencyFailed" in later["error"] and "taskset/broken" in later["error"]


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"count": 2, "items": [{}]}, "exactly one of items and count"),
        ({}, "exactly one of items and count"),
        ({"count": 2, "successPolicy": {"minSucceeded": 3}}, "minSucceeded cannot exceed"),
        ({"count": 0}, "spec.count"),
        ({"count": 2, "parallelism": 0}, "spec.parallelism"),
        ({"count": 2, "dependsOn": ["Not_A_Name"]}, "spec.dependsOn"),
        ({"count": 2, "template": {"spec": {"handler": "h", "runAt": "2030-01-01T00:00:00Z"}}},
         "runAt"),
    ],
)  # fmt: skip
def test_bad_specs_are_refused_at_admission_naming_the_field(
    kube_api: object, namespace: str, kubectl: Kubectl, spec: dict[str, object], named: str
) -> None:
    body = {
        "apiVersion": "kubetasks.dev/v1alpha1",
        "kind": "TaskSet",
        "metadata": {"name": "bad"},
        "spec": {"template": {"spec": {"handler": "h"}}, **spec},
    }
    made = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
    assert made.returncode != 0
    assert named in made.stderr, made.stderr


@pytest.mark.timeout(300)
def test_redis_flushall_in_the_middle_of_a_set_loses_nothing_and_reruns_no_recorded_item(
    operator: Operator,
    task_workers: StartWorkers,
    tasksets: TaskSets,
    redis_url: str,
    tmp_path: Path,
) -> None:
    log = tmp_path / "items.log"
    task_workers(2, "--concurrency", "20")
    template = {
        "handler": "test.item",
        "kwargs": {"fail": FAIL, "flaky": FLAKY, "log": str(log), "seconds": 0.01},
    }
    tasksets.create("survivor", template | FAST_RETRIES, count=1000, parallelism=100)
    deadline = time.monotonic() + 120
    while (recorded := tasksets.status("survivor")).get("succeeded", 0) < 300:
        assert time.monotonic() < deadline, recorded
        time.sleep(0.1)
    assert recorded["phase"] == "Running" and recorded["succeeded"] < 990, recorded
    with redis.Redis.from_url(redis_url) as r:
        r.flushall()
        r.script_flush()  # as a restarted server has none of the scripts
    status = tasksets.wait_phase("survivor", "Failed", "Succeeded", timeout=240)
    told = operator.log.read_text()
    assert "Redis lost its items" in told
    assert "Traceback" not in told, told[-3000:]
    assert (status["succeeded"], status["failed"]) == (997, 3), status
    assert status["failedIndexes"] == "3,500,999"
    started = started_per_index(log)
    assert sorted(started) == list(range(1000)), "every item ran"
    before = parse_ranges(recorded["completedIndexes"])
    assert len(before) >= 300
    again = [i for i in before if len(started[i]) > 1 and i not in FLAKY]
    assert again == [], "items recorded done before the loss ran again"


def test_the_example_set_and_its_chord_run_as_the_readme_says(
    operator: Operator,
    task_workers: StartWorkers,
    tasks: Tasks,
    tasksets: TaskSets,
    kubectl: Kubectl,
    namespace: str,
) -> None:
    task_workers(1)
    applied = kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "07-taskset.yaml"))
    assert applied.returncode == 0, applied.stderr
    status = tasks.wait_phase("album", "Succeeded", "Failed")
    assert status["result"]["args"] == [
        ["a.png", "b.png", "c.png", "d.png", "e.png"], "made an album",
    ]  # fmt: skip
    assert tasksets.status("resize")["completedIndexes"] == "0-4"


def test_a_set_waits_for_the_task_it_depends_on_then_runs(
    operator: Operator, task_workers: StartWorkers, tasksets: TaskSets, tasks: Tasks
) -> None:
    tasksets.create("after-task", {"handler": "test.item"}, count=3, dependsOn=["first"])
    waiting = tasksets.wait_phase("after-task", "Waiting")
    assert waiting["phase"] == "Waiting" and waiting["total"] == 3
    assert {c["message"] for c in waiting["conditions"]} == {"waiting for first"}
    tasks.create("first", "test.add", args=[1, 2])
    task_workers(1)
    status = tasksets.wait_phase("after-task", "Succeeded", "Failed")
    assert (status["phase"], status["succeeded"]) == ("Succeeded", 3)
    assert tasks.status("first")["phase"] == "Succeeded"
