"""Workers expose Prometheus metrics a dashboard or HPA can use."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from devenv.redis_server import free_port
from kubetasks.client import AsyncClient
from kubetasks.errors import TaskFailedError

TESTS = Path(__file__).resolve().parent.parent


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text: str = response.read().decode()
        return text


async def test_worker_serves_task_counts_and_durations(
    client: AsyncClient, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = os.environ | {"PYTHONPATH": f"{TESTS / 'worker'}{os.pathsep}{TESTS}"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "kubetasks.cli", "worker", "--redis-url", redis_url,
         "--import", "handlers_for_tests", "--metrics-port", str(port),
         "--report-status", "none", "--log-level", "warning"],
        env=env,
    )  # fmt: skip
    try:
        ok = [await client.enqueue("test.add", i, 1) for i in range(5)]
        bad = await client.enqueue("test.permanent")
        for handle in ok:
            await handle.result(timeout=10)
        with pytest.raises(TaskFailedError):
            await bad.result(timeout=10)
        text = ""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                text = scrape(port)
                break
            except OSError:
                time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(10)
    assert (
        'kubetasks_worker_tasks_total{handler="test.add",outcome="succeeded",queue="default"} 5.0'
        in text
    )
    assert (
        'kubetasks_worker_tasks_total{handler="test.permanent",outcome="failed",queue="default"}'
        " 1.0" in text
    )
    assert (
        'kubetasks_worker_task_duration_seconds_count{handler="test.add",queue="default"} 5.0'
        in text
    )
    assert "kubetasks_worker_tasks_in_flight 0.0" in text
