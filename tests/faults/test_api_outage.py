"""The API server out of reach of the operator and the worker for a while, in the middle of a
burst: every Task Succeeded within seconds of its return (those created during the outage
too: the operator's watch resumes), and each process tells the outage in at most two lines.

Both processes reach the real API server through a cuttable loopback proxy
(``fixtures.proxy``); the test itself talks to the API server directly, as a user would while
the operator's network is down. The repair's resync is far beyond the test.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from recovery import seconds_until_succeeded

from devenv.controlplane import ControlPlane
from fixtures.operator import Operator, Process, Tasks, kube_env
from fixtures.proxy import Proxy

BURST, RUN_SECONDS, CONCURRENCY = 60, 0.25, 10
OUTAGE_SECONDS = 12.0
RECOVERY_SECONDS = 5.0
OUTAGE_LINES = 2


@pytest.fixture
def proxied(
    control_plane: ControlPlane, redis_url: str, namespace: str, proxy: Proxy, tmp_path: Path
) -> Iterator[tuple[Proxy, Operator, Process]]:
    kubeconfig = proxy.through(control_plane.admin).write_kubeconfig(tmp_path / "kubeconfig")
    env = kube_env(control_plane, redis_url) | {"KUBECONFIG": str(kubeconfig)}
    operator = Operator(env, tmp_path / "operator.log", namespace)
    worker_env = env | {"POD_NAME": "worker-0", "POD_NAMESPACE": namespace}
    argv = [sys.executable, "-m", "kubetasks.cli", "worker", "--queues", "default",
            "--concurrency", str(CONCURRENCY), "--import", "handlers_for_tests",
            "--report-status", "kubernetes", "--log-level", "info"]  # fmt: skip
    worker = Process(argv, worker_env, tmp_path / "worker.log")
    yield proxy, operator, worker
    worker.stop()
    operator.stop()


def outage_lines(path: Path, since: int) -> list[str]:
    """Warnings and errors written after ``since`` characters (the outage's, or others)."""
    text = path.read_text()[since:]
    return [line for line in text.splitlines()
            if " WARNING " in line or " ERROR " in line or "Traceback" in line]  # fmt: skip


def test_an_api_server_outage_ends_with_all_work_done_in_seconds_and_two_lines(
    proxied: tuple[Proxy, Operator, Process],
    kube_api: k8s.ApiClient,
    namespace: str,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    proxy, operator, worker = proxied
    tasks = Tasks(kube_api, namespace)
    tally = tmp_path / "tally"
    names = [f"api-{i:03d}" for i in range(BURST)]
    for name in names:
        tasks.create(name, "test.tally", args=[str(tally), RUN_SECONDS])
    deadline = time.monotonic() + 60
    while sum(t.get("status", {}).get("phase") == "Succeeded" for t in tasks.list()) < 15:
        assert time.monotonic() < deadline, "the burst never got going"
        time.sleep(0.05)
    marks = {p: p.log.stat().st_size for p in (operator, worker)}
    proxy.cut()
    during = [f"during-{i}" for i in range(5)]
    for name in during:
        tasks.create(name, "test.tally", args=[str(tally), 0])
    time.sleep(OUTAGE_SECONDS)
    proxy.restore()
    took = seconds_until_succeeded(tasks, [*names, *during], RECOVERY_SECONDS + 25)
    want = {*names, *during}
    runs = tally.read_text().splitlines()
    print(f"\nAPI outage of {OUTAGE_SECONDS:.0f} s: all {len(want)} Succeeded {took:.1f} s after"
          f" it ended; {len(runs) - len(want)} extra runs")  # fmt: skip
    record_property("recovery_seconds", round(took, 2))
    assert took <= RECOVERY_SECONDS
    assert len(runs) == len(want), "an API outage makes nothing run twice"
    for process in (operator, worker):
        lines = outage_lines(process.log, marks[process])
        assert len(lines) <= OUTAGE_LINES, f"{process.log.name}: {lines}"
