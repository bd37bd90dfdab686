"""Task resources end to end: throughput and latency through the API server.

Starts the local control plane (built by `make controlplane`), a Redis server, the operator
and worker processes that report status to the Task resources, then creates N Tasks through
the API (as `kubectl apply` would) and measures:

* throughput: Tasks per second from the first create to the last Succeeded, with Tasks
  created as fast as the API server accepts them (closed loop, ``--clients`` concurrent
  clients: more clients queue more requests in the API server, so latency grows with them);
* create -> Running and create -> Succeeded latency (p50, p99), using the times the worker
  recorded in status.startedAt / status.finishedAt against the time the client sent the
  create, and how long the create request itself took (p50), both at those saturating
  loads and at fixed create rates (``--rates``, open loop);
* CPU per component and API requests per Task (from the API server's own metrics);
* the API server's own limit: creates and status writes with no operator or worker;

next to the same N tasks submitted through the Redis-only client (the fast path), measured
the same way from the Redis records. Each run's Tasks are deleted before the next, so every
run starts from the same store. Run: `.venv/bin/python bench/tasks_bench.py [--tasks N]`
(`make bench-tasks`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from devenv.crds import apply_crds
from devenv.kubeapi import JsonApi
from devenv.redis_server import RedisServer, free_port
from kubetasks.client import AsyncClient
from kubetasks.status_patches import finished_patch
from kubetasks.timestamps import parse_rfc3339
from kubetasks.vocabulary import API_VERSION, GROUP, VERSION

REPO = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_use(pids: dict[str, int], since: dict[str, float], seconds: float) -> str:
    """Share of one core each process used since ``since`` (a cpu_seconds snapshot)."""
    return ", ".join(
        f"{name} {(cpu_seconds(pid) - since[name]) / seconds * 100:.0f}%"
        for name, pid in pids.items()
    )


def api_requests(plane: ControlPlane) -> Counter[str]:
    """Requests the API server has answered so far, by verb and resource (its /metrics)."""
    _, text = plane.admin.get("/metrics", timeout=30)
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("verb") in ("WATCH", "LIST", "GET") and labels.get("resource") != "tasks":
            continue
        what = labels.get("resource", "") + (
            f"/{labels['subresource']}" if labels.get("subresource") else ""
        )
        counts[f"{labels.get('verb')} {what}"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(argv, env=env, stdout=out, stderr=out)


async def create_and_follow(
    plane: ControlPlane,
    namespace: str,
    n: int,
    rate: float | None = None,
    clients: int = 16,
    timeout: float = 600,
) -> tuple[dict[str, float], dict[str, float], dict[str, dict[str, Any]]]:
    """Create ``n`` Tasks from ``clients`` concurrent clients on kept-alive connections
    (what that many `kubectl apply` loops, or a Go client, do) while a watch follows them
    until all have Succeeded; returns each Task's create time (request sent), how long the
    create request took, and the final object. With ``rate``, Task i is created at i/rate
    seconds (open loop) instead of as fast as the server answers."""
    created: dict[str, float] = {}
    answered: dict[str, float] = {}
    finished: dict[str, dict[str, Any]] = {}
    all_done = asyncio.Event()
    todo = iter(range(n))
    connector = aiohttp.TCPConnector(ssl=plane.admin.ssl_context(), limit=clients + 1)
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/tasks"
    async with aiohttp.ClientSession(plane.server, connector=connector) as session:

        async def follow() -> None:
            # list, then watch from the list's version; again after any interruption (the
            # API server answers 429 while it first sets up storage for a new CRD).
            no_limit = aiohttp.ClientTimeout(total=None)
            while True:
                async with session.get(path) as response:
                    if response.status != 200:
                        await asyncio.sleep(0.2)
                        continue
                    listing = await response.json()
                for task in listing["items"]:
                    note(task)
                query = {
                    "watch": "true",
                    "resourceVersion": listing["metadata"]["resourceVersion"],
                    "timeoutSeconds": str(int(timeout)),
                }
                async with session.get(path, params=query, timeout=no_limit) as response:
                    async for line in response.content:
                        event = json.loads(line)
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            note(event["object"])
                        if all_done.is_set():
                            return

        def note(task: dict[str, Any]) -> None:
            if (task.get("status") or {}).get("phase") == "Succeeded":
                finished[task["metadata"]["name"]] = task
                if len(finished) == n:
                    all_done.set()

        async def client() -> None:
            for i in todo:
                if rate is not None:
                    await asyncio.sleep(max(0.0, begin + i / rate - time.time()))
                name = f"t-{i:05d}"
                body = {
                    "apiVersion": API_VERSION,
                    "kind": "Task",
                    "metadata": {"name": name},
                    "spec": {"handler": "kubetasks.echo", "args": [i]},
                }
                start = time.time()
                async with session.post(path, json=body) as response:
                    await response.read()
                    if response.status != 201:
                        raise RuntimeError(f"create {name}: HTTP {response.status}")
                created[name] = start
                answered[name] = time.time() - start

        watch = asyncio.create_task(follow())
        await asyncio.sleep(0.5)  # the watch is open before the first create
        begin = time.time()
        await asyncio.gather(*(client() for _ in range(clients)))
        try:
            await asyncio.wait_for(all_done.wait(), timeout)
        finally:
            watch.cancel()
    return created, answered, finished


def remove_tasks(api: k8s.ApiClient, namespace: str, timeout: float = 300) -> None:
    """Delete a run's Tasks and wait until they are gone: the API server's cost per write
    grows with the objects it holds (a larger heap to collect), and each run should start
    from the same store, not from the previous runs' thousands of Tasks."""
    custom = k8s.CustomObjectsApi(api)
    try:
        custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, "tasks")
    except k8s.ApiException as exc:
        # 10,000 Tasks outlast the request's timeout (504); the deletion goes on without it.
        if exc.status != 504:
            raise
    deadline = time.monotonic() + timeout
    while True:
        listing = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "tasks", limit=1)
        if not cast(dict[str, Any], listing)["items"]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Tasks of namespace {namespace} still there after {timeout}s")
        time.sleep(0.5)


