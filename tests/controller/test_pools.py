"""WorkerPools on the real control plane: the operator's Deployment, run by the process
kubelet as local worker processes, scaled on the queue from zero and back, without losing or
repeating work."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from devenv.kubelet import PROCESS_KUBELET_LABEL, ProcessKubelet
from fixtures.controlplane import Kubectl
from fixtures.kube import meta, obj, pod_status, present
from fixtures.operator import Operator, Tasks, kube_env
from fixtures.waiting import wait_for
from kubetasks.client import AsyncClient, TaskRequest
from kubetasks.queue import Broker, keys
from kubetasks.queue.keys import QueueKeys
from kubetasks.queuename import QUEUE_NAME_PATTERN
from kubetasks.vocabulary import API_VERSION, GROUP, POOL_LABEL, VERSION

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def pool_operator(
    control_plane: ControlPlane, redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[Operator]:
    """The operator with worker pods marked for the process kubelet."""
    env = kube_env(control_plane, redis_url) | {
        "KUBETASKS_WORKER_POD_LABELS": f"{PROCESS_KUBELET_LABEL}=true"
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
            "apiVersion": API_VERSION,
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
        pool = obj(
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "workerpools", name
            )
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

    def deployment(self, name: str) -> Any:
        try:
            return self.apps.read_namespaced_deployment(name, self.namespace)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def events(self, name: str) -> list[str]:
        found = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        )
        return [e.reason or "" for e in found.items]

    def running_pods(self, name: str) -> list[str]:
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{POOL_LABEL}={name}"
        ).items
        return [
            present(meta(p).name)
            for p in pods
            if pod_status(p).phase == "Running" and meta(p).deletion_timestamp is None
        ]

    def wait(self, what: str, check: Any, timeout: float = 60) -> Any:
        return wait_for(what, check, timeout, every=0.05)


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
        async with AsyncClient(redis_url, namespace=namespace) as client:
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
        async with AsyncClient(redis_url, namespace=namespace) as client:
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
def test_scale_in_removes_the_less_busy_pod_which_drains_losing_nothing(
    pool_operator: Operator, process_kubelet: ProcessKubelet, pools: Pools, redis_url: str,
    tmp_path: Path, namespace: str,
) -> None:  # fmt: skip
    queue = f"drain-{namespace}"
    pools.create("drain", queue, concurrency=2, minReplicas=2, maxReplicas=2,
                 targetTasksPerReplica=2, scaleDownStabilizationSeconds=0,
                 terminationGracePeriodSeconds=30)  # fmt: skip
    pods = pools.wait("two worker pods", lambda: len(pools.running_pods("drain")) == 2 and
                      pools.running_pods("drain"))  # fmt: skip

    async def loads() -> dict[str, int | None]:
        broker = Broker.from_url(redis_url, namespace=namespace)
        try:
            return await broker.worker_loads([f"{namespace}/{pod}" for pod in pods])
        finally:
            await broker.close()

    pools.wait("both workers up", lambda: None not in asyncio.run(loads()).values())
    out = tmp_path / "tally.txt"
    out.touch()

    async def submit() -> list[str]:
        async with AsyncClient(redis_url, namespace=namespace) as client:
            handles = await client.enqueue_many(
                [TaskRequest("test.tally", args=[str(out), 12], queue=queue) for _ in range(3)]
            )
            return [h.id for h in handles]

    # Three tasks on two workers of concurrency 2: one runs two, the other one.
    ids = asyncio.run(submit())
    pools.wait("three tasks started", lambda: len(tally(out)) == 3, timeout=20)
    pools.wait("the workers reported their loads",
               lambda: sorted(v or 0 for v in asyncio.run(loads()).values()) == [1, 2])  # fmt: skip

    async def infos() -> list[Any]:
        async with AsyncClient(redis_url, namespace=namespace) as client:
            return [await client.status(i, queue) for i in ids]

    workers = Counter(i.worker for i in asyncio.run(infos()))
    # Worker ids are namespace/pod.
    busy, other = (w.partition("/")[2] for w, _ in workers.most_common())
    # Scale in while all three run: the pool may now have one pod only.
    pools.patch("drain", {"minReplicas": 0, "maxReplicas": 1})
    pools.wait("one pod left", lambda: len(pools.running_pods("drain")) == 1, timeout=30)
    assert pools.running_pods("drain") == [busy], "the pod running fewer tasks was removed"

    def finished() -> list[Any] | None:
        found = asyncio.run(infos())
        return found if all(i and i.state == "succeeded" for i in found) else None

    done = pools.wait("all three succeeded", finished, timeout=60)
    assert [i.attempts for i in done] == [1, 1, 1], "the scale-in spent no attempt"
    assert Counter(i.worker for i in done) == workers, "the removed pod finished its task"
    assert max(tally(out).values()) == 1, "and nothing ran twice"
    assert other not in pools.running_pods("drain")


@pytest.mark.timeout(120)
def test_pod_overrides_reach_the_deployment_and_an_unusable_spec_is_reported(
    pool_operator: Operator, pools: Pools, namespace: str
) -> None:
    template = {
        "labels": {"team": "search"},
        "annotations": {"example.com/owner": "search"},
        "nodeSelector": {"pool": "batch"},
        "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "imagePullSecrets": [{"name": "registry"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "serviceAccountName": "workers",
    }  # fmt: skip
    # Within the default pool policy: a service account labelled for workers, the worker
    # image's repository (tests/controller/test_pool_policy.py shows what it refuses).
    labelled = k8s.V1ObjectMeta(name="workers", labels={"kubetasks.dev/worker": "true"})
    pools.core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=labelled))
    pools.create("tuned", "q-tuned", podTemplate=template, image="ghcr.io/kubetasks/worker:1")
    found = pools.wait("the Deployment", lambda: pools.deployment("tuned"))
    pod = found.spec.template
    assert pod.metadata.labels["team"] == "search"
    assert pod.metadata.labels[POOL_LABEL] == "tuned"
    assert pod.metadata.annotations == {"example.com/owner": "search"}
    assert pod.spec.node_selector == {"pool": "batch"}
    assert pod.spec.tolerations[0].key == "batch"
    assert pod.spec.affinity.node_affinity is not None
    assert [s.name for s in pod.spec.image_pull_secrets] == ["registry"]
    assert pod.spec.service_account_name == "workers"
    (container,) = pod.spec.containers
    assert container.image == "ghcr.io/kubetasks/worker:1"
    assert container.resources.requests == {"cpu": "100m", "memory": "128Mi"}
    assert container.security_context.run_as_non_root is True
    assert found.metadata.owner_references[0].kind == "WorkerPool"

    # The CRD takes env entries as given; Kubernetes refuses one without a name.
    pools.create("broken", "q-broken", minReplicas=1,
                 podTemplate={"env": [{"value": "no name"}]})  # fmt: skip

    def rejected() -> dict[str, Any] | None:
        for c in pools.status("broken").get("conditions") or []:
            if c["type"] == "Ready" and c["reason"] == "DeploymentRejected":
                return dict(c)
        return None

    condition = pools.wait("the rejection on the pool", rejected, timeout=20)
    assert condition["status"] == "False"
    assert "name" in condition["message"], condition["message"]
    assert pools.deployment("broken") is None
    pools.wait("a Warning event", lambda: "DeploymentRejected" in pools.events("broken"))
    assert pool_operator.proc is not None and pool_operator.proc.poll() is None
    # The user fixes the spec: the operator applies it without being restarted.
    pools.patch("broken", {"podTemplate": {"env": [{"name": "MODE", "value": "fixed"}]}})
    fixed = pools.wait("the Deployment", lambda: pools.deployment("broken"), timeout=20)
    assert fixed.spec.replicas == 1
    pools.wait("the condition cleared", lambda: rejected() is None, timeout=20)


TASK_CRD = "tasks.kubetasks.dev"
#: The Task CRD's queue pattern before it took the broker's rule (it allowed upper case).
LOOSE_QUEUE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


def _set_task_queue_pattern(kubectl: Kubectl, pattern: str) -> None:
    crd = json.loads(kubectl("get", "crd", TASK_CRD, "-o", "json").stdout)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["queue"]["pattern"] = pattern
    replaced = kubectl("replace", "-f", "-", input=json.dumps(crd))
    assert replaced.returncode == 0, replaced.stderr


def test_a_task_stored_with_an_invalid_queue_fails_naming_it_and_others_keep_working(
    pool_operator: Operator, process_kubelet: ProcessKubelet, pools: Pools, tasks: Tasks,
    kubectl: Kubectl, redis_url: str, namespace: str,
) -> None:  # fmt: skip
    pools.create("idle", "default", concurrency=2, minReplicas=0, maxReplicas=1,
                 scaleDownStabilizationSeconds=3)  # fmt: skip
    assert pools.wait("the Deployment at zero", lambda: pools.replicas("idle") == 0)
    # What an older version left: it registered `Default` in Redis before refusing it.
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        r.sadd(keys.QUEUES, "Default")
    # A Task stored while the CRD was looser, as on a cluster upgraded from it.
    _set_task_queue_pattern(kubectl, LOOSE_QUEUE)
    try:
        legacy = {"apiVersion": API_VERSION, "kind": "Task",
                  "metadata": {"name": "legacy"},
                  "spec": {"handler": "kubetasks.echo", "queue": "Default"}}  # fmt: skip
        deadline = time.monotonic() + 30
        while True:  # the API server takes the new schema up within moments
            try:
                tasks.create_body(legacy)
                break
            except k8s.ApiException as exc:
                assert exc.status == 422 and time.monotonic() < deadline, exc
                time.sleep(0.2)
    finally:
        _set_task_queue_pattern(kubectl, QUEUE_NAME_PATTERN)
    status = tasks.wait_phase("legacy", "Failed", "Queued", "Succeeded")
    assert status["phase"] == "Failed", status
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.queue" in failed["message"] and "'Default'" in failed["message"]
    # Beside it, a healthy Task wakes the pool from zero and runs in its pod. (These pods'
    # service account may not write Task status: what the worker recorded in Redis shows it.)
    uid = tasks.create("healthy", "test.add", args=[2, 3])["metadata"]["uid"]
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        record = QueueKeys(namespace, "default").task(uid)
        ran = pools.wait("the healthy Task done", lambda: r.hget(record, "state") == "succeeded"
                         and r.hmget(record, "worker", "result"))  # fmt: skip
        assert ran[0].startswith(f"{namespace}/idle-") and ran[1] == "5", ran
        # The next pass over the registry (the autoscaler's poll) evicts the bad name.
        registered = {f"{namespace}/default"}
        assert pools.wait("the registry cleaned", lambda: r.smembers(keys.QUEUES) == registered)
        assert not r.keys("kubetasks:{*Default}:*")
    # And the schema refuses the name again, naming the field.
    refused = kubectl("create", "-n", namespace, "-f", "-",
                      input=json.dumps(legacy | {"metadata": {"name": "again"}}))  # fmt: skip
    assert refused.returncode != 0 and 'spec.queue: Invalid value: "Default"' in refused.stderr
