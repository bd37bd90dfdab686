"""Task resources end to end: throughput and latency through the API server.

Starts the local control plane (built by `make controlplane`), a Redis server, the operator
and worker processes that report status to the Task resources, then creates N Tasks through
the API (as `kubectl apply` would) and measures:

* throughput: Tasks per second from the first create to the last Succeeded;
* create -> Running and create -> Succeeded latency (p50, p99), using the times the worker
  recorded in status.startedAt / status.finishedAt against the client's create time;

next to the same N tasks submitted through the Redis-only client (the fast path), measured
the same way from the Redis records. Run: `.venv/bin/python bench/tasks_bench.py [--tasks N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from kubetasks.client import AsyncClient
from kubetasks.dev.controlplane import ControlPlane
from kubetasks.dev.crds import apply_crds
from kubetasks.dev.kubeapi import JsonApi
from kubetasks.dev.redis_server import RedisServer, free_port
from kubetasks.transitions import parse_timestamp

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION = "kubetasks.dev", "v1alpha1"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(argv, env=env, stdout=out, stderr=out)


def run_api(
    plane: ControlPlane, redis_url: str, n: int, workers: int, work: Path
) -> dict[str, Any]:
    env = os.environ | {"KUBECONFIG": str(plane.kubeconfig), "KUBETASKS_REDIS_URL": redis_url}
    namespace = "bench"
    api = plane.api_client()
    core = k8s.CoreV1Api(api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    procs = [
        spawn([sys.executable, "-m", "kubetasks.cli", "operator", "--namespace", namespace,
               "--health-port", str(free_port()), "--log-level", "warning"],
              env, work / "operator.log")
    ] + [
        spawn([sys.executable, "-m", "kubetasks.cli", "worker", "--concurrency", "100",
               "--report-status", "kubernetes", "--log-level", "warning"],
              env | {"POD_NAME": f"bench-worker-{i}"}, work / f"worker-{i}.log")
        for i in range(workers)
    ]  # fmt: skip
    time.sleep(4)  # let the operator start watching
    custom = k8s.CustomObjectsApi(api)
    created: dict[str, float] = {}
    lock = threading.Lock()

    def create(i: int) -> None:
        name = f"t-{i:05d}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Task",
            "metadata": {"name": name},
            "spec": {"handler": "kubetasks.echo", "args": [i]},
        }
        start = time.time()
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasks", body)
        with lock:
            created[name] = start

    first = time.time()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(n)))
    create_seconds = time.time() - first
    deadline = time.time() + 600
    items: list[dict[str, Any]] = []
    while time.time() < deadline:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "tasks")["items"]
        if sum((t.get("status") or {}).get("phase") == "Succeeded" for t in items) == n:
            break
        time.sleep(0.5)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)
    succeeded = [t for t in items if (t.get("status") or {}).get("phase") == "Succeeded"]
    to_running = [
        parse_timestamp(t["status"]["startedAt"]) - created[t["metadata"]["name"]]
        for t in succeeded
    ]
    to_done = [
        parse_timestamp(t["status"]["finishedAt"]) - created[t["metadata"]["name"]]
        for t in succeeded
    ]
    last = max(parse_timestamp(t["status"]["finishedAt"]) for t in succeeded)
    return {
        "path": "Task resources (API server)",
        "n": n,
        "succeeded": len(succeeded),
        "create_rate": n / create_seconds,
        "throughput": len(succeeded) / (last - first),
        "running_p50": pct(to_running, 0.5),
        "running_p99": pct(to_running, 0.99),
        "done_p50": pct(to_done, 0.5),
        "done_p99": pct(to_done, 0.99),
    }


async def run_redis(redis_url: str, n: int, workers: int, work: Path) -> dict[str, Any]:
    env = os.environ | {"KUBETASKS_REDIS_URL": redis_url}
    procs = [
        spawn([sys.executable, "-m", "kubetasks.cli", "worker", "--concurrency", "100",
               "--queues", "fast", "--report-status", "none", "--log-level", "warning"],
              env, work / f"rworker-{i}.log")
        for i in range(workers)
    ]  # fmt: skip
    await asyncio.sleep(2)
    async with AsyncClient(redis_url) as client:
        first = time.time()
        created: dict[str, float] = {}

        async def one(i: int) -> None:
            start = time.time()
            handle = await client.enqueue("kubetasks.echo", i, queue="fast")
            created[handle.id] = start

        for start in range(0, n, 16):  # 16 concurrent producers, as for the API path
            await asyncio.gather(*(one(i) for i in range(start, min(start + 16, n))))
        create_seconds = time.time() - first
        while (await client.queue_stats("fast")).processed < n:  # noqa: ASYNC110 - polls Redis
            await asyncio.sleep(0.05)
        infos = [await client.status(task_id, "fast") for task_id in created]
    for proc in procs:
        proc.terminate()
        proc.wait(30)
    done = [i for i in infos if i is not None]
    to_running = [i.started_at - created[i.id] for i in done if i.started_at]
    to_done = [i.finished_at - created[i.id] for i in done if i.finished_at]
    last = max(i.finished_at for i in done if i.finished_at)
    return {
        "path": "Redis client (fast path)",
        "n": n,
        "succeeded": sum(i.state == "succeeded" for i in done),
        "create_rate": n / create_seconds,
        "throughput": n / (last - first),
        "running_p50": pct(to_running, 0.5),
        "running_p99": pct(to_running, 0.99),
        "done_p50": pct(to_done, 0.5),
        "done_p99": pct(to_done, 0.99),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| path | tasks | succeeded | create/s | end-to-end tasks/s | create→Running p50 | p99 |"
        " create→Succeeded p50 | p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['path']} | {r['n']} | {r['succeeded']} | {r['create_rate']:.0f} |"
            f" {r['throughput']:.0f} | {r['running_p50'] * 1000:.0f} ms |"
            f" {r['running_p99'] * 1000:.0f} ms | {r['done_p50'] * 1000:.0f} ms |"
            f" {r['done_p99'] * 1000:.0f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "TASKS_RESULTS.md")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubetasks-bench-"))
    with RedisServer() as redis_server, ControlPlane(work / "plane") as plane:
        with plane.api_client() as api:
            apply_crds(JsonApi(api), REPO / "crds")
        rows = [run_api(plane, redis_server.url, ns.tasks, ns.workers, work)]
        rows.append(asyncio.run(run_redis(redis_server.url, ns.tasks, ns.workers, work)))
    text = table(rows)
    print(text)
    header = (
        f"# Task resources end to end\n\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}; operator, {ns.workers} worker process(es) with"
        " concurrency 100, control plane and Redis all on this machine.\n\n"
    )
    ns.out.write_text(header + text + "\n\nLogs: " + str(work) + "\n")


if __name__ == "__main__":
    main()
