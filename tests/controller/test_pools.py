"""WorkerPools on the real control plane: the operator's Deployment, run by the process
kubelet as local worker processes, scaled on the queue from zero and back, without losing or
repeating work."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from fixtures.operator import Operator, kube_env
from kubetasks.client import AsyncClient, TaskRequest
from kubetasks.dev.controlplane import ControlPlane
from kubetasks.dev.kubelet import ProcessKubelet

GROUP, VERSION = "kubetasks.dev", "v1alpha1"
TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def pool_operator(
    control_plane: ControlPlane, redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[Operator]:
    """The operator with worker pods marked for the process kubelet."""
    env = kube_env(control_plane, redis_url) | {
        "KUBETASKS_WORKER_POD_LABELS": "kubetasks.dev/process-kubelet=true"
    }
    op = Operator(env, tmp_path / "operator.log", namespace)
    yield op
    op.stop()


class Pools:
    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.apps = k8s.AppsV1Api(api)
        self.core = k8s.CoreV1Api(api)
        self.namespace = namespace

    def create(self, name: str, queue: str, **spec: Any) -> None:
        env = [
            {"name": "PYTHONPATH", "value": os.pathsep.join([str(TESTS / "worker"), str(TESTS)])}
        ]
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WorkerPool",
            "metadata": {"name": name},
            "spec": {"queues": [{"name": queue}], "imports": ["handlers_for_tests"],
                     "podTemplate": {"env": env}, **spec},
        }  # fmt: skip
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "workerpools", body
        )

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "workerpools", name, {"spec": spec}
        )

    def status(self, name: str) -> dict[str, Any]:
        pool = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "workerpools", name
        )
        return dict(pool.get("status") or {})

    def replicas(self, name: str) -> int | None:
        try:
            found = self.apps.read_namespaced_deployment(name, self.namespace)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return int(found.spec.replicas or 0)

    def running_pods(self, name: str) -> list[str]:
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"kubetasks.dev/worker-pool={name}"
        ).items
        return [
            p.metadata.name
            for p in pods
            if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
        ]

    def wait(self, what: str, check: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pools(kube_api: k8s.ApiClient, namespace: str) -> Pools:
    return Pools(kube_api, namespace)


def tally(path: Path) -> Counter[str]:
    return Counter(line.split()[0] for line in path.read_text().splitlines() if line)


@pytest.mark.timeout(240)
def test_burst_from_zero_scales_to_max_drains_and_returns_to_min(
    pool_operator: Operator, process_kubelet: ProcessKubelet, pools: Pools, redis_url: str,
    tmp_path: Path, namespace: str,
) -> None:  # fmt: skip
    queue = f"burst-{namespace}"
    pools.create("burst", queue, concurrency=25, minReplicas=0, maxReplicas=4,
                 targetTasksPerReplica=25, scaleDownStabilizationSeconds=3,
                 terminationGracePeriodSeconds=10)  # fmt: skip
    assert pools.wait("the Deployment at zero", lambda: pools.replicas("burst") == 0)
    out = tmp_path / "tally.txt"
    out.touch()

    async def burst() -> list[Any]:
        async with AsyncClient(redis_url) as client:
            requests = [TaskRequest("test.tally", args=[str(out), 0.2], queue=queue)
                        for _ in range(500)]  # fmt: skip
            handles = await client.enqueue_many(requests)
            return [h.id for h in handles]

    enqueued_at = time.monotonic()
    ids = asyncio.run(burst())
    pools.wait("replicas raised", lambda: (pools.replicas("burst") or 0) > 0, timeout=10)
    raised = time.monotonic() - enqueued_at
    peak = 0

    def all_done() -> bool:
        nonlocal peak
        peak = max(peak, pools.replicas("burst") or 0)
        return len(tally(out)) == 500

    pools.wait("every task run", all_done, timeout=120)
    assert raised < 1.0, f"from zero to raised replicas took {raised:.2f}s"
    assert peak == 4, f"the pool peaked at {peak} replicas"
    counts = tally(out)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, "no pod was killed, so no task ran twice"

    async def outcomes() -> Counter[str]:
        async with AsyncClient(redis_url) as client:
            infos = [await client.status(i, queue) for i in ids]
        return Counter(info.state if info else "missing" for info in infos)

    succeeded = Counter({"succeeded": 500})
    pools.wait("every task succeeded", lambda: asyncio.run(outcomes()) == succeeded, timeout=30)
    pools.wait("back to zero after the window", lambda: pools.replicas("burst") == 0, timeout=60)
    pools.wait("no worker pod left", lambda: not pools.running_pods("burst"), timeout=30)
    status = pools.status("burst")
    assert status["desiredReplicas"] == 0 and status["queueDepth"] == 0
    assert "lastScaleTime" in status and "scale down" in status["lastScaleReason"]


@pytest.mark.timeout(180)
def test_scale_in_removes_the_idle_pod_and_loses_nothing(
    pool_operator: Operator, process_kubelet: ProcessKubelet, pools: Pools, redis_url: str,
    tmp_path: Path, namespace: str,
) -> None:  # fmt: skip
    queue = f"drain-{namespace}"
    pools.create("drain", queue, concurrency=4, minReplicas=2, maxReplicas=2,
                 targetTasksPerReplica=4, scaleDownStabilizationSeconds=0,
                 terminationGracePeriodSeconds=20)  # fmt: skip
    pods = pools.wait("two worker pods", lambda: len(pools.running_pods("drain")) == 2 and
                      pools.running_pods("drain"))  # fmt: skip
    time.sleep(2)  # both workers are waiting on the queue
    out = tmp_path / "tally.txt"
    out.touch()

    async def submit() -> list[str]:
        async with AsyncClient(redis_url) as client:
            handles = await client.enqueue_many(
                [TaskRequest("test.tally", args=[str(out), 4], queue=queue) for _ in range(3)]
            )
            return [h.id for h in handles]

    ids = asyncio.run(submit())
    pools.wait("three tasks started", lambda: len(tally(out)) == 3, timeout=20)
    # Scale in while the tasks run: the pool may now have one pod only.
    pools.patch("drain", {"minReplicas": 0, "maxReplicas": 1})
    pools.wait("one pod left", lambda: len(pools.running_pods("drain")) == 1, timeout=30)
    (kept,) = pools.running_pods("drain")
    assert kept in pods

    async def results() -> list[Any]:
        async with AsyncClient(redis_url) as client:
            return [await client.status(i, queue) for i in ids]

    def finished() -> list[Any] | None:
        infos = asyncio.run(results())
        return infos if all(i and i.state == "succeeded" for i in infos) else None

    infos = pools.wait("all three succeeded", finished, timeout=60)
    assert [i.attempts for i in infos] == [1, 1, 1], "the scale-in spent no attempt"
    assert max(tally(out).values()) == 1, "and ran nothing twice"
