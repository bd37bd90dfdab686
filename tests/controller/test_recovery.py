"""Bursts of Tasks through crashes: a worker killed mid-task, Redis flushed, the operator
restarted. Every Task must end terminal, in the phase its handler earns, none lost."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from fixtures.operator import Operator, StartWorkers, Tasks
from kubetasks.client import Client
from kubetasks.queue.keys import QueueKeys


def create_many(tasks: Tasks, specs: list[tuple[str, str, dict[str, Any]]]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda s: tasks.create(s[0], s[1], **s[2]), specs))


@pytest.mark.timeout(300)
def test_200_mixed_tasks_reach_the_right_phases(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    task_workers(2, "--concurrency", "20")
    kinds: list[tuple[str, dict[str, Any], str]] = [
        ("kubetasks.echo", {"args": [1], "priority": 5}, "Succeeded"),
        ("test.add", {"args": [1, 2], "queue": "default"}, "Succeeded"),
        ("kubetasks.sleep", {"args": [0.2], "delaySeconds": 1}, "Succeeded"),
        (
            "kubetasks.fail",
            {"kwargs": {"succeed_on_attempt": 2}, "retryBackoff": {"baseSeconds": 0.1}},
            "Succeeded",
        ),
        ("kubetasks.fail", {"kwargs": {"permanent": True}}, "Failed"),
        ("no.such.handler", {}, "Failed"),
        ("kubetasks.sleep", {"args": [5], "timeoutSeconds": 1, "maxRetries": 0}, "Failed"),
        ("kubetasks.echo", {"activeDeadlineSeconds": 1, "delaySeconds": 3}, "DeadlineExceeded"),
    ]
    specs, expected = [], {}
    for i in range(200):
        handler, spec, phase = kinds[i % len(kinds)]
        name = f"mixed-{i:03d}"
        specs.append((name, handler, spec))
        expected[name] = phase
    create_many(tasks, specs)
    items = tasks.wait_all_terminal(200, timeout=240)
    got = {t["metadata"]["name"]: t["status"]["phase"] for t in items}
    wrong = {n: (got[n], want) for n, want in expected.items() if got[n] != want}
    assert not wrong, wrong


@pytest.mark.timeout(300)
def test_kill_9_of_a_worker_mid_task_loses_nothing(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    victim, survivor = task_workers(2, "--concurrency", "10", "--lease", "2")
    create_many(
        tasks,
        [(f"job-{i:02d}", "test.mark_file", {"args": [str(marks), 1.5]}) for i in range(40)],
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = marks.read_text().split() if marks.exists() else []
        if str(victim.pid) in pids:
            break
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    items = tasks.wait_all_terminal(40, timeout=120)
    phases = {t["status"]["phase"] for t in items}
    assert phases == {"Succeeded"}
    rerun = [t for t in items if t["status"]["attempts"] == 2]
    assert rerun, "the killed worker held tasks; they must have run again"
    assert all(t["status"]["result"] == survivor.pid for t in rerun)


@pytest.mark.timeout(300)
def test_redis_flushall_during_a_burst_loses_nothing(
    repairing_operator: Operator, task_workers: StartWorkers, tasks: Tasks, redis_url: str
) -> None:
    # Redis loses its data while most of the burst still waits: the repair loop (the safety
    # net under test, sweeping every second) enqueues the lost Tasks again from the resources.
    task_workers(2, "--concurrency", "20")
    specs = [(f"burst-{i:03d}", "kubetasks.sleep", {"args": [1]}) for i in range(300)]
    creator = threading.Thread(target=create_many, args=(tasks, specs))
    creator.start()
    deadline = time.monotonic() + 60
    while sum((t.get("status") or {}).get("phase") == "Succeeded" for t in tasks.list()) < 40:
        assert time.monotonic() < deadline, "the burst never got going"
        time.sleep(0.2)
    with redis.Redis.from_url(redis_url) as r:
        r.flushall()
    creator.join()
    items = tasks.wait_all_terminal(300, timeout=240)
    assert {t["status"]["phase"] for t in items} == {"Succeeded"}
    assert len(items) == 300
    assert repairing_operator.metrics()["kubetasks_operator_restored_tasks_total"] > 0


@pytest.mark.timeout(300)
def test_operator_restart_during_a_burst_of_500_loses_nothing(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    task_workers(2, "--concurrency", "50")
    specs = [(f"restart-{i:03d}", "kubetasks.echo", {"args": [i]}) for i in range(500)]
    creator = threading.Thread(target=create_many, args=(tasks, specs))
    creator.start()
    time.sleep(2)
    operator.restart()
    creator.join()
    items = tasks.wait_all_terminal(500, timeout=240)
    assert {t["status"]["phase"] for t in items} == {"Succeeded"}
    results = sorted(t["status"]["result"]["args"][0] for t in items)
    assert results == list(range(500))


def test_a_task_deleted_while_the_operator_is_down_is_swept_from_redis(
    operator: Operator, tasks: Tasks, redis_url: str
) -> None:
    # A Task is queued, the operator dies before the Task's grace (no finalizer yet), the
    # Task is deleted: the restarted operator's repair forgets it in Redis, and leaves
    # alone a fast-path task of the same queue (it has no resource to look for).
    with Client(redis_url, namespace=tasks.namespace) as client:
        fast = client.enqueue("kubetasks.echo", "fast").id
    uid = tasks.create("orphan", "kubetasks.echo")["metadata"]["uid"]
    queue = QueueKeys(tasks.namespace, "default")
    pending = queue.pending
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        deadline = time.monotonic() + 10
        while r.zscore(pending, uid) is None:
            assert time.monotonic() < deadline, "the operator never queued the task"
            time.sleep(0.01)
        operator.kill()
        body = tasks.get("orphan")
        assert body is not None
        assert not body["metadata"].get("finalizers"), body["metadata"]
        tasks.delete("orphan")
        assert tasks.get("orphan") is None
        operator.start()
        operator.wait_ready()
        deadline = time.monotonic() + 20
        while r.exists(queue.task(uid)):
            assert time.monotonic() < deadline, "the orphan is still in Redis"
            time.sleep(0.1)
        assert r.zrange(pending, 0, -1) == [fast]
