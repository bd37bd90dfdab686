"""Task resources end to end: kubectl-style creates on the real control plane, the operator
and workers as processes, real Redis. Assertions are on what `kubectl get` would show."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from fixtures.controlplane import Kubectl
from fixtures.operator import Operator, StartWorkers, Tasks
from kubetasks.queue.keys import QueueKeys
from kubetasks.vocabulary import TASK_FINALIZER

REPAIRED = "kubetasks_operator_repaired_outcomes_total"
RESTORED = "kubetasks_operator_restored_tasks_total"
SWEEPS = "kubetasks_operator_repair_sweeps_total"


def test_task_succeeds_with_its_result_and_conditions(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks, kubectl: Kubectl, namespace: str
) -> None:
    task_workers(1)
    tasks.create("add", "test.add", args=[2, 3])
    wait = kubectl(
        "wait", "--for=condition=Succeeded", "task/add", "-n", namespace, "--timeout=30s"
    )
    assert wait.returncode == 0, wait.stderr
    status = tasks.status("add")
    assert status["phase"] == "Succeeded"
    assert status["result"] == 5
    assert status["attempts"] == 1
    assert status["worker"] == f"{namespace}/worker-0"
    assert status["startedAt"] <= status["finishedAt"]
    shown = kubectl("get", "task", "add", "-n", namespace)
    assert "Succeeded" in shown.stdout and "test.add" in shown.stdout


def test_failures_retry_then_succeed_with_events(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    task_workers(1)
    tasks.create(
        "flaky",
        "kubetasks.fail",
        # Attempts that last over 50 ms are reported Running; quicker ones go straight to
        # their outcome (one status write fewer).
        kwargs={"succeed_on_attempt": 3, "seconds": 0.3},
        maxRetries=5,
        retryBackoff={"baseSeconds": 0.2, "maxSeconds": 1, "jitter": False},
    )
    status = tasks.wait_phase("flaky", "Succeeded", "Failed")
    assert (status["phase"], status["attempts"]) == ("Succeeded", 3)
    assert status["result"] == {"succeeded_on_attempt": 3}
    events = tasks.wait_event("flaky", "Succeeded")
    # Event timestamps have one-second resolution: check presence, not order. (A Task a
    # worker takes at once is never shown Queued.)
    assert {"Running", "Retrying", "Succeeded"} <= set(events), events


def test_a_task_left_waiting_is_shown_queued_and_guarded_by_a_finalizer(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks, redis_url: str
) -> None:
    # No worker yet: after the operator's grace (1 s) the Task shows Queued and carries the
    # finalizer that makes its deletion clean Redis even while the operator is down.
    uid = tasks.create("patient", "test.add", args=[1, 1])["metadata"]["uid"]
    status = tasks.wait_phase("patient", "Queued")
    assert status["queuedAt"] and status["attempts"] == 0
    body = tasks.get("patient")
    assert body is not None and TASK_FINALIZER in body["metadata"]["finalizers"]
    assert "Queued" in tasks.wait_event("patient", "Queued")
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        assert r.zscore(QueueKeys(tasks.namespace, "default").pending, uid) is not None
    task_workers(1)
    assert tasks.wait_phase("patient", "Succeeded")["result"] == 2


def test_a_task_deleted_at_once_leaves_nothing_in_redis(
    operator: Operator, tasks: Tasks, redis_url: str
) -> None:
    # Deleted within the grace, before it has a finalizer: the watch's DELETED event cleans up.
    uids = []
    for i in range(5):
        uids.append(tasks.create(f"fleeting-{i}", "kubetasks.echo")["metadata"]["uid"])
        tasks.delete(f"fleeting-{i}")
    kept = tasks.create("kept", "kubetasks.echo")["metadata"]["uid"]
    tasks.wait_phase("kept", "Queued")
    queue = QueueKeys(tasks.namespace, "default")
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        deadline = time.monotonic() + 10
        while any(r.exists(queue.task(u)) for u in uids):
            assert time.monotonic() < deadline, "deleted tasks still in Redis"
            time.sleep(0.1)
        assert r.zrange(queue.pending, 0, -1) == [kept]


def test_hopeless_tasks_fail_with_a_reason(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    task_workers(1)
    tasks.create("unknown", "no.such.handler")
    tasks.create("bad-args", "test.add", args=[1])
    tasks.create("permanent", "kubetasks.fail", kwargs={"permanent": True, "message": "nope"})
    tasks.create("spent", "kubetasks.fail", maxRetries=1, retryBackoff={"baseSeconds": 0.1})
    expectations = {
        "unknown": ("HandlerNotFoundError", "no handler registered", 1),
        "bad-args": ("InvalidArgumentsError", "missing a required argument", 1),
        "permanent": ("PermanentTaskError", "nope", 1),
        "spent": ("RuntimeError", "gave up after 2 attempts", 2),
    }
    for name, (error_type, message, attempts) in expectations.items():
        status = tasks.wait_phase(name, "Failed", "Succeeded")
        assert status["phase"] == "Failed", (name, status)
        assert status["error"]["type"] == error_type, (name, status["error"])
        assert message in status["error"]["message"], (name, status["error"])
        assert status["attempts"] == attempts
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert failed["status"] == "True"


def test_timeout_fails_the_attempt(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    task_workers(1)
    tasks.create("slow", "kubetasks.sleep", args=[30], timeoutSeconds=1, maxRetries=0)
    status = tasks.wait_phase("slow", "Failed", "Succeeded", timeout=15)
    assert status["error"]["type"] == "TaskTimeoutError"


def test_cancel_a_running_task_and_a_waiting_one(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    task_workers(1)
    tasks.create("long", "kubetasks.sleep", args=[60])
    tasks.create("later", "kubetasks.echo", delaySeconds=3600)
    tasks.wait_phase("long", "Running")
    assert tasks.wait_phase("later", "Scheduled")["phase"] == "Scheduled"
    tasks.patch("long", {"cancel": True})
    tasks.patch("later", {"cancel": True})
    assert tasks.wait_phase("long", "Cancelled", timeout=20)["phase"] == "Cancelled"
    assert tasks.wait_phase("later", "Cancelled")["phase"] == "Cancelled"


def test_deleting_a_task_removes_it_from_redis(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks, redis_url: str
) -> None:
    tasks.create("doomed", "kubetasks.echo", delaySeconds=3600)
    uid = tasks.create("kept", "kubetasks.echo", delaySeconds=3600)["metadata"]["uid"]
    doomed = tasks.get("doomed")
    assert doomed is not None
    tasks.wait_phase("doomed", "Scheduled")
    tasks.wait_phase("kept", "Scheduled")
    tasks.delete("doomed")
    deadline = time.monotonic() + 20
    while tasks.get("doomed") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tasks.get("doomed") is None
    queue = QueueKeys(tasks.namespace, "default")
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        scheduled = r.zrange(queue.scheduled, 0, -1)
        assert scheduled == [uid]
        assert not r.exists(queue.task(doomed["metadata"]["uid"]))


def test_finished_tasks_are_deleted_after_their_ttl(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    task_workers(1)
    tasks.create("short-lived", "kubetasks.echo", ttlSecondsAfterFinished=1)
    tasks.create("kept", "kubetasks.echo")
    tasks.wait_phase("short-lived", "Succeeded")
    deadline = time.monotonic() + 15
    while tasks.get("short-lived") is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tasks.get("short-lived") is None
    assert tasks.status("kept")["phase"] == "Succeeded"


def test_dependency_chain_passes_results_along(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    task_workers(1)
    # c waits for b, b waits for a; created out of order on purpose.
    tasks.create("c", "test.add", args=[100], dependsOn=["b"], dependencyResults="Args")
    tasks.create("b", "test.add", args=[10], dependsOn=["a"], dependencyResults="Args")
    assert tasks.wait_phase("c", "Waiting")["phase"] == "Waiting"
    tasks.create("a", "test.add", args=[1, 2])
    assert tasks.wait_phase("c", "Succeeded", "Failed")["result"] == 113
    assert tasks.status("b")["result"] == 13


def test_a_failed_dependency_fails_its_dependents(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    task_workers(1)
    tasks.create("root", "kubetasks.fail", kwargs={"permanent": True})
    tasks.create("child", "kubetasks.echo", dependsOn=["root"])
    status = tasks.wait_phase("child", "Failed", "Succeeded")
    assert status["phase"] == "Failed"
    assert "dependency root ended Failed" in status["error"]["message"]


def test_tasks_wait_while_redis_is_down_and_run_when_it_returns(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks, redis_server: object
) -> None:
    server = redis_server
    server.stop(keep_data=True)  # type: ignore[attr-defined]
    try:
        tasks.create("patient", "kubetasks.echo", args=["hi"])
        status = tasks.wait_phase("patient", "Pending")
        reasons = {c["reason"] for c in status["conditions"]}
        assert reasons == {"RedisUnavailable"}
    finally:
        server.start()  # type: ignore[attr-defined]
    task_workers(1)
    assert tasks.wait_phase("patient", "Succeeded", timeout=30)["result"] == {
        "args": ["hi"],
        "kwargs": {},
    }


def test_outcomes_reach_the_resource_when_the_worker_cannot_write_them(
    repairing_operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    # A worker without Kubernetes access (as with missing RBAC): Redis records the outcome,
    # and the operator's repair loop copies it onto the resource, once the worker has had
    # its chance (SETTLE_AFTER), and counts what it copied.
    task_workers(1, "--report-status", "none")
    tasks.create("quiet", "test.add", args=[20, 22])
    tasks.create("quiet-fail", "kubetasks.fail", kwargs={"permanent": True, "message": "no"})
    status = tasks.wait_phase("quiet", "Succeeded", "Failed", timeout=60)
    assert (status["phase"], status["result"], status["attempts"]) == ("Succeeded", 42, 1)
    assert "worker" not in status, "the worker wrote nothing: repair did"
    status = tasks.wait_phase("quiet-fail", "Failed", "Succeeded", timeout=60)
    assert status["error"]["type"] == "PermanentTaskError"
    assert status["error"]["message"] == "no"
    # The counter moves when the sweep that wrote them ends, just after its last write.
    deadline = time.monotonic() + 10
    while repairing_operator.metrics()[REPAIRED] < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert repairing_operator.metrics()[REPAIRED] == 2
    log = repairing_operator.log.read_text()
    assert "finished tasks their workers never reported" in log, log[-3000:]


@pytest.mark.timeout(300)
def test_a_burst_is_reported_by_its_workers_and_repair_finds_nothing(
    repairing_operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    # Repair sweeps every second through the burst, so an outcome a worker failed to write
    # would reach its Task only through repair, and be counted: the count must stay 0, and
    # every Task must show the worker that ran it, in one attempt (no retry, no lease taken
    # back).
    workers = {f"{tasks.namespace}/worker-{i}" for i in range(2)}
    task_workers(2, "--concurrency", "20")
    specs = [
        (f"burst-{i:03d}", "test.add", {"args": [i, 1]})
        if i % 3
        else (f"burst-{i:03d}", "kubetasks.sleep", {"args": [0.2]})
        for i in range(300)
    ]
    before = repairing_operator.metrics()[SWEEPS]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda s: tasks.create(s[0], s[1], **s[2]), specs))
    items = tasks.wait_all_terminal(300, timeout=240)
    swept = repairing_operator.metrics()[SWEEPS]
    assert swept > before, "repair swept while the burst ran"
    wrong = [
        (t["metadata"]["name"], t["status"])
        for t in items
        if t["status"]["phase"] != "Succeeded"
        or t["status"]["attempts"] != 1
        or t["status"].get("worker") not in workers
    ]
    assert not wrong, wrong[:5]
    for t in items:
        i = int(t["metadata"]["name"].removeprefix("burst-"))
        assert t["status"]["result"] == (i + 1 if i % 3 else 0.2), t["status"]
    # Two more sweeps complete: any sweep that saw a Task unfinished has been counted.
    deadline = time.monotonic() + 30
    while (metrics := repairing_operator.metrics())[SWEEPS] < swept + 2:
        assert time.monotonic() < deadline, "the repair loop stopped sweeping"
        time.sleep(0.2)
    assert (metrics[REPAIRED], metrics[RESTORED]) == (0, 0)
    assert "never reported" not in repairing_operator.log.read_text()
