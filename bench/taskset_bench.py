"""10,000 no-op tasks three ways, in one run: one TaskSet, individual Tasks, Redis only.

Starts the local control plane (built by `make controlplane`), a Redis server, the operator
and worker processes, then runs the same N no-op tasks (``kubetasks.echo``):

* as one TaskSet (``count: N``) created through the API server, followed by a watch of the
  set until it is Succeeded;
* as N Task objects created from 16 clients as fast as the API server accepts them, followed
  by a watch until all are Succeeded (``tasks_bench.create_and_follow``);
* through the Redis-only client (``enqueue_many``, 500 a call; no resource).

For each: end-to-end tasks/s (first create sent to the last task finished), API writes per
1,000 tasks (every request but GET/LIST/WATCH the API server counted in its
``apiserver_request_total``, by anyone: operator, workers, controller manager, the bench),
and the API server's CPU per task (``/proc/<pid>/stat`` of kube-apiserver over the run).
Run: `.venv/bin/python bench/taskset_bench.py [--tasks N] [--workers W]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client as k8s

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks_bench import cpu_seconds, create_and_follow, remove_tasks, spawn

from devenv.controlplane import ControlPlane
from devenv.crds import apply_crds
from devenv.kubeapi import JsonApi
from devenv.redis_server import RedisServer, free_port
from kubetasks.client import AsyncClient, TaskRequest
from kubetasks.timestamps import parse_rfc3339
from kubetasks.vocabulary import API_VERSION, GROUP, VERSION

REPO = Path(__file__).resolve().parents[1]
READS = ("GET", "LIST", "WATCH")


def api_writes(plane: ControlPlane) -> Counter[str]:
    """Write requests the API server has answered so far, by verb and resource."""
    _, text = plane.admin.get("/metrics", timeout=30)
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("verb") in READS:
            continue
        what = labels.get("resource", "") + (
            f"/{labels['subresource']}" if labels.get("subresource") else ""
        )
        counts[f"{labels.get('verb')} {what}"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


class Run:
    """The operator and workers for one namespace, and the counters around a measurement."""

    def __init__(
        self, plane: ControlPlane, redis_url: str, namespace: str, workers: int, work: Path
    ) -> None:
        self.plane, self.namespace = plane, namespace
        env = os.environ | {
            "KUBECONFIG": str(plane.kubeconfig),
            "KUBETASKS_REDIS_URL": redis_url,
            "KUBETASKS_RESYNC_SECONDS": "3600",
        }
        with plane.api_client() as api:
            k8s.CoreV1Api(api).create_namespace(
                k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace))
            )
        self.procs = [
            spawn([sys.executable, "-m", "kubetasks.cli", "operator", "--namespace", namespace,
                   "--health-port", str(free_port()), "--log-level", "warning"],
                  env, work / f"{namespace}-operator.log")
        ] + [
            spawn([sys.executable, "-m", "kubetasks.cli", "worker", "--concurrency", "100",
                   "--report-status", "kubernetes", "--log-level", "warning"],
                  env | {"POD_NAME": f"bench-worker-{i}", "POD_NAMESPACE": namespace},
                  work / f"{namespace}-worker-{i}.log")
            for i in range(workers)
        ]  # fmt: skip
        time.sleep(4)  # the operator is watching
        self.apiserver = plane.pids()["kube-apiserver"]

    def begin(self) -> None:
        self.cpu = cpu_seconds(self.apiserver)
        self.writes = api_writes(self.plane)

    def end(self, n: int) -> dict[str, Any]:
        cpu = cpu_seconds(self.apiserver) - self.cpu
        writes = api_writes(self.plane) - self.writes
        return {
            "apiserver_ms": cpu / n * 1000,
            "writes_per_1000": sum(writes.values()) / n * 1000,
            "writes": ", ".join(f"{w} {c}" for w, c in writes.most_common()),
        }

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(30)


async def taskset_and_follow(
    plane: ControlPlane, namespace: str, n: int, name: str = "bench", timeout: float = 600
) -> tuple[float, dict[str, Any]]:
    """Create one TaskSet of ``n`` no-op items and watch it until it ended; returns the time
    the create was sent and the set as last seen."""
    connector = aiohttp.TCPConnector(ssl=plane.admin.ssl_context(), limit=4)
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/tasksets"
    body = {
        "apiVersion": API_VERSION,
        "kind": "TaskSet",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"handler": "kubetasks.echo"}}, "count": n},
    }
    async with aiohttp.ClientSession(plane.server, connector=connector) as session:
        sent = time.time()
        async with session.post(path, json=body) as response:
            stored = await response.json()
            if response.status != 201:
                raise RuntimeError(f"create taskset: HTTP {response.status}: {stored}")
        query = {
            "watch": "true",
            "fieldSelector": f"metadata.name={name}",
            "resourceVersion": stored["metadata"]["resourceVersion"],
            "timeoutSeconds": str(int(timeout)),
        }
        no_limit = aiohttp.ClientTimeout(total=None)
        async with session.get(path, params=query, timeout=no_limit) as response:
            async for line in response.content:
                obj = json.loads(line).get("object") or {}
                if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled"):
                    return sent, obj
    raise RuntimeError("the TaskSet did not end")


def run_taskset(
    plane: ControlPlane, redis_url: str, n: int, workers: int, work: Path
) -> dict[str, Any]:
    run = Run(plane, redis_url, "bench-set", workers, work)
    # Every worker has started and leased once before the clock starts (a warm-up set).
    asyncio.run(taskset_and_follow(plane, "bench-set", 20 * workers, "warm-up"))
    run.begin()
    sent, body = asyncio.run(taskset_and_follow(plane, "bench-set", n))
    seen = time.time()
    row = run.end(n)
    run.stop()
    status = body["status"]
    finished = parse_rfc3339(status["finishedAt"])
    return row | {
        "path": "one TaskSet (count)",
        "n": n,
        "succeeded": status.get("succeeded"),
        "throughput": n / (seen - sent),
        "throughput_finished_at": n / max(finished - sent, 1e-9),
        "status_writes": row["writes"],
    }


def run_tasks(
    plane: ControlPlane, redis_url: str, n: int, workers: int, work: Path
) -> dict[str, Any]:
    run = Run(plane, redis_url, "bench-tasks", workers, work)
    asyncio.run(taskset_and_follow(plane, "bench-tasks", 20 * workers, "warm-up"))
    run.begin()
    created, _, finished = asyncio.run(create_and_follow(plane, "bench-tasks", n, clients=16))
    seen = time.time()
    row = run.end(n)
    with plane.api_client() as api:
        remove_tasks(api, "bench-tasks")
    run.stop()
    first = min(created.values())
    last = max(parse_rfc3339(t["status"]["finishedAt"]) for t in finished.values())
    return row | {
        "path": "individual Tasks (16 clients)",
        "n": n,
        "succeeded": len(finished),
        "throughput": n / (seen - first),
        "throughput_finished_at": n / (last - first),
    }


def redis_only(
    plane: ControlPlane, redis_url: str, n: int, workers: int, work: Path
) -> dict[str, Any]:
    apiserver = plane.pids()["kube-apiserver"]
    cpu, writes = cpu_seconds(apiserver), api_writes(plane)
    row = asyncio.run(run_redis_batched(redis_url, n, workers, work))
    cpu = cpu_seconds(apiserver) - cpu
    delta = api_writes(plane) - writes
    return {
        "path": "Redis client only (enqueue_many, 500 a call)",
        "n": n,
        "succeeded": row["succeeded"],
        "throughput": row["throughput"],
        "throughput_finished_at": row["throughput"],
        "apiserver_ms": cpu / n * 1000,
        "writes_per_1000": sum(delta.values()) / n * 1000,
        "writes": ", ".join(f"{w} {c}" for w, c in delta.most_common()),
    }


async def run_redis_batched(redis_url: str, n: int, workers: int, work: Path) -> dict[str, Any]:
    """The Redis-only client as a bulk producer does it: ``enqueue_many`` in batches of
    500, after a warm-up that every worker has started; until every task finished."""
    env = os.environ | {"KUBETASKS_REDIS_URL": redis_url}
    procs = [
        spawn([sys.executable, "-m", "kubetasks.cli", "worker", "--concurrency", "100",
               "--queues", "fast", "--report-status", "none", "--log-level", "warning"],
              env, work / f"rworker-{i}.log")
        for i in range(workers)
    ]  # fmt: skip
    async with AsyncClient(redis_url) as client:
        warm = 20 * workers
        await client.enqueue_many(
            [TaskRequest("kubetasks.echo", (i,), queue="fast") for i in range(warm)]
        )
        while (await client.queue_stats("fast")).processed < warm:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        first = time.time()
        for start in range(0, n, 500):
            await client.enqueue_many(
                [
                    TaskRequest("kubetasks.echo", (i,), queue="fast")
                    for i in range(start, min(n, start + 500))
                ]
            )
        while (await client.queue_stats("fast")).processed < warm + n:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        seen = time.time()
    for proc in procs:
        proc.terminate()
        proc.wait(30)
    return {"succeeded": n, "throughput": n / (seen - first)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| path | tasks | succeeded | end-to-end tasks/s (create sent → seen done) |"
        " (→ last finishedAt) | API writes per 1,000 tasks | kube-apiserver CPU per task |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['path']} | {r['n']} | {r['succeeded']} | {r['throughput']:.0f} |"
            f" {r['throughput_finished_at']:.0f} | {r['writes_per_1000']:.1f} |"
            f" {r['apiserver_ms'] * 1000:.0f} µs |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-tasks", action="store_true", help="leave out individual Tasks")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "TASKSET_RESULTS.md")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubetasks-setbench-"))
    with RedisServer() as redis_server, ControlPlane(work / "plane") as plane:
        with plane.api_client() as api:
            apply_crds(JsonApi(api), REPO / "crds")
        rows = [run_taskset(plane, redis_server.url, ns.tasks, ns.workers, work)]
        if not ns.skip_tasks:
            rows.append(run_tasks(plane, redis_server.url, ns.tasks, ns.workers, work))
        rows.append(redis_only(plane, redis_server.url, ns.tasks, ns.workers, work))
    text = table(rows) + "\n\nAPI writes during each run, by verb and resource:\n\n"
    text += "".join(f"- {r['path']}: {r['writes'] or 'none'}\n" for r in rows)
    print(text)
    header = (
        f"# 10,000 no-op tasks: one TaskSet, individual Tasks, Redis only\n\n"
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores (shared with other work),"
        f" Python {platform.python_version()}; operator, {ns.workers} worker process(es) with"
        " concurrency 100, control plane and Redis all on this machine, load average"
        f" {os.getloadavg()[0]:.1f} at the end.\n\n"
        f"`.venv/bin/python bench/taskset_bench.py {' '.join(sys.argv[1:])}`\n\n"
    )
    ns.out.write_text(header + text + "\nLogs: " + str(work) + "\n")


if __name__ == "__main__":
    main()
