"""The autoscaler loop against a real Redis, with fake time and a fake Deployment API: what
it applies, when, what it writes on the pool, and how it survives what it cannot apply."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from kubernetes.client import ApiException

from devenv.podspec import local_ports
from kubetasks.clock import FakeClock
from kubetasks.controller.autoscaling import PoolAutoscaler
from kubetasks.controller.workloads import WorkloadDefaults
from kubetasks.k8s.deployments import DeploymentState, WorkerPod
from kubetasks.metrics import OperatorMetrics
from kubetasks.queue import Broker, QueueSettings, TaskMessage, keys
from kubetasks.vocabulary import API_VERSION

NS = "team"


class FakeDeployments:
    """Deployments by name, as the API server would keep them for the operator."""

    def __init__(self) -> None:
        self.replicas: dict[str, int] = {}
        self.manifests: dict[str, dict[str, Any]] = {}
        self.refuse: dict[str, str] = {}
        """Pool name -> message of a 422 the API server answers to its Deployment."""
        self.pod_names: dict[str, list[str]] = {}
        self.costs: dict[str, int] = {}
        self.attempts: dict[str, int] = {}

    async def apply(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        self.attempts[name] = self.attempts.get(name, 0) + 1
        if name in self.refuse:
            body = json.dumps({"kind": "Status", "message": self.refuse[name]})
            raise _api_error(body)
        self.manifests[name] = manifest
        self.replicas[name] = manifest["spec"]["replicas"]

    async def observe(self, namespace: str, name: str) -> DeploymentState | None:
        if name not in self.replicas:
            return None
        return DeploymentState(replicas=self.replicas[name], ready=self.replicas[name])

    async def pods(self, namespace: str, selector: str) -> list[WorkerPod]:
        pool = selector.split("=", 1)[1]
        return [
            WorkerPod(name=p, cost=None if p not in self.costs else str(self.costs[p]),
                      phase="Running")
            for p in self.pod_names.get(pool, [])
        ]  # fmt: skip

    async def set_deletion_cost(self, namespace: str, pod: str, cost: int) -> None:
        self.costs[pod] = cost


def _api_error(body: str) -> ApiException:
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = body
    return exc


class FakeStatuses:
    def __init__(self) -> None:
        self.written: dict[str, dict[str, Any]] = {}
        self.writes = 0

    async def write(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.written[name] = status
        self.writes += 1


def pool(name: str, queue: str, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkerPool",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                     "generation": generation},
        "spec": {"queues": [{"name": queue}], **spec},
    }  # fmt: skip


class Harness:
    def __init__(self, broker: Broker, clock: FakeClock) -> None:
        # The pools' namespace: the autoscaler reads each pool's queues there.
        self.broker, self.clock = broker.in_namespace(NS), clock
        self.deployments = FakeDeployments()
        self.statuses = FakeStatuses()
        self.metrics = OperatorMetrics()
        self.scaler = self.new_scaler()

    def new_scaler(self) -> PoolAutoscaler:
        """An autoscaler as a (re)started operator has it: no memory of earlier decisions."""
        return PoolAutoscaler(
            self.broker, self.clock, self.deployments, self.statuses,
            defaults=WorkloadDefaults(redis_url="redis://r"), metrics=self.metrics,
        )  # fmt: skip

    async def enqueue(self, queue: str, count: int, prefix: str = "t") -> list[str]:
        ids = [f"{prefix}{i}" for i in range(count)]
        await self.broker.enqueue(TaskMessage(id=i, handler="h", queue=queue) for i in ids)
        return ids

    def sample(self, name: str, **labels: str) -> float | None:
        value: float | None = self.metrics.registry.get_sample_value(name, labels)
        return value


@pytest.fixture
async def harness(broker: Broker, clock: FakeClock) -> AsyncIterator[Harness]:
    yield Harness(broker, clock)


async def test_a_new_pool_gets_its_deployment_at_min_replicas(harness: Harness) -> None:
    await harness.scaler.upsert(pool("p", "q", minReplicas=2, maxReplicas=5, concurrency=7))
    assert harness.deployments.replicas == {"p": 2}
    manifest = harness.deployments.manifests["p"]
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-p"
    assert "--concurrency" in manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    status = harness.statuses.written["p"]
    assert status["desiredReplicas"] == 2 and status["queueDepth"] == 0
    assert status["conditions"][0]["type"] == "Ready"


async def test_an_enqueue_event_wakes_a_pool_at_zero_without_a_poll(harness: Harness) -> None:
    await harness.scaler.upsert(pool("p", "q", maxReplicas=4, concurrency=10))
    assert harness.deployments.replicas == {"p": 0}
    stop = asyncio.Event()
    listener = asyncio.create_task(harness.scaler.listen(stop))
    await asyncio.sleep(0.2)  # subscribed
    await harness.enqueue("other", 5)  # a queue the pool does not serve
    await asyncio.sleep(0.2)
    assert harness.deployments.replicas == {"p": 0}
    await harness.enqueue("q", 1)
    for _ in range(200):  # no tick runs here: only the enqueue event can raise it
        if harness.deployments.replicas["p"]:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(listener, 2)  # stops without waiting for another message
    assert harness.deployments.replicas == {"p": 1}
    status = harness.statuses.written["p"]
    assert status["lastScaleReason"].startswith("task enqueued on q: waking from zero")
    assert harness.sample("kubetasks_pool_scale_changes_total", namespace=NS, pool="p",
                          direction="up") == 1  # fmt: skip


async def test_scale_in_waits_for_the_window_and_marks_busy_pods_costly(
    harness: Harness, broker: Broker, clock: FakeClock
) -> None:
    await harness.scaler.upsert(
        pool("p", "q", maxReplicas=4, targetTasksPerReplica=2, scaleDownStabilizationSeconds=60)
    )
    await harness.enqueue("q", 8)
    await harness.scaler.tick()
    assert harness.deployments.replicas["p"] == 4
    harness.deployments.pod_names["p"] = ["pod-a", "pod-b", "pod-c", "pod-d"]
    # pod-a takes every task and finishes six: two still run there, the queue is empty.
    team = harness.broker
    leased = await team.dequeue("q", "team/pod-a", 8, lease_seconds=600)
    await team.ack("q", "team/pod-a", [(m.message.id, m.attempt, "null") for m in leased[:6]])
    await team.report_worker("team/pod-a", 2, ttl=600)
    await team.report_worker("team/pod-b", 0, ttl=600)
    await team.report_worker("pod-c", 5, ttl=600)  # a pod of that name elsewhere: not ours
    clock.advance(2)
    await harness.scaler.tick()
    status = harness.statuses.written["p"]
    assert (status["queueDepth"], status["inFlight"]) == (0, 2)
    assert harness.deployments.replicas["p"] == 4, "held by the scale-down window"
    assert harness.deployments.costs == {}, "nothing marked before a scale-in"
    clock.advance(57)  # 59 s after 4 replicas were last wanted
    await harness.scaler.tick()
    assert harness.deployments.replicas["p"] == 4
    clock.advance(1.5)
    await harness.scaler.tick()
    assert harness.deployments.replicas["p"] == 1, "the two running tasks keep one pod"
    # The ReplicaSet removes the lowest cost first: the busy pod goes last. pod-c and pod-d
    # never reported (a worker still starting) and count as idle.
    assert harness.deployments.costs == {"pod-a": 2, "pod-b": 0, "pod-c": 0, "pod-d": 0}
    status = harness.statuses.written["p"]
    assert status["desiredReplicas"] == 1 and "scale down" in status["lastScaleReason"]
    assert status["lastScaleTime"].endswith("Z")
    assert harness.sample("kubetasks_pool_in_flight", namespace=NS, pool="p") == 2
    assert harness.sample("kubetasks_queue_in_flight", namespace=NS, queue="q") == 2


async def test_a_refused_deployment_is_a_condition_not_a_crash(
    harness: Harness, clock: FakeClock
) -> None:
    message = 'Deployment.apps "bad" is invalid: spec.template.spec.containers[0].env[2].name: Required value'  # noqa: E501
    harness.deployments.refuse["bad"] = message
    await harness.scaler.upsert(pool("bad", "q1", minReplicas=1))
    await harness.scaler.upsert(pool("good", "q2"))
    await harness.enqueue("q1", 3, "a")
    await harness.enqueue("q2", 3, "b")
    await harness.scaler.tick()
    assert harness.deployments.replicas == {"good": 1}, "the other pool goes on"
    (ready,) = harness.statuses.written["bad"]["conditions"]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False", "DeploymentRejected", message)  # fmt: skip
    # Fixed (say, a referenced object now exists): the next tick applies it.
    del harness.deployments.refuse["bad"]
    clock.advance(2)
    await harness.scaler.tick()
    assert harness.deployments.replicas["bad"] == 1
    (ready,) = harness.statuses.written["bad"]["conditions"]
    assert (ready["status"], ready["reason"]) == ("True", "Available")


async def test_a_deployment_deleted_or_scaled_by_hand_is_put_back(
    harness: Harness, clock: FakeClock
) -> None:
    await harness.scaler.upsert(pool("p", "q", minReplicas=2, maxReplicas=3))
    del harness.deployments.replicas["p"]
    await harness.scaler.tick()
    assert harness.deployments.replicas["p"] == 2
    harness.deployments.replicas["p"] = 9
    clock.advance(2)
    await harness.scaler.tick()
    assert harness.deployments.replicas["p"] == 2


async def test_a_restarted_operator_keeps_the_pods_it_finds_for_the_window(
    harness: Harness, clock: FakeClock
) -> None:
    await harness.scaler.upsert(pool("p", "q", maxReplicas=4, scaleDownStabilizationSeconds=30))
    await harness.enqueue("q", 35)
    await harness.scaler.tick()
    assert harness.deployments.replicas["p"] == 4
    restarted = harness.new_scaler()
    for i in range(35):
        await harness.broker.forget("q", f"t{i}")
    await restarted.upsert(pool("p", "q", maxReplicas=4, scaleDownStabilizationSeconds=30))
    await restarted.tick()
    assert harness.deployments.replicas["p"] == 4, "an empty queue right after a restart"
    clock.advance(31)
    await restarted.tick()
    assert harness.deployments.replicas["p"] == 0


async def test_a_spec_change_applies_at_once_and_a_deleted_pool_is_forgotten(
    harness: Harness,
) -> None:
    await harness.scaler.upsert(pool("p", "q", minReplicas=1, maxReplicas=3))
    assert harness.deployments.replicas["p"] == 1
    await harness.scaler.upsert(pool("p", "q", generation=2, minReplicas=3, maxReplicas=3,
                                     concurrency=2))  # fmt: skip
    assert harness.deployments.replicas["p"] == 3
    args = harness.deployments.manifests["p"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--concurrency") + 1] == "2"
    assert harness.sample("kubetasks_pool_desired_replicas", namespace=NS, pool="p") == 3
    await harness.scaler.remove((NS, "p"))
    assert harness.sample("kubetasks_pool_desired_replicas", namespace=NS, pool="p") is None
    await harness.scaler.tick()  # nothing left to scale


async def test_enqueues_grow_a_running_pool_before_the_next_poll_at_a_bounded_rate(
    harness: Harness, clock: FakeClock
) -> None:
    await harness.scaler.upsert(pool("p", "q", minReplicas=1, maxReplicas=4, concurrency=10))
    stop = asyncio.Event()
    listener = asyncio.create_task(harness.scaler.listen(stop))
    await asyncio.sleep(0.2)  # subscribed

    async def settled(replicas: int) -> int:
        for _ in range(100):
            if harness.deployments.replicas["p"] == replicas:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        return harness.deployments.replicas["p"]

    try:
        await harness.enqueue("q", 40, "a")
        assert await settled(4) == 1, "evaluated less than 0.5 s ago: the next poll will do"
        clock.advance(0.5)
        await harness.enqueue("q", 1, "b")
        assert await settled(4) == 4
    finally:
        stop.set()
        await asyncio.wait_for(listener, 2)


async def test_a_pool_whose_first_evaluation_failed_is_taken_up_by_the_next_tick(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(namespace: str, name: str) -> None:
        raise ApiException(status=503, reason="Service Unavailable")

    with monkeypatch.context() as patched:
        patched.setattr(harness.deployments, "observe", unreachable)
        with pytest.raises(ApiException):
            await harness.scaler.upsert(pool("p", "q", minReplicas=2))
    assert harness.deployments.replicas == {}
    await harness.scaler.tick()
    assert harness.deployments.replicas == {"p": 2}


async def test_scale_in_goes_on_when_deletion_costs_cannot_be_set(
    harness: Harness, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.scaler.upsert(pool("p", "q", minReplicas=3, maxReplicas=3))
    harness.deployments.pod_names["p"] = ["pod-a", "pod-b", "pod-c"]

    async def forbidden(namespace: str, pod: str, cost: int) -> None:
        raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(harness.deployments, "set_deletion_cost", forbidden)
    await harness.scaler.upsert(pool("p", "q", generation=2, minReplicas=1, maxReplicas=1))
    assert harness.deployments.replicas["p"] == 1


async def test_enqueues_on_a_refused_pool_at_zero_retry_it_at_a_bounded_rate(
    harness: Harness, clock: FakeClock
) -> None:
    harness.deployments.refuse["bad"] = "refused"
    await harness.scaler.upsert(pool("bad", "q"))
    assert harness.deployments.attempts == {"bad": 1}
    stop = asyncio.Event()
    listener = asyncio.create_task(harness.scaler.listen(stop))
    await asyncio.sleep(0.2)  # subscribed
    try:
        for i in range(20):
            await harness.enqueue("q", 1, f"t{i}-")
        await asyncio.sleep(0.3)
        assert harness.deployments.attempts == {"bad": 1}, "not one API call per enqueue"
        clock.advance(0.5)
        await harness.enqueue("q", 1, "late-")
        for _ in range(100):
            if harness.deployments.attempts["bad"] == 2:
                break
            await asyncio.sleep(0.01)
        assert harness.deployments.attempts == {"bad": 2}
    finally:
        stop.set()
        await asyncio.wait_for(listener, 2)


async def test_an_invalid_name_in_the_queue_registry_does_not_stop_the_poll(
    harness: Harness, raw: aioredis.Redis
) -> None:
    # An older version registered `Default` before refusing it; every poll walked it.
    await harness.scaler.upsert(pool("p", "q", maxReplicas=4, concurrency=10))
    assert harness.deployments.replicas == {"p": 0}
    await harness.enqueue("q", 3)
    await raw.sadd(keys.QUEUES, "team/Default", "q")  # and a name of the layout before
    await harness.scaler.tick()
    assert harness.deployments.replicas == {"p": 1}  # the pool at zero woke on its queue
    assert harness.sample("kubetasks_queue_pending", namespace=NS, queue="q") == 3
    assert await raw.smembers(keys.QUEUES) == {"team/q"}


async def test_queue_settings_bound_the_replicas_a_backlog_gets(harness: Harness) -> None:
    await harness.scaler.upsert(pool("p", "q", maxReplicas=4, concurrency=10))
    await harness.enqueue("q", 1000)
    await harness.broker.configure("q", QueueSettings(paused=True))
    await harness.scaler.tick()
    assert harness.deployments.replicas == {"p": 0}, "paused: nothing would start"
    await harness.broker.configure("q", QueueSettings(max_in_flight=5))
    await harness.scaler.tick()
    assert harness.deployments.replicas == {"p": 1}, "five tasks fill one pod of ten"
    await harness.broker.configure("q", QueueSettings(rate=25))
    harness.clock.advance(2)
    await harness.scaler.tick()
    assert harness.deployments.replicas == {"p": 3}, "25 starts a second, not 1000 tasks"
    await harness.broker.configure("q", None)
    harness.clock.advance(2)
    await harness.scaler.tick()
    assert harness.deployments.replicas == {"p": 4}


async def test_a_pool_never_scales_on_another_namespaces_queue_of_the_same_name(
    harness: Harness,
) -> None:
    await harness.scaler.upsert(pool("p", "default", maxReplicas=4, concurrency=10))
    elsewhere = harness.broker.in_namespace("other-team")
    await elsewhere.enqueue(TaskMessage(id=f"o{i}", handler="h") for i in range(50))
    stop = asyncio.Event()
    listener = asyncio.create_task(harness.scaler.listen(stop))
    await asyncio.sleep(0.2)  # subscribed
    await elsewhere.enqueue([TaskMessage(id="late", handler="h")])
    await asyncio.sleep(0.2)
    await harness.scaler.tick()
    stop.set()
    await asyncio.wait_for(listener, 2)
    assert harness.deployments.replicas == {"p": 0}


async def test_the_oldest_pending_age_of_every_queue_is_exported_every_ten_seconds(
    harness: Harness,
) -> None:
    # No pool serves the queue: its metrics are exported all the same.
    age = "kubetasks_queue_oldest_pending_age_seconds"
    await harness.enqueue("q", 3)
    harness.clock.advance(4)
    await harness.scaler.tick()
    assert harness.sample(age, namespace=NS, queue="q") == 4.0
    assert harness.sample("kubetasks_queue_pending", namespace=NS, queue="q") == 3
    harness.clock.advance(5)  # within the 10 s between two scans of the line: kept
    await harness.scaler.tick()
    assert harness.sample(age, namespace=NS, queue="q") == 4.0
    harness.clock.advance(5)
    await harness.scaler.tick()
    assert harness.sample(age, namespace=NS, queue="q") == 14.0
    await harness.broker.lease("q", "worker-1", 3, 60)  # all running: nothing waits
    await harness.scaler.tick()
    assert harness.sample(age, namespace=NS, queue="q") == 0.0


async def test_the_pool_deployment_serves_worker_metrics_on_a_named_port(
    harness: Harness,
) -> None:
    harness.scaler.defaults = WorkloadDefaults(redis_url="redis://r", metrics_port=9191)
    await harness.scaler.upsert(pool("p", "q"))
    container = harness.deployments.manifests["p"]["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9191, "protocol": "TCP"}]
    args = container["args"]
    assert args[args.index("--metrics-port") + 1] == "9191"
    # Port 0: the workers serve none, and say so by having no port.
    harness.scaler.defaults = WorkloadDefaults(redis_url="redis://r", metrics_port=0)
    await harness.scaler.upsert(pool("p0", "q"))
    container = harness.deployments.manifests["p0"]["spec"]["template"]["spec"]["containers"][0]
    assert "ports" not in container and "--metrics-port" not in container["args"]


def test_the_process_kubelet_gives_each_pod_its_own_metrics_port() -> None:
    ports = iter([41001, 41002])
    argv = ["kubetasks", "worker", "--metrics-port", "9090", "--queues", "q:1"]
    assert local_ports(argv, lambda: next(ports)) == [
        "kubetasks", "worker", "--metrics-port", "41001", "--queues", "q:1"
    ]  # fmt: skip
    assert local_ports(["worker", "--metrics-port", "0"], lambda: next(ports))[-1] == "0"