def run_api(
    plane: ControlPlane,
    redis_url: str,
    n: int,
    workers: int,
    work: Path,
    rate: float | None = None,
    clients: int = 16,
) -> dict[str, Any]:
    env = os.environ | {"KUBECONFIG": str(plane.kubeconfig), "KUBETASKS_REDIS_URL": redis_url}
    namespace = f"bench-{int(rate)}" if rate else f"bench-max-{clients}"
    api = plane.api_client()
    core = k8s.CoreV1Api(api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    procs = [
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
    time.sleep(4)  # let the operator start watching
    pids = plane.pids() | {"operator": procs[0].pid, "bench client": os.getpid()}
    pids |= {f"worker-{i}": p.pid for i, p in enumerate(procs[1:])}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    requests_before = api_requests(plane)
    created, answered, finished = asyncio.run(create_and_follow(plane, namespace, n, rate, clients))
    first = min(created.values())
    create_seconds = max(created.values()) - first
    cpu = cpu_use(pids, cpu_before, time.time() - first)
    requests = api_requests(plane) - requests_before
    per_task = ", ".join(f"{what} {count / n:.2f}" for what, count in requests.most_common())
    remove_tasks(api, namespace)  # while the operator runs, in case any has a finalizer
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)
    succeeded = list(finished.values())
    to_running = [
        parse_rfc3339(t["status"]["startedAt"]) - created[t["metadata"]["name"]] for t in succeeded
    ]
    to_done = [
        parse_rfc3339(t["status"]["finishedAt"]) - created[t["metadata"]["name"]] for t in succeeded
    ]
    last = max(parse_rfc3339(t["status"]["finishedAt"]) for t in succeeded)
    return {
        "path": "Task resources, "
        + (f"created at {rate:g}/s" if rate else f"{clients} clients creating at once"),
        "n": n,
        "succeeded": len(succeeded),
        "create_rate": n / create_seconds,
        "throughput": len(succeeded) / (last - first),
        "running_p50": pct(to_running, 0.5),
        "running_p99": pct(to_running, 0.99),
        "done_p50": pct(to_done, 0.5),
        "done_p99": pct(to_done, 0.99),
        "create_p50": pct(list(answered.values()), 0.5),
        "cpu": cpu,
        "requests": per_task,
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
        answered: list[float] = []

        async def one(i: int) -> None:
            start = time.time()
            handle = await client.enqueue("kubetasks.echo", i, queue="fast")
            created[handle.id] = start
            answered.append(time.time() - start)

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
        "create_p50": pct(answered, 0.5),
    }


async def run_ceiling(plane: ControlPlane, n: int) -> dict[str, float]:
    """The API server alone, with no operator or worker: ``n`` Task creates, then ``n``
    status writes like a worker's final one, each from 16 clients as fast as it answers.
    One create plus one status write per Task bounds what any design that records each
    Task's outcome on its resource can do on this machine."""
    namespace = "ceiling"
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/tasks"
    connector = aiohttp.TCPConnector(ssl=plane.admin.ssl_context(), limit=16)
    apiserver = plane.pids()["kube-apiserver"]
    out: dict[str, float] = {}
    async with aiohttp.ClientSession(plane.server, connector=connector) as session:
        async with session.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}):
            pass

        async def create(i: int) -> None:
            body = {
                "apiVersion": API_VERSION,
                "kind": "Task",
                "metadata": {"name": f"c-{i:05d}"},
                "spec": {"handler": "kubetasks.echo", "args": [i]},
            }
            async with session.post(path, json=body) as response:
                await response.read()
                if response.status != 201:
                    raise RuntimeError(f"create: HTTP {response.status}")

        async def finish(i: int) -> None:
            patch = finished_patch("succeeded", 1, time.time(), result={"args": [i]})
            headers = {"Content-Type": "application/merge-patch+json"}
            url = f"{path}/c-{i:05d}/status"
            async with session.patch(url, data=json.dumps(patch), headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"status write: HTTP {response.status}")

        for name, op in (("create", create), ("status", finish)):
            todo = iter(range(n))

            async def client(
                op: Callable[[int], Awaitable[None]] = op, todo: Iterator[int] = todo
            ) -> None:
                for i in todo:
                    await op(i)

            cpu_before, began = cpu_seconds(apiserver), time.time()
            await asyncio.gather(*(client() for _ in range(16)))
            seconds = time.time() - began
            out[f"{name}_rate"] = n / seconds
            out[f"{name}_cpu_ms"] = (cpu_seconds(apiserver) - cpu_before) / n * 1000
    out["bound"] = 1 / (1 / out["create_rate"] + 1 / out["status_rate"])
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| path | tasks | succeeded | create/s | end-to-end tasks/s | create request p50 |"
        " create→Running p50 | p99 | create→Succeeded p50 | p99 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['path']} | {r['n']} | {r['succeeded']} | {r['create_rate']:.0f} |"
            f" {r['throughput']:.0f} | {r['create_p50'] * 1000:.0f} ms |"
            f" {r['running_p50'] * 1000:.0f} ms |"
            f" {r['running_p99'] * 1000:.0f} ms | {r['done_p50'] * 1000:.0f} ms |"
            f" {r['done_p99'] * 1000:.0f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--rates",
        default="50,100,150,200",
        help="open-loop create rates (Tasks/s) to measure latency at",
    )
    parser.add_argument(
        "--clients",
        default="16",
        help="concurrent creating clients for the as-fast-as-accepted runs (comma-separated)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "TASKS_RESULTS.md")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubetasks-bench-"))
    with RedisServer() as redis_server, ControlPlane(work / "plane") as plane:
        with plane.api_client() as api:
            apply_crds(JsonApi(api), REPO / "crds")
        ceiling = asyncio.run(run_ceiling(plane, ns.tasks))
        with plane.api_client() as api:
            remove_tasks(api, "ceiling")
        rows = [
            run_api(plane, redis_server.url, ns.tasks, ns.workers, work, clients=int(c))
            for c in ns.clients.split(",")
            if c
        ]
        for rate in (float(r) for r in ns.rates.split(",") if r):
            rows.append(run_api(plane, redis_server.url, ns.tasks, ns.workers, work, rate))
        rows.append(asyncio.run(run_redis(redis_server.url, ns.tasks, ns.workers, work)))
    text = table(rows) + "\n\nCPU (share of one core) and API requests per Task:\n\n"
    for row in rows:
        if "cpu" in row:
            text += f"- {row['path']}: {row['cpu']}; requests per Task: {row['requests']}\n"
    text += (
        f"\nThe API server alone (no operator, no worker, {ns.tasks} of each, 16 clients):"
        f" {ceiling['create_rate']:.0f} creates/s at {ceiling['create_cpu_ms']:.1f} ms of"
        f" its CPU each; {ceiling['status_rate']:.0f} status writes/s at"
        f" {ceiling['status_cpu_ms']:.1f} ms each; so at most {ceiling['bound']:.0f} Tasks/s"
        " with one create and one status write per Task on this machine.\n"
    )
    print(text)
    header = (
        f"# Task resources end to end\n\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}; operator, {ns.workers} worker process(es) with"
        " concurrency 100, control plane and Redis all on this machine.\n\n"
        f"`python bench/tasks_bench.py {' '.join(sys.argv[1:])}`\n\n"
    )
    ns.out.write_text(header + text + "\n\nLogs: " + str(work) + "\n")


if __name__ == "__main__":
    main()
