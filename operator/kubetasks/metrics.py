"""Prometheus metrics of workers and the operator (prometheus-client).

Workers count what they run; the operator exports what it sees in Redis (queue depth, tasks
in flight) and what it decides (desired replicas, scale changes), so HPA or KEDA can scale
on the same numbers and dashboards can be built without reading Redis. It also counts what
its repair loop had to fix: a safety net that works shows up there instead of hiding a bug.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: Task duration buckets, in seconds: from no-op to long batch jobs.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)


#: Seconds between two reads of a queue's oldest pending age (a scan of the first tasks in
#: line, heavier than the counts, which are read every poll).
OLDEST_PENDING_SECONDS = 10.0


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.finished = Counter(
            "kubetasks_worker_tasks_total",
            "Attempts finished by this worker, by queue, handler and outcome",
            ["queue", "handler", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "kubetasks_worker_task_duration_seconds",
            "Wall time of one attempt, by queue and handler",
            ["queue", "handler"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "kubetasks_worker_tasks_in_flight",
            "Tasks this worker is running now",
            registry=self.registry,
        )

        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        """(queue, handler, outcome) -> its counter and histogram: labels() looked up once."""

    def observe(self, queue: str, handler: str, outcome: str, seconds: float) -> None:
        key = (queue, handler, outcome)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.finished.labels(queue, handler, outcome),
                self.duration.labels(queue, handler),
            )
        children[0].inc()
        children[1].observe(seconds)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["namespace", "queue"]
        self.pending = Gauge(
            "kubetasks_queue_pending", "Tasks waiting to run now", labels, registry=self.registry
        )
        self.scheduled = Gauge(
            "kubetasks_queue_scheduled",
            "Delayed tasks and retries not yet due",
            labels,
            registry=self.registry,
        )
        self.active = Gauge(
            "kubetasks_queue_in_flight", "Tasks running now", labels, registry=self.registry
        )
        self.dead = Gauge(
            "kubetasks_queue_dead", "Tasks that failed for good", labels, registry=self.registry
        )
        self.processed = Gauge(
            "kubetasks_queue_processed_total",
            "Tasks that succeeded (counter kept in Redis)",
            labels,
            registry=self.registry,
        )
        self.failed = Gauge(
            "kubetasks_queue_failed_total",
            "Failed attempts (counter kept in Redis)",
            labels,
            registry=self.registry,
        )
        self.oldest_pending = Gauge(
            "kubetasks_queue_oldest_pending_age_seconds",
            "Seconds the oldest task waiting to run has waited (0: none waiting); read every"
            f" {OLDEST_PENDING_SECONDS:g} s",
            labels,
            registry=self.registry,
        )
        pool = ["namespace", "pool"]
        self.desired = Gauge(
            "kubetasks_pool_desired_replicas",
            "Replicas the autoscaler wants for a WorkerPool",
            pool,
            registry=self.registry,
        )
        self.scale_changes = Counter(
            "kubetasks_pool_scale_changes_total",
            "Replica changes made by the autoscaler",
            [*pool, "direction"],
            registry=self.registry,
        )
        self.pool_depth = Gauge(
            "kubetasks_pool_queue_depth",
            "Tasks waiting or due on a WorkerPool's queues",
            pool,
            registry=self.registry,
        )
        self.pool_in_flight = Gauge(
            "kubetasks_pool_in_flight",
            "Tasks running on a WorkerPool's queues",
            pool,
            registry=self.registry,
        )

        # The repair loop is a safety net: with workers that report, these stay at 0.
        self.repaired_outcomes = Counter(
            "kubetasks_operator_repaired_outcomes_total",
            "Outcomes the repair loop copied from Redis onto Tasks still shown unfinished"
            " (status writes of workers that were lost)",
            registry=self.registry,
        )
        self.restored_tasks = Counter(
            "kubetasks_operator_restored_tasks_total",
            "Unfinished Tasks the repair loop enqueued again because Redis had lost them",
            registry=self.registry,
        )
        self.repair_sweeps = Counter(
            "kubetasks_operator_repair_sweeps_total",
            "Repair sweeps completed (Redis checked against every watched Task)",
            registry=self.registry,
        )

    def observe_pool(self, namespace: str, pool: str, depth: int, in_flight: int,
                     desired: int) -> None:  # fmt: skip
        self.pool_depth.labels(namespace, pool).set(depth)
        self.pool_in_flight.labels(namespace, pool).set(in_flight)
        self.desired.labels(namespace, pool).set(desired)

    def forget_pool(self, namespace: str, pool: str) -> None:
        """Drop a deleted pool's series (a gauge would otherwise report it forever)."""
        for gauge in (self.pool_depth, self.pool_in_flight, self.desired):
            with contextlib.suppress(KeyError):  # never observed
                gauge.remove(namespace, pool)


def serve(registry: CollectorRegistry, port: int) -> None:
    """Expose ``/metrics`` on ``port`` (0 disables it)."""
    if port:
        start_http_server(port, registry=registry)
