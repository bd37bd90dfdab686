"""Queue resources on the real control plane and Redis: the operator writes a Queue's spec to
its queue's settings, the workers obey them, the Queue's status and events show it, and the
CLI pauses, resumes and lists queues as a user runs it (``kubetasks`` with a kubeconfig)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import pytest
from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from fixtures.controlplane import Kubectl
from fixtures.kube import event_reasons, obj
from fixtures.operator import Operator, StartWorkers, Tasks, kube_env
from fixtures.waiting import wait_for as wait
from kubetasks.queue import Broker, QueueSettings
from kubetasks.vocabulary import API_VERSION, GROUP, VERSION

Completed = subprocess.CompletedProcess[str]

pytestmark = pytest.mark.timeout(180)


class Queues:
    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self.namespace = namespace

    def create(self, name: str, **spec: Any) -> None:
        body = {"apiVersion": API_VERSION, "kind": "Queue",
                "metadata": {"name": name}, "spec": spec}  # fmt: skip
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "queues", body)

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "queues", name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, "queues", name)

    def get(self, name: str) -> dict[str, Any]:
        return obj(
            self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "queues", name)
        )

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        conditions = self.status(name).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), {})

    def events(self, name: str) -> list[str]:
        found = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=Queue"
        )
        return event_reasons(found.items)


@pytest.fixture
def queues(kube_api: k8s.ApiClient, namespace: str) -> Queues:
    return Queues(kube_api, namespace)


def settings(redis_url: str, namespace: str, queue: str) -> QueueSettings | None:
    async def read() -> QueueSettings | None:
        broker = Broker.from_url(redis_url, namespace=namespace)
        try:
            return await broker.settings(queue)
        finally:
            await broker.close()

    return asyncio.run(read())


def cli(
    control_plane: ControlPlane, redis_url: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``kubetasks ...`` as a user runs it: a kubeconfig and a Redis URL, nothing else."""
    return subprocess.run(
        [sys.executable, "-m", "kubetasks.cli", *args],
        env=kube_env(control_plane, redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_queue_resource_caps_its_queue_and_its_status_shows_the_load(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks, queues: Queues,
    kubectl: Kubectl, redis_url: str, namespace: str,
) -> None:  # fmt: skip
    queues.create("default", maxInFlight=2, retentionSeconds=600)
    wanted = QueueSettings(max_in_flight=2, retention=600)
    wait("the settings in Redis", lambda: settings(redis_url, namespace, "default") == wanted)
    assert "Configured" in wait("an event", lambda: queues.events("default"))
    task_workers(2, "--concurrency", "10")
    for i in range(8):
        tasks.create(f"nap-{i}", "test.sleep", args=[1.5])
    throttled = wait("Throttled", lambda: queues.condition("default", "Throttled").get("reason")
                     == "MaxInFlight" and queues.status("default"))  # fmt: skip
    assert throttled["running"] == 2 and throttled["pending"] >= 1, throttled
    running = [t for t in tasks.list() if (t.get("status") or {}).get("phase") == "Running"]
    assert len(running) <= 2, [t["metadata"]["name"] for t in running]
    # Raising the cap needs nothing restarted: the next dequeue reads it.
    queues.patch("default", {"maxInFlight": 8})
    items = tasks.wait_all_terminal(8, timeout=60)
    assert {t["status"]["phase"] for t in items} == {"Succeeded"}
    final = wait("the status caught up", lambda: (s := queues.status("default"))
                 .get("processed") == 8 and s)  # fmt: skip
    assert (final["pending"], final["running"], final["failed"]) == (0, 0, 0)
    assert queues.condition("default", "Throttled")["status"] == "False"
    # kubectl get queues reads as a dashboard: the printer columns.
    table = kubectl("get", "queues", "-n", namespace)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]

    def cell(column: str) -> str:
        at = header.index(column)
        return row[at:].split()[0]

    assert (cell("NAME"), cell("PAUSED"), cell("MAX IN FLIGHT")) == ("default", "false", "8")
    assert (cell("PENDING"), cell("RUNNING"), cell("PROCESSED"), cell("FAILED")) == (
        "0", "0", "8", "0"
    )  # fmt: skip
    # Deleted, the queue runs with the defaults again.
    queues.delete("default")
    wait("the settings removed", lambda: settings(redis_url, namespace, "default") is None)


def test_pause_and_resume_from_the_cli(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks, queues: Queues,
    control_plane: ControlPlane, redis_url: str, namespace: str,
) -> None:  # fmt: skip
    paused = cli(control_plane, redis_url, "pause", "default", "-n", namespace)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == f"queue {namespace}/default paused"
    assert queues.get("default")["spec"]["paused"] is True  # created by the pause
    wait("paused in Redis", lambda: (s := settings(redis_url, namespace, "default")) and s.paused)
    task_workers(1)
    for i in range(5):
        tasks.create(f"held-{i}", "test.add", args=[i, 1])
    wait("the Paused condition", lambda: queues.condition("default", "Paused").get("status")
         == "True" and queues.status("default").get("pending") == 5)  # fmt: skip
    time.sleep(2)  # a worker is idle and the tasks wait: none may start
    phases = {t["metadata"]["name"]: (t.get("status") or {}).get("phase") for t in tasks.list()}
    assert set(phases.values()) <= {None, "Queued"}, phases
    listed = cli(control_plane, redis_url, "queues", "-n", namespace, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["namespace"], row["queue"], row["paused"], row["pending"]) == (
        namespace, "default", True, 5
    )  # fmt: skip
    assert row["oldestPendingSeconds"] >= 2
    table = cli(control_plane, redis_url, "queues", "-n", namespace)
    assert table.stdout.splitlines()[0].split()[:4] == ["NAMESPACE", "QUEUE", "PAUSED",
                                                          "MAX-IN-FLIGHT"]  # fmt: skip

    resumed = cli(control_plane, redis_url, "resume", "default", "-n", namespace)
    assert resumed.returncode == 0, resumed.stderr
    items = tasks.wait_all_terminal(5, timeout=30)
    assert {t["metadata"]["name"]: t["status"]["result"] for t in items} == {
        f"held-{i}": i + 1 for i in range(5)
    }
    assert queues.events("default")[-1] == "Resumed"
    assert "Paused" in queues.events("default")


def test_the_cli_names_a_bad_queue_and_an_unreachable_cluster(
    control_plane: ControlPlane, redis_url: str, namespace: str
) -> None:
    bad = cli(control_plane, redis_url, "pause", "Default", "-n", namespace)
    assert bad.returncode == 2 and "QUEUE: invalid queue name 'Default'" in bad.stderr
    bad_ns = cli(control_plane, redis_url, "queues", "-n", "Team_A")
    assert bad_ns.returncode == 2 and "invalid namespace 'Team_A'" in bad_ns.stderr


def test_redis_is_put_back_where_it_drifted_from_the_queues(
    operator: Operator, queues: Queues, redis_url: str, namespace: str
) -> None:
    # Settings that no Queue asks for (its Queue was deleted while the operator was down) go;
    # settings Redis lost (restarted empty) come back.
    queues.create("kept", paused=True)
    wait("kept paused", lambda: (s := settings(redis_url, namespace, "kept")) and s.paused)

    async def drift() -> None:
        broker = Broker.from_url(redis_url, namespace=namespace)
        try:
            await broker.configure("orphan", QueueSettings(paused=True))
            await broker.configure("kept", None)
        finally:
            await broker.close()

    asyncio.run(drift())
    wait("the orphan cleared", lambda: settings(redis_url, namespace, "orphan") is None)
    wait("kept restored", lambda: (s := settings(redis_url, namespace, "kept")) and s.paused)


def test_a_queues_ttl_deletes_its_finished_tasks_that_set_none(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks, queues: Queues
) -> None:
    queues.create("default", ttlSecondsAfterFinished=1)
    wait("the Queue observed", lambda: queues.status("default").get("observedGeneration") == 1)
    task_workers(1)
    tasks.create("short-lived", "test.add", args=[1, 2])
    tasks.create("kept", "test.add", args=[2, 2], ttlSecondsAfterFinished=3600)
    tasks.wait_phase("kept", "Succeeded")
    wait("the Task without a TTL deleted", lambda: tasks.get("short-lived") is None, timeout=20)
    assert tasks.get("kept") is not None
