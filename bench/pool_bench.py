"""WorkerPool reaction times: from the first task on an idle pool to raised replicas, to the
task running, and from an empty queue back to zero.

Starts the local control plane (built by `make controlplane`), a Redis, the operator and the
process kubelet (worker pods run as local processes), creates a WorkerPool at zero, then for
each trial enqueues one task through the Redis client and measures:

* enqueue -> Deployment replicas raised (watched every 10 ms);
* enqueue -> the task running (the worker's start time in Redis), which includes the pod
  being created by the ReplicaSet and its worker process starting;
* task finished -> replicas back to 0, minus the pool's scale-down window (what remains is
  the autoscaler's own delay: up to one 2 s poll). The window runs from the autoscaler's last
  non-zero recommendation, which can precede the moment this script sees the last task
  finish, so the figure can be slightly negative.

Then a burst (``--burst N``, default 500 tasks of 0.2 s on a pool of up to 4 pods of
concurrency 25): enqueue -> first replica, -> all 4, -> every task succeeded, and the queue
empty -> back to 0 beyond the window, with the tasks' attempt counts.

KEDA's default (30 s polling of a list length) is the reference point: a pool at zero sees
nothing for up to 30 s. Run: `.venv/bin/python bench/pool_bench.py [--trials N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from devenv.crds import apply_crds
from devenv.kubeapi import JsonApi
from devenv.kubelet import PROCESS_KUBELET_LABEL, ProcessKubelet
from devenv.redis_server import RedisServer, free_port
from kubetasks.client import AsyncClient, TaskRequest
from kubetasks.queue import TaskInfo
from kubetasks.vocabulary import API_VERSION, GROUP, VERSION

REPO = Path(__file__).resolve().parents[1]
NAMESPACE, POOL, QUEUE = "bench", "idle", "idle-queue"
WINDOW = 5


def replicas(apps: k8s.AppsV1Api) -> int:
    try:
        return int(apps.read_namespaced_deployment(POOL, NAMESPACE).spec.replicas or 0)
    except k8s.ApiException:
        return -1


def wait(check: object, timeout: float, step: float = 0.01) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():  # type: ignore[operator]
            return time.monotonic()
        time.sleep(step)
    raise TimeoutError("benchmark step timed out")


def trial(apps: k8s.AppsV1Api, redis_url: str) -> dict[str, float]:
    wait(lambda: replicas(apps) == 0, 120, 0.2)
    time.sleep(1)

    async def enqueue() -> str:
        async with AsyncClient(redis_url) as client:
            return (await client.enqueue("kubetasks.sleep", 0.1, queue=QUEUE)).id

    t0_wall, t0 = time.time(), time.monotonic()
    task_id = asyncio.run(enqueue())
    raised = wait(lambda: replicas(apps) > 0, 30) - t0

    async def info() -> tuple[float | None, float | None]:
        async with AsyncClient(redis_url) as client:
            found = await client.status(task_id, QUEUE)
        return (found.started_at, found.finished_at) if found else (None, None)

    wait(lambda: asyncio.run(info())[1] is not None, 60, 0.1)
    started, finished = asyncio.run(info())
    assert started is not None and finished is not None
    down = wait(lambda: replicas(apps) == 0, 120, 0.05)
    finished_mono = t0 + (finished - t0_wall)
    return {
        "raised": raised,
        "running": started - t0_wall,
        "down": down - finished_mono - WINDOW,
    }


def burst(apps: k8s.AppsV1Api, custom: k8s.CustomObjectsApi, redis_url: str,
          count: int) -> dict[str, float]:  # fmt: skip
    spec = {"maxReplicas": 4, "concurrency": 25, "targetTasksPerReplica": 25}
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "workerpools", POOL, {"spec": spec}
    )
    wait(lambda: replicas(apps) == 0, 120, 0.2)
    time.sleep(1)

    async def enqueue() -> list[str]:
        async with AsyncClient(redis_url) as client:
            requests = [TaskRequest("kubetasks.sleep", args=[0.2], queue=QUEUE)
                        for _ in range(count)]  # fmt: skip
            return [h.id for h in await client.enqueue_many(requests)]

    async def infos(ids: list[str]) -> list[TaskInfo | None]:
        async with AsyncClient(redis_url) as client:
            return [await client.status(i, QUEUE) for i in ids]

    t0 = time.monotonic()
    ids = asyncio.run(enqueue())
    first = wait(lambda: replicas(apps) > 0, 30) - t0
    full = wait(lambda: replicas(apps) == 4, 60) - t0
    found: list[TaskInfo | None] = []

    def all_done() -> bool:
        nonlocal found
        found = asyncio.run(infos(ids))
        return all(i is not None and i.state == "succeeded" for i in found)

    done = wait(all_done, 300, 0.5)
    down = wait(lambda: replicas(apps) == 0, 120, 0.05)
    attempts = [i.attempts for i in found if i is not None]
    return {
        "tasks": len(ids),
        "succeeded": len(attempts),
        "max attempts": max(attempts),
        "first replica": first,
        "4 replicas": full,
        "all succeeded": done - t0,
        "down beyond the window": down - done - WINDOW,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--burst", type=int, default=500, help="tasks in the burst (0: none)")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubetasks-poolbench-"))
    with RedisServer() as redis_server, ControlPlane(work / "plane") as plane:
        api = plane.api_client()
        apply_crds(JsonApi(api), REPO / "crds")
        k8s.CoreV1Api(api).create_namespace(
            k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE))
        )
        env = os.environ | {
            "KUBECONFIG": str(plane.kubeconfig),
            "KUBETASKS_REDIS_URL": redis_server.url,
            "KUBETASKS_WORKER_POD_LABELS": f"{PROCESS_KUBELET_LABEL}=true",
        }
        log = (work / "operator.log").open("ab")
        operator = subprocess.Popen(
            [sys.executable, "-m", "kubetasks.cli", "operator", "--namespace", NAMESPACE,
             "--health-port", str(free_port()), "--metrics-port", "0"],
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
        kubelet = ProcessKubelet(api, work / "kubelet")
        kubelet.start()
        try:
            body = {
                "apiVersion": API_VERSION,
                "kind": "WorkerPool",
                "metadata": {"name": POOL},
                "spec": {"queues": [{"name": QUEUE}], "minReplicas": 0, "maxReplicas": 2,
                         "scaleDownStabilizationSeconds": WINDOW},
            }  # fmt: skip
            k8s.CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "workerpools", body
            )
            apps = k8s.AppsV1Api(api)
            rows = [trial(apps, redis_server.url) for _ in range(ns.trials)]
            report(rows, ns.trials)
            if ns.burst:
                outcome = burst(apps, k8s.CustomObjectsApi(api), redis_server.url, ns.burst)
                print(f"\nBurst of {ns.burst} tasks (kubetasks.sleep 0.2 s) on the idle pool, "
                      "max 4 pods of concurrency 25:\n")  # fmt: skip
                for key, value in outcome.items():
                    shown = f"{value * 1000:.0f} ms" if isinstance(value, float) else value
                    print(f"- {key}: {shown}")
        finally:
            kubelet.stop()
            operator.terminate()
            try:
                operator.wait(30)
            except subprocess.TimeoutExpired:
                print("the operator did not stop within 30 s of SIGTERM", file=sys.stderr)
                operator.kill()
    print(f"\nLogs: {work}")


def report(rows: list[dict[str, float]], trials: int) -> None:
    print(f"WorkerPool reaction times over {trials} trials ({os.cpu_count()} cores, "
          f"scale-down window {WINDOW} s subtracted)\n")  # fmt: skip
    print("| measure | median | max |\n|---|---|---|")
    names = {
        "raised": "enqueue on an idle pool -> Deployment replicas raised",
        "running": "enqueue on an idle pool -> task running (new pod's worker started)",
        "down": "queue empty -> replicas 0, beyond the window",
    }
    for key, label in names.items():
        values = [r[key] for r in rows]
        print(f"| {label} | {statistics.median(values) * 1000:.0f} ms "
              f"| {max(values) * 1000:.0f} ms |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
