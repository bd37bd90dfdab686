"""Workers expose Prometheus metrics a dashboard or HPA can use, and the chart's Grafana
dashboard asks only for metrics that a worker and the operator serve."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from devenv.redis_server import free_port
from kubetasks.client import AsyncClient
from kubetasks.errors import TaskFailedError
from kubetasks.metrics import OperatorMetrics, serve

TESTS = Path(__file__).resolve().parent.parent
DASHBOARD = TESTS.parent / "charts" / "kubetasks" / "dashboards" / "kubetasks.json"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text: str = response.read().decode()
        return text


def scrape_when_up(port: int, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return scrape(port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def served_names(text: str) -> set[str]:
    """Every sample name of a /metrics page (a histogram's _bucket, _sum and _count)."""
    return {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    } | {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def start_worker(redis_url: str, port: int) -> subprocess.Popen[bytes]:
    env = os.environ | {"PYTHONPATH": f"{TESTS / 'worker'}{os.pathsep}{TESTS}"}
    return subprocess.Popen(
        [sys.executable, "-m", "kubetasks.cli", "worker", "--redis-url", redis_url,
         "--import", "handlers_for_tests", "--metrics-port", str(port),
         "--report-status", "none", "--log-level", "warning"],
        env=env,
    )  # fmt: skip


async def test_worker_serves_task_counts_and_durations(
    client: AsyncClient, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    worker = start_worker(redis_url, port)
    try:
        ok = [await client.enqueue("test.add", i, 1) for i in range(5)]
        bad = await client.enqueue("test.permanent")
        for handle in ok:
            await handle.result(timeout=10)
        with pytest.raises(TaskFailedError):
            await bad.result(timeout=10)
        text = scrape_when_up(port)
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
    # Every bucket of the histogram, cumulative: test.add takes well under a second.
    add = 'handler="test.add",'
    assert (
        f'kubetasks_worker_task_duration_seconds_bucket{{{add}le="1.0",queue="default"}} 5.0'
        in text
    )
    assert (
        f'kubetasks_worker_task_duration_seconds_bucket{{{add}le="+Inf",queue="default"}} 5.0'
        in text
    )
    buckets = re.findall(
        rf'kubetasks_worker_task_duration_seconds_bucket\{{{add}le="([^"]+)"', text
    )
    assert len(buckets) == 15  # 14 bounds and +Inf


async def test_every_metric_of_the_grafana_dashboard_is_served(
    client: AsyncClient, redis_url: str
) -> None:
    """The dashboard shipped with the chart asks only for what a worker (after running a
    task) and the operator's metrics endpoint serve."""
    port = free_port()
    worker = start_worker(redis_url, port)
    try:
        await (await client.enqueue("test.add", 1, 2)).result(timeout=10)
        worker_text = scrape_when_up(port)
    finally:
        worker.terminate()
        worker.wait(10)
    operator_port = free_port()
    serve(OperatorMetrics().registry, operator_port)  # what `kubetasks operator` serves
    served = served_names(worker_text) | served_names(scrape_when_up(operator_port))
    asked = {
        name
        for expr in dashboard_expressions()
        for name in re.findall(r"\b(kubetasks_[a-z_]+)\b", expr)
    }
    assert len(asked) >= 15, sorted(asked)
    assert asked - served == set(), (
        f"the dashboard asks for metrics nobody serves: {sorted(asked - served)}"
    )
    # The queue's operator metrics and the worker's both appear on the dashboard.
    assert {"kubetasks_queue_oldest_pending_age_seconds",
            "kubetasks_worker_task_duration_seconds_bucket"} <= asked  # fmt: skip
