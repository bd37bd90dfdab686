"""The operator killed (SIGKILL) mid-burst and started again 1.2 s later, Tasks created while
it was down: every Task Succeeded within seconds of its return, none ran twice, and the
worker never noticed. (The PeriodicTask slot missed meanwhile is
``tests/controller/test_periodic.py``'s.) The repair's resync is far beyond the test: the
restarted operator's watch admits what came meanwhile."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from kubernetes import client as k8s
from recovery import seconds_until_succeeded

from devenv.controlplane import ControlPlane
from fixtures.operator import Operator, Process, Tasks, kube_env

BURST, RUN_SECONDS, CONCURRENCY = 60, 0.25, 10
DOWN_SECONDS = 1.2
RECOVERY_SECONDS = 5.0


def test_a_killed_operator_catches_up_in_seconds_and_runs_nothing_twice(
    control_plane: ControlPlane,
    redis_url: str,
    namespace: str,
    kube_api: k8s.ApiClient,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    env = kube_env(control_plane, redis_url)
    operator = Operator(env, tmp_path / "operator.log", namespace)
    argv = [sys.executable, "-m", "kubetasks.cli", "worker", "--queues", "default",
            "--concurrency", str(CONCURRENCY), "--import", "handlers_for_tests",
            "--report-status", "kubernetes", "--log-level", "info"]  # fmt: skip
    worker = Process(argv, env | {"POD_NAME": "worker-0", "POD_NAMESPACE": namespace},
                     tmp_path / "worker.log")  # fmt: skip
    tasks = Tasks(kube_api, namespace)
    tally = tmp_path / "tally"
    try:
        names = [f"burst-{i:03d}" for i in range(BURST)]
        for name in names[: BURST // 2]:
            tasks.create(name, "test.tally", args=[str(tally), RUN_SECONDS])
        operator.kill()
        for name in names[BURST // 2 :]:  # while no operator runs
            tasks.create(name, "test.tally", args=[str(tally), RUN_SECONDS])
        time.sleep(DOWN_SECONDS)
        operator.start()
        took = seconds_until_succeeded(tasks, names, RECOVERY_SECONDS + 25)
        runs = tally.read_text().splitlines()
        print(f"\noperator down {DOWN_SECONDS} s mid-burst: all {BURST} Succeeded {took:.1f} s"
              f" after its restart; {len(runs) - BURST} extra runs")  # fmt: skip
        record_property("recovery_seconds", round(took, 2))
        assert took <= RECOVERY_SECONDS
        assert len(runs) == BURST, "a restarted operator makes nothing run twice"
        assert "Traceback" not in (tmp_path / "worker.log").read_text()
    finally:
        worker.stop()
        operator.stop()
