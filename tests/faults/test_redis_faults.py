"""Redis faults in the middle of a burst of Tasks: the data lost, the server restarted empty,
the server gone for a while. Each ends with every Task Succeeded within seconds of the
fault (of the loss itself, for a loss), no Task that had finished running again, and each
process telling the outage in at most two log lines.

The operator and a worker run as processes against the real control plane and a Redis
server of this module's own (the faults would hurt the tests that share the session's);
the repair's resync is far beyond the test (``PRIMARY_PATH_RESYNC``), so nothing here
recovers through the periodic repair: a loss must be noticed by the operator itself.
Tasks record every run (``test.tally``: task id and pid, one O_APPEND line).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from kubernetes import client as k8s
from recovery import runs_by_uid, seconds_until_succeeded

from devenv.controlplane import ControlPlane
from devenv.redis_server import RedisServer, free_port
from fixtures.operator import Operator, Process, Tasks, kube_env

#: Tasks in a burst, how long each runs, and the worker's concurrency: about 1.5 s of work.
BURST, RUN_SECONDS, CONCURRENCY = 60, 0.25, 10
#: The bound of the issue: every Task Succeeded this long after the fault ends.
RECOVERY_SECONDS = 5.0
#: How long the server is gone in the outage scenario.
OUTAGE_SECONDS = 30.0
#: Log lines a process may spend on one outage (its start and its end).
OUTAGE_LINES = 2


@dataclass
class Stack:
    server: RedisServer
    operator: Operator
    worker: Process
    tasks: Tasks
    tally: Path

    def runs(self) -> collections.Counter[str]:
        return runs_by_uid(self.tally)

    def burst(self, prefix: str) -> list[str]:
        names = [f"{prefix}-{i:03d}" for i in range(BURST)]
        for name in names:
            self.tasks.create(name, "test.tally", args=[str(self.tally), RUN_SECONDS])
        return names

    def phases(self) -> dict[str, str | None]:
        return {t["metadata"]["name"]: (t.get("status") or {}).get("phase")
                for t in self.tasks.list()}  # fmt: skip

    def uid_of(self) -> dict[str, str]:
        return {t["metadata"]["uid"]: t["metadata"]["name"] for t in self.tasks.list()}

    def wait_some_done(self, names: list[str], count: int) -> set[str]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = {n for n, p in self.phases().items() if n in names and p == "Succeeded"}
            if len(done) >= count:
                return done
            time.sleep(0.05)
        raise AssertionError(f"fewer than {count} Tasks finished in 60 s")


def log_lines(path: Path, since: int, *words: str) -> list[str]:
    """Lines written to a log after its first ``since`` characters that mention any of
    ``words`` (as written: the test namespaces' names hold lowercase "redis") or carry a
    traceback."""
    text = path.read_text()[since:]
    return [
        line for line in text.splitlines() if "Traceback" in line or any(w in line for w in words)
    ]


@pytest.fixture
def stack(
    control_plane: ControlPlane, kube_api: k8s.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[Stack]:
    server = RedisServer(free_port(), tmp_path / "redis").start()
    env = kube_env(control_plane, server.url)
    operator = Operator(env, tmp_path / "operator.log", namespace)
    worker_env = env | {"POD_NAME": "worker-0", "POD_NAMESPACE": namespace}
    argv = [*operator.argv[:3], "worker", "--queues", "default", "--import", "handlers_for_tests",
            "--concurrency", str(CONCURRENCY), "--report-status", "kubernetes",
            "--log-level", "info"]  # fmt: skip
    worker = Process(argv, worker_env, tmp_path / "worker.log")
    yield Stack(server, operator, worker, Tasks(kube_api, namespace), tmp_path / "tally")
    worker.stop()
    operator.stop()
    server.stop()


def assert_nothing_finished_ran_again(stack: Stack, finished_before: set[str]) -> int:
    """Every run beyond the first is of a Task whose outcome was recorded nowhere at the
    fault: none that was Succeeded on its resource. Those are the attempts running at the
    loss and those that had just ended, their ack and status write still on their way (the
    loss took the ack; ``result dropped``): at most two slots' worth. Returns how many Tasks
    ran twice."""
    names = stack.uid_of()
    again = {names[uid] for uid, n in stack.runs().items() if n > 1}
    assert not again & finished_before, f"finished Tasks ran again: {again & finished_before}"
    assert len(again) <= 2 * CONCURRENCY, f"more Tasks ran twice than were in flight: {again}"
    return len(again)


@pytest.mark.parametrize("fault", ["flushall", "restarted-empty"])
def test_a_loss_of_redis_data_mid_burst_is_repaired_in_seconds(
    stack: Stack, fault: str, record_property: Callable[[str, object], None]
) -> None:
    names = stack.burst("loss")
    finished_before = stack.wait_some_done(names, BURST // 4)
    marks = {p: p.log.stat().st_size for p in (stack.operator, stack.worker)}
    if fault == "flushall":
        with redis.Redis.from_url(stack.server.url) as r:
            r.flushall()
    else:
        stack.server.stop()  # no append-only file: it comes back empty
        stack.server.start()
    took = seconds_until_succeeded(stack.tasks, names, RECOVERY_SECONDS + 25)
    twice = assert_nothing_finished_ran_again(stack, finished_before)
    print(f"\n{fault}: all {BURST} Succeeded {took:.1f} s after the loss; {twice} ran twice")
    record_property("recovery_seconds", round(took, 2))
    record_property("ran_twice", twice)
    assert took <= RECOVERY_SECONDS
    operator_says = log_lines(stack.operator.log, marks[stack.operator], "lost its data")
    assert len(operator_says) == 1, operator_says
    for process in (stack.operator, stack.worker):
        # Besides the loss and the re-enqueue it caused (both "Redis ... lost"), at most one
        # outage's lines: a restart's failed connections are one event, not one per call.
        told = log_lines(process.log, marks[process], "Redis", "unreachable", "Connection")
        outage = [line for line in told if "lost" not in line]
        assert len(outage) <= OUTAGE_LINES, told
        assert len(told) - len(outage) <= 2, told


def test_redis_gone_for_a_while_is_told_in_two_lines_and_work_resumes_at_once(
    stack: Stack, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    # An append-only file, as the chart's Redis has: the data survives the outage.
    stack.server.stop()
    stack.server.appendonly = True
    stack.server.start()
    names = stack.burst("outage")
    finished_before = stack.wait_some_done(names, BURST // 4)
    marks = {p: p.log.stat().st_size for p in (stack.operator, stack.worker)}
    stack.server.stop(keep_data=True)
    during = [f"during-{i}" for i in range(5)]
    for name in during:  # created while Redis is gone: they wait Pending
        stack.tasks.create(name, "test.tally", args=[str(stack.tally), 0])
    time.sleep(OUTAGE_SECONDS)
    stack.server.start()
    took = seconds_until_succeeded(stack.tasks, [*names, *during], RECOVERY_SECONDS + 25)
    twice = assert_nothing_finished_ran_again(stack, finished_before)
    print(f"\noutage of {OUTAGE_SECONDS:.0f} s: all Succeeded {took:.1f} s after Redis returned;"
          f" {twice} ran twice")  # fmt: skip
    record_property("recovery_seconds", round(took, 2))
    assert took <= RECOVERY_SECONDS
    for process in (stack.operator, stack.worker):
        told = log_lines(process.log, marks[process], "Redis", "unreachable", "Connection")
        assert len(told) <= OUTAGE_LINES, f"{process.log.name}: {told}"


#: How long Redis is still coming up after the operator started, in the install scenario.
LATE_REDIS_SECONDS = 3.0


def test_tasks_applied_while_redis_still_starts_are_queued_the_normal_way(
    control_plane: ControlPlane, kube_api: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """`helm install` then `kubectl apply` at once: the operator is up a few seconds before
    its Redis answers. The Tasks applied then are queued through the normal path once Redis
    answers (the operator waits for it before it takes events), not left Pending for the
    recovery to queue. The repair is out of reach (``PRIMARY_PATH_RESYNC``); the counters of
    what the recovery queued and settled must stay at zero."""
    server = RedisServer(free_port(), tmp_path / "redis")  # not started yet
    env = kube_env(control_plane, server.url)
    starting: list[Operator] = []
    thread = threading.Thread(
        target=lambda: starting.append(Operator(env, tmp_path / "operator.log", namespace))
    )
    thread.start()
    worker = None
    try:
        tasks = Tasks(kube_api, namespace)
        names = [f"early-{i}" for i in range(5)]
        for name in names:
            tasks.create(name, "kubetasks.echo", args=[name])
        time.sleep(LATE_REDIS_SECONDS)
        server.start()
        thread.join(60)
        (operator,) = starting
        worker_env = env | {"POD_NAME": "worker-0", "POD_NAMESPACE": namespace}
        worker = Process(
            [*operator.argv[:3], "worker", "--queues", "default", "--report-status",
             "kubernetes", "--log-level", "info"],
            worker_env,
            tmp_path / "worker.log",
        )  # fmt: skip
        seconds_until_succeeded(tasks, names, 30)
        metrics = operator.metrics()
        assert metrics["kubetasks_operator_restored_tasks_total"] == 0
        assert metrics["kubetasks_operator_repaired_outcomes_total"] == 0
        phases = [e["status"].get("phase") for e in tasks.list()]
        assert phases == ["Succeeded"] * len(names)
    finally:
        thread.join(60)
        if worker is not None:
            worker.stop()
        for operator in starting:
            operator.stop()
        server.stop()
