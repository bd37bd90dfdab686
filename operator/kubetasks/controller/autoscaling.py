"""The autoscaler loop: queue depth in, Deployment replicas out, every poll and on enqueue.

Each tick reads the depth of every pool's queues from Redis (pending + due + running), asks
the pure :func:`kubetasks.autoscaler.decide` for the replica count, and applies it. A pool at
zero does not wait for the next tick: the operator listens to the enqueue channel and
evaluates the pools serving that queue at once. Before scaling in, the pods' deletion cost
is set from what each worker reports it is running, so the ReplicaSet removes idle pods
first, and the removed workers drain on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from kubetasks import autoscaler
from kubetasks.controller.state import OperatorState
from kubetasks.controller.workloads import POOL_LABEL, WorkloadDefaults, deployment
from kubetasks.k8s.api import reason_text
from kubetasks.k8s.deployments import DeploymentWriter
from kubetasks.k8s.status import PoolStatusWriter
from kubetasks.metrics import OperatorMetrics
from kubetasks.transitions import timestamp

log = logging.getLogger("kubetasks.autoscaler")

#: Seconds between two evaluations of every pool.
POLL_SECONDS = 2.0

PoolKey = tuple[str, str]


@dataclass
class Pool:
    body: dict[str, Any]
    desired: int | None = None
    """Replicas last applied (None until the Deployment was applied once)."""
    applied_generation: int | None = None
    history: autoscaler.History = field(default_factory=autoscaler.History)
    last_scale: float | None = None
    last_reason: str = ""
    last_status: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    """Why the pool's Deployment could not be applied (None: it was)."""

    @property
    def queues(self) -> list[str]:
        return [q["name"] for q in self.body["spec"]["queues"]]

    def policy(self) -> autoscaler.ScalePolicy:
        spec = self.body["spec"]
        return autoscaler.ScalePolicy(
            min_replicas=int(spec.get("minReplicas", 0)),
            max_replicas=int(spec.get("maxReplicas", 10)),
            target_per_replica=int(
                spec.get("targetTasksPerReplica") or spec.get("concurrency", 10)
            ),
            scale_up_window=float(spec.get("scaleUpStabilizationSeconds", 0)),
            scale_down_window=float(spec.get("scaleDownStabilizationSeconds", 60)),
        )


