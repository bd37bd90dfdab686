"""A real WorkerPool pod serves Prometheus metrics on its pod IP (the chart installed on the
real node, the worker image in a container): after it ran a task, its ``/metrics`` on the
container port named ``metrics`` counts that task by handler and has the duration buckets;
the operator's endpoint has the oldest-pending-age gauge of the queue."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from chart_cluster import NAMESPACE, Cluster, wait_for

from kubetasks.vocabulary import API_VERSION, POOL_LABEL

pytestmark = [pytest.mark.timeout(600), pytest.mark.images]

POOL = "metrics"
QUEUE = "metrics"


def apply(cluster: Cluster, *objects: dict[str, Any]) -> None:
    items = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    cluster.run("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(items), timeout=300)


def scrape(address: str, port: int) -> str | None:
    """The page, or None while the pod does not answer yet."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
            return text
    except OSError:
        return None


def pool_pods_told(cluster: Cluster) -> str:
    """Every pod of the pool, deleted ones too, and the namespace's recent events: what a
    failure needs to be understood."""
    items = cluster.json("get", "pods", "-n", NAMESPACE, "-l", f"{POOL_LABEL}={POOL}")["items"]
    pods = [
        (p["metadata"]["name"], p["metadata"].get("deletionTimestamp"),
         (p.get("status") or {}).get("phase"), (p.get("status") or {}).get("podIP"))
        for p in items
    ]  # fmt: skip
    events = cluster.run("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp")
    return f"pods (name, deleted, phase, IP): {pods}\n{events[-4000:]}"


def test_a_worker_pod_serves_its_task_metrics_on_its_pod_ip(cluster: Cluster) -> None:
    pool = {"apiVersion": API_VERSION, "kind": "WorkerPool", "metadata": {"name": POOL},
            "spec": {"queues": [{"name": QUEUE}], "imports": ["example_handlers"],
                     "minReplicas": 1, "maxReplicas": 1}}  # fmt: skip
    task = {"apiVersion": API_VERSION, "kind": "Task", "metadata": {"name": "metrics-echo"},
            "spec": {"handler": "kubetasks.echo", "args": ["hi"], "queue": QUEUE}}  # fmt: skip
    apply(cluster, pool)
    try:
        apply(cluster, task)
        wait_for(
            "the Task Succeeded",
            lambda: (cluster.task("metrics-echo").get("status") or {}).get("phase") == "Succeeded",
            timeout=240,
        )
        pods = [
            p for p in cluster.worker_pods()
            if p["metadata"]["labels"].get(POOL_LABEL) == POOL
            and (p.get("status") or {}).get("podIP")
        ]  # fmt: skip
        assert len(pods) == 1, pool_pods_told(cluster)
        pod = pods[0]
        (container,) = pod["spec"]["containers"]
        (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
        worker = cluster.task("metrics-echo")["status"]["worker"]
        assert worker == f"{NAMESPACE}/{pod['metadata']['name']}"
        text = wait_for(
            "the worker pod's /metrics",
            lambda: scrape(pod["status"]["podIP"], port["containerPort"]),
            timeout=30,
        )
        labels = f'handler="kubetasks.echo",outcome="succeeded",queue="{QUEUE}"'
        assert f"kubetasks_worker_tasks_total{{{labels}}} 1.0" in text, text
        bucket = (
            'kubetasks_worker_task_duration_seconds_bucket{handler="kubetasks.echo",'
            f'le="+Inf",queue="{QUEUE}"}} 1.0'
        )
        assert bucket in text, text
        assert "kubetasks_worker_tasks_in_flight 0.0" in text
        gauge = (
            f'kubetasks_queue_oldest_pending_age_seconds{{namespace="{NAMESPACE}",queue="{QUEUE}"}}'
        )
        assert wait_for(
            "the queue's oldest pending age",
            lambda: cluster.metrics().get(gauge) == 0.0,
            timeout=30,
        )
    finally:
        cluster.run("delete", "task/metrics-echo", f"workerpool/{POOL}", "-n", NAMESPACE,
                    "--ignore-not-found", "--wait=false")  # fmt: skip
