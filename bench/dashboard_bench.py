"""Dashboard page latency with 100,000 tasks in Redis across 10 queues.

Real Redis, a real API server (the user's token reviewed, every page's SubjectAccessReview
asked; answers reused for KUBETASKS_DASHBOARD_REVIEW_SECONDS as in production), and
``kubetasks dashboard`` as its own process. Each queue holds, of its 10,000 tasks: 5,000
pending, 1,000 scheduled, 500 running (leased, never acked), 2,000 succeeded and 1,500 dead,
with labels and errors with tracebacks. Every page is fetched ``--requests`` times one after
another (after a warm-up), and p50 / p95 / max reported; issue 17's target is p95 < 200 ms.

    .venv/bin/python bench/dashboard_bench.py [--requests 100] [--out bench/DASHBOARD_RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import aiohttp
from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from devenv.crds import apply_crds
from devenv.kubeapi import JsonApi
from devenv.redis_server import RedisServer, free_port
from kubetasks.client import TaskRequest
from kubetasks.queue import Broker

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
QUEUES = [f"q{i}" for i in range(10)]
MIX = {"pending": 5000, "scheduled": 1000, "active": 500, "succeeded": 2000, "dead": 1500}
ERROR = json.dumps(
    {
        "type": "ValueError",
        "message": "boom",
        "traceback": "Traceback (most recent call last):\n  ...\nValueError: boom\n" * 5,
    }
)


async def fill(url: str) -> dict[str, str]:
    """Put the tasks in; returns one task id per state of q0 (for the task pages)."""
    broker = Broker.from_url(url, namespace=NAMESPACE)
    sample: dict[str, str] = {}
    try:
        for queue in QUEUES:
            # Leased first (they come out of pending in order), then what stays pending.
            for state in ("succeeded", "dead", "active", "pending", "scheduled"):
                n = MIX[state]
                for start in range(0, n, 1000):
                    now = time.time()
                    requests = [
                        replace(
                            TaskRequest(
                                f"email.send_{i % 7}", args=[i, "x" * 50], kwargs={"to": f"u{i}"},
                                queue=queue, delay=3600 if state == "scheduled" else None,
                                max_retries=0,
                            ).to_message(now),
                            labels={"tenant": f"t{i % 20}"},
                        )
                        for i in range(start, min(start + 1000, n))
                    ]  # fmt: skip
                    handles = await broker.enqueue(requests)
                    if queue == "q0":
                        sample.setdefault(state, handles[0].id)
                    if state in ("succeeded", "dead", "active"):
                        leased = await broker.dequeue(queue, "bench-worker", len(requests), 3600)
                        if state == "succeeded":
                            await broker.ack(
                                queue, "bench-worker",
                                [(t.message.id, t.attempt, '{"ok": true}') for t in leased],
                            )  # fmt: skip
                        elif state == "dead":
                            for t in leased:
                                await broker.fail(queue, "bench-worker", t.message.id,
                                                  t.attempt, "failed", ERROR)  # fmt: skip
        return sample
    finally:
        await broker.close()


def bench_token(plane: ControlPlane) -> str:
    with plane.api_client() as api:
        core, rbac = k8s.CoreV1Api(api), k8s.RbacAuthorizationV1Api(api)
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
        deadline = time.monotonic() + 30
        while True:
            try:
                core.read_namespaced_service_account("default", NAMESPACE)
                break
            except k8s.ApiException:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        core.create_namespaced_service_account(
            NAMESPACE, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="oncall"))
        )
        rbac.create_namespaced_role_binding(
            NAMESPACE,
            k8s.V1RoleBinding(
                metadata=k8s.V1ObjectMeta(name="oncall"),
                role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io",
                                       kind="ClusterRole", name="cluster-admin"),
                subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="oncall",
                                            namespace=NAMESPACE)],
            ),
        )  # fmt: skip
        request = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[]))
        issued = core.create_namespaced_service_account_token("oncall", NAMESPACE, request)
        return str(issued.status.token)


async def measure(base: str, token: str, pages: dict[str, str], n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        for name, path in pages.items():
            for _ in range(3):  # warm-up: connections, review cache, templates
                async with s.get(base + path) as r:
                    assert r.status == 200, (path, r.status, (await r.text())[:500])
                    await r.read()
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                async with s.get(base + path) as r:
                    await r.read()
                    assert r.status == 200, path
                times.append((time.perf_counter() - t0) * 1000)
            out[name] = times
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "DASHBOARD_RESULTS.md")
    ns = parser.parse_args()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="kubetasks-dashbench-"))
    with RedisServer() as redis_server, ControlPlane(work / "plane") as plane:
        with plane.api_client() as api:
            apply_crds(JsonApi(api), REPO / "crds")
        token = bench_token(plane)
        t0 = time.monotonic()
        sample = asyncio.run(fill(redis_server.url))
        fill_s = time.monotonic() - t0
        port = free_port()
        env = os.environ | {
            "KUBECONFIG": str(plane.kubeconfig),
            "KUBETASKS_REDIS_URL": redis_server.url,
        }
        log = (work / "dashboard.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubetasks", "dashboard", "--listen", f"127.0.0.1:{port}"],
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    with urllib.request.urlopen(base + "/healthz"):
                        break
                except OSError:
                    time.sleep(0.1)
            q = f"/queues/{NAMESPACE}/q0"
            pages = {
                "overview (10 queues)": "/",
                "overview table (htmx refresh)": "/overview/table",
                "queue: pending, page 1": f"{q}?state=pending",
                "queue: pending, page 50 (cursor)": f"{q}?state=pending&cursor=2450",
                "queue: scheduled": f"{q}?state=scheduled",
                "queue: running": f"{q}?state=active",
                "queue: dead": f"{q}?state=dead",
                "queue: succeeded (SCAN)": f"{q}?state=succeeded",
                "queue: search by handler": f"{q}?state=pending&q=email.send_3",
                "queue: search by label": f"{q}?state=pending&q=tenant%3Dt7",
                "queue: search by id prefix": f"{q}?state=pending&q={sample['pending'][:8]}",
                "task: dead, with traceback": f"{q}/tasks/{sample['dead']}",
                "task: succeeded": f"{q}/tasks/{sample['succeeded']}",
                "WorkerPools": "/pools",
                "PeriodicTasks": "/periodic",
            }
            results = asyncio.run(measure(base, token, pages, ns.requests))
        finally:
            proc.terminate()
            proc.wait(10)
    load_after = os.getloadavg()
    total = len(QUEUES) * sum(MIX.values())
    lines = [
        "# Dashboard page latency",
        "",
        f"`{' '.join(['bench/dashboard_bench.py', *sys.argv[1:]])}` on {platform.node()}"
        f" ({os.cpu_count()} cores, shared),"
        f" {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"{total:,} tasks in Redis across {len(QUEUES)} queues (each: "
        + ", ".join(f"{v:,} {k}" for k, v in MIX.items())
        + f"; filled in {fill_s:.0f} s). The dashboard is its own process; the user is a"
        " ServiceAccount bound to `cluster-admin` in the namespace (a RoleBinding), its token"
        " and rights reviewed by the real API server (answers reused 10 s). Sequential"
        f" requests over one connection, {ns.requests} per page after 3 warm-up requests."
        " Target: p95 < 200 ms.",
        "",
        "Load average (1, 5, 15 min) before: "
        + ", ".join(f"{x:.2f}" for x in load_before)
        + "; after: "
        + ", ".join(f"{x:.2f}" for x in load_after)
        + ".",
        "",
        "| page | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    for name, times in results.items():
        lines.append(
            f"| {name} | {statistics.median(times):.1f} | {pct(times, 0.95):.1f} |"
            f" {max(times):.1f} |"
        )
    worst = max(pct(t, 0.95) for t in results.values())
    lines += ["", f"Worst p95: {worst:.1f} ms.", ""]
    text = "\n".join(lines)
    ns.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
