"""A worker whose API server goes away for a while (issue 19): the work goes on, and once
the API server is back every Task shows its outcome within seconds, not at the operator's
next repair sweep; the outage costs two log lines, not one per failed write.

Real control plane, Redis, operator (direct kubeconfig, periodic repair an hour away) and
one worker process whose API traffic goes through a cuttable proxy.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.controlplane import ControlPlane
from fixtures.operator import Operator, Process, Tasks, kube_env
from fixtures.proxy import Proxy
from kubetasks.client import Client

COUNT = 50
OUTAGE = 8.0


@pytest.fixture
def proxied_worker(
    control_plane: ControlPlane, redis_url: str, namespace: str, proxy: Proxy, tmp_path: Path
) -> Iterator[Process]:
    kubeconfig = proxy.through(control_plane.admin).write_kubeconfig(tmp_path / "kubeconfig")
    env = kube_env(control_plane, redis_url) | {
        "KUBECONFIG": str(kubeconfig),
        "POD_NAME": "worker-0",
        "POD_NAMESPACE": namespace,
    }
    argv = [sys.executable, "-m", "kubetasks.cli", "worker", "--queues", "default",
            "--concurrency", "10", "--import", "handlers_for_tests",
            "--report-status", "kubernetes", "--log-level", "info"]  # fmt: skip
    worker = Process(argv, env, tmp_path / "worker.log")
    yield worker
    worker.stop()


def phases(tasks: Tasks) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in tasks.list():
        phase = (task.get("status") or {}).get("phase") or "None"
        counts[phase] = counts.get(phase, 0) + 1
    return counts


def test_statuses_trail_an_api_outage_by_seconds_and_it_is_logged_twice(
    operator: Operator, proxied_worker: Process, proxy: Proxy, tasks: Tasks,
    redis_url: str, namespace: str,
) -> None:  # fmt: skip
    uids = [
        tasks.create(f"t-{i:02}", "kubetasks.sleep", kwargs={"seconds": 0.2 + 0.2 * (i % 5)})[
            "metadata"
        ]["uid"]
        for i in range(COUNT)
    ]
    deadline = time.monotonic() + 30
    while not {"Running", "Succeeded"} & set(phases(tasks)):
        assert time.monotonic() < deadline, phases(tasks)
        time.sleep(0.05)
    assert proxy.forwarded > 0  # the worker's writes do go through the proxy
    proxy.cut()
    time.sleep(OUTAGE)
    # The work went on without the API server: Redis has every outcome, the Tasks do not.
    with Client(redis_url, namespace=namespace) as client:
        states = [info.state if (info := client.status(uid)) else None for uid in uids]
    assert states == ["succeeded"] * COUNT
    before = phases(tasks)
    assert before.get("Succeeded", 0) < COUNT / 2, before
    proxy.restore()
    restored = time.monotonic()
    while (now := phases(tasks)) != {"Succeeded": COUNT}:
        assert time.monotonic() - restored < 5, now
        time.sleep(0.05)
    took = time.monotonic() - restored
    print(f"\n{COUNT} Tasks Succeeded {took:.2f}s after a {OUTAGE:g}s API outage ended "
          f"(before: {before}); {proxy.refused} connections refused during it")  # fmt: skip
    # One probe at a time while cut, at most a second apart: not a retry storm.
    assert proxy.refused <= OUTAGE + 10
    proxied_worker.stop()
    log = proxied_worker.log.read_text().splitlines()
    loud = [line for line in log if " INFO " not in line]
    assert len(loud) == 2, "\n".join(loud)
    failing, back = loud
    assert " WARNING kubetasks.worker: Task status writes are failing" in failing
    assert " WARNING kubetasks.worker: Task status writes succeed again after" in back
    assert "0 dropped" in back
    waited = int(re.search(r"(\d+) writes waited", back).group(1))  # type: ignore[union-attr]
    assert waited >= COUNT - before.get("Succeeded", 0)