class PoolAutoscaler:
    name = "autoscaler"

    def __init__(
        self,
        state: OperatorState,
        deployments: DeploymentWriter,
        statuses: PoolStatusWriter,
        defaults: WorkloadDefaults | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.deployments = deployments
        self.statuses = statuses
        self.defaults = defaults or WorkloadDefaults()
        self.pools: dict[PoolKey, Pool] = {}
        self.wake: asyncio.Event | None = None
        self._lock = asyncio.Lock()
        self.decisions: list[tuple[float, PoolKey, int, str]] = []
        """Recent scale changes (time, pool, replicas, reason), newest last."""

    def interval(self) -> float:
        return POLL_SECONDS

    # -- pools come and go -------------------------------------------------------------------

    async def upsert(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = Pool(body)
            current = await self.deployments.replicas(*key)
            pool.desired = current[0] if current else None
        pool.body = body
        if pool.applied_generation != meta.get("generation"):
            async with self._lock:
                await self._apply(pool, pool.desired if pool.desired is not None else 0)
            await self.evaluate(key, "spec changed")

    def remove(self, key: PoolKey) -> None:
        self.pools.pop(key, None)

    # -- decisions -------------------------------------------------------------------------

    async def tick(self) -> None:
        for key in list(self.pools):
            try:
                await self.evaluate(key, "poll")
            except Exception:
                log.exception("autoscaling pool %s/%s failed", *key)

    async def on_enqueue(self, queue: str) -> None:
        """Tasks arrived on ``queue``: wake pools at zero that serve it, now."""
        for key, pool in list(self.pools.items()):
            if queue in pool.queues and not pool.desired:
                await self.evaluate(key, f"task enqueued on {queue}")

    async def evaluate(self, key: PoolKey, reason: str) -> None:
        async with self._lock:
            pool = self.pools.get(key)
            if pool is None:
                return
            now = self.state.clock.now()
            stats = [await self.state.broker.stats(q) for q in pool.queues]
            depth = autoscaler.QueueDepth(
                pending=sum(s.pending for s in stats),
                due_scheduled=sum(s.due for s in stats),
                active=sum(s.active for s in stats),
            )
            if self.metrics is not None:
                for s in stats:
                    self.metrics.pending.labels(s.queue).set(s.pending + s.due)
                    self.metrics.scheduled.labels(s.queue).set(s.scheduled - s.due)
                    self.metrics.active.labels(s.queue).set(s.active)
                    self.metrics.dead.labels(s.queue).set(s.dead)
                    self.metrics.processed.labels(s.queue).set(s.processed)
                    self.metrics.failed.labels(s.queue).set(s.failed)
            current = pool.desired or 0
            decision, pool.history = autoscaler.decide(
                depth, current, pool.policy(), pool.history, now
            )
            if decision.desired != current:
                if decision.desired < current:
                    await self._prefer_idle(key)
                if not await self._apply(pool, decision.desired):
                    await self._report(pool, key, depth, current)
                    return
                pool.last_scale = now
                pool.last_reason = f"{reason}: {decision.reason}"
                if self.metrics is not None:
                    direction = "up" if decision.desired > current else "down"
                    self.metrics.scale_changes.labels(*key, direction).inc()
                self.decisions.append((now, key, decision.desired, reason))
                del self.decisions[:-100]
                log.info(
                    "pool %s/%s: %d -> %d replicas (%s; %s)",
                    *key, current, decision.desired, reason, decision.reason,
                )  # fmt: skip
            if self.metrics is not None:
                self.metrics.desired.labels(*key).set(decision.desired)
            await self._report(pool, key, depth, decision.desired)

    async def _apply(self, pool: Pool, replicas: int) -> bool:
        """Apply the pool's Deployment; False (and the reason on the pool) if refused."""
        try:
            await self.deployments.apply(deployment(pool.body, replicas, self.defaults))
        except Exception as exc:
            # A pod template the CRD let through but Kubernetes refuses (a malformed env
            # entry, say): report it on the pool and keep the last good Deployment.
            problem = reason_text(exc)
            if problem != pool.problem:
                meta = pool.body["metadata"]
                log.warning("pool %s/%s: Deployment refused: %s", meta["namespace"],
                            meta["name"], problem)  # fmt: skip
            pool.problem = problem
            pool.applied_generation = pool.body["metadata"].get("generation")
            return False
        pool.problem = None
        pool.desired = replicas
        pool.applied_generation = pool.body["metadata"].get("generation")
        return True

    async def _prefer_idle(self, key: PoolKey) -> None:
        """Mark each pod with what its worker runs, so scale-in removes idle pods first."""
        namespace, name = key
        pods = await self.deployments.pods(namespace, f"{POOL_LABEL}={name}")
        loads = await self.state.broker.worker_loads([p["name"] for p in pods])
        for pod in pods:
            load = loads.get(pod["name"])
            cost = str(load if load is not None else 0)
            if pod["cost"] != cost:
                await self.deployments.set_deletion_cost(namespace, pod["name"], int(cost))

    async def _report(
        self, pool: Pool, key: PoolKey, depth: autoscaler.QueueDepth, desired: int
    ) -> None:
        current = await self.deployments.replicas(*key)
        replicas, ready = current or (0, 0)
        status = {
            "queueDepth": depth.pending + depth.due_scheduled,
            "inFlight": depth.active,
            "desiredReplicas": desired,
            "replicas": replicas,
            "readyReplicas": ready,
            "observedGeneration": pool.body["metadata"].get("generation"),
        }
        if pool.last_scale is not None:
            status["lastScaleTime"] = timestamp(pool.last_scale)
            status["lastScaleReason"] = pool.last_reason[:1024]
        status["conditions"] = self._conditions(pool, replicas, ready)
        if status != pool.last_status:
            await self.statuses.write(*key, status)
            pool.last_status = status

    def _conditions(self, pool: Pool, replicas: int, ready: int) -> list[dict[str, Any]]:
        """Ready: the Deployment is applied and as many pods are ready as it asks for."""
        if pool.problem:
            truth, reason, message = "False", "DeploymentRejected", pool.problem
        elif ready < replicas:
            truth, reason = "False", "PodsStarting"
            message = f"{ready} of {replicas} worker pods ready"
        else:
            truth, reason, message = "True", "Available", f"{ready} worker pods ready"
        previous = next(
            (c for c in pool.last_status.get("conditions", []) if c["type"] == "Ready"), None
        )
        if previous is None or previous["status"] != truth:
            since = timestamp(self.state.clock.now())
        else:
            since = previous["lastTransitionTime"]
        return [{"type": "Ready", "status": truth, "reason": reason,
                 "message": message[:1024], "lastTransitionTime": since}]  # fmt: skip

    async def listen(self, stop: asyncio.Event) -> None:
        """React to enqueues (pub/sub) until stopped; reconnect after Redis outages."""
        while not stop.is_set():
            try:
                async for queue in self.state.broker.enqueued():
                    await self.on_enqueue(queue)
                    if stop.is_set():
                        return
            except Exception as exc:
                log.warning("enqueue listener stopped (%s); reconnecting", exc)
                await asyncio.sleep(1.0)
