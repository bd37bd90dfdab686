"""The autoscaler loop: queue depth in, Deployment replicas out, every poll and on enqueue.

Each tick reads the depth of every pool's queues from Redis (pending + due + running), asks
the pure :func:`kubetasks.autoscaler.decide` for the replica count, and applies it. A pool at
zero does not wait for the next tick: the operator listens to the enqueue channel and
evaluates the pools serving that queue at once. Before scaling in, the pods' deletion cost
is set from what each worker reports it is running, so the ReplicaSet removes idle pods
first, and the removed workers drain on SIGTERM.

The Deployment is the operator's: one that was deleted or scaled by someone else is put
back on the next tick, and a pool whose Deployment the API server refuses (a pod template
the CRD let through but Kubernetes does not accept) gets a condition and an event, is tried
again every tick, and never stops the other pools.

Before any apply the pool is checked against the operator's pool policy
(``poolpolicy.py``): a pool asking for more than it allows (a service account, an image, a
priority class, an env source, an annotation, a toleration) gets Ready=False with reason
``PolicyViolation`` and a Warning event of that reason, each naming the field, and nothing
is applied. A pool edited into violation keeps the Deployment last applied for it, as it
was (not scaled), until it is fixed or deleted: the refused spec never reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubetasks import autoscaler
from kubetasks.background import isolated, log_failure
from kubetasks.clock import Clock
from kubetasks.controller import poolpolicy
from kubetasks.controller.poolusers import PoolCredentials, PoolUsers
from kubetasks.controller.workloads import WorkloadDefaults, deployment
from kubetasks.errors import BrokerUnavailableError
from kubetasks.k8s.api import ApiError, reason_text
from kubetasks.k8s.deployments import DeploymentState, WorkerPod
from kubetasks.k8s.events import PostEvent
from kubetasks.metrics import OLDEST_PENDING_SECONDS, OperatorMetrics
from kubetasks.queue import Broker, QueueStats
from kubetasks.settings import worker_id_for_pod
from kubetasks.timestamps import rfc3339_millis
from kubetasks.vocabulary import POOL_LABEL

log = logging.getLogger("kubetasks.autoscaler")

#: Seconds between two evaluations of every pool.
POLL_SECONDS = 2.0
#: Fewest seconds between two evaluations of a running pool caused by enqueues.
ENQUEUE_GAP_SECONDS = 0.5

PoolKey = tuple[str, str]


class DeploymentsApi(Protocol):
    """The calls on worker Deployments and their pods; the real one is
    :class:`~kubetasks.k8s.deployments.DeploymentWriter`."""

    async def apply(self, manifest: dict[str, Any]) -> None:
        """Server-side apply of a whole Deployment, replicas included."""
        ...

    async def observe(self, namespace: str, name: str) -> DeploymentState | None:
        """What the Deployment asks for and has (None: there is none)."""
        ...

    async def pods(self, namespace: str, selector: str) -> list[WorkerPod]:
        """Live pods matching a label selector."""
        ...

    async def set_deletion_cost(self, namespace: str, pod: str, cost: int) -> None:
        """Annotate a pod's deletion cost (gone already: nothing to do)."""
        ...


class AccountLabelsApi(Protocol):
    """Reads the labels the pool policy decides on; the real one is
    :class:`~kubetasks.k8s.labels.ServiceAccountLabels`."""

    async def labels(self, namespace: str, name: str) -> dict[str, str] | None:
        """The labels of a ServiceAccount (None: there is none)."""
        ...


class PoolStatuses(Protocol):
    """Where pool status goes; the real one is :class:`~kubetasks.k8s.status.PoolStatusWriter`."""

    async def write(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the WorkerPool's status (gone already: nothing to do)."""
        ...


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
    problem_reason: str = "DeploymentRejected"
    """Who refused it: ``PolicyViolation`` (the operator's pool policy), ``RedisUserFailed``
    (its Redis user or credential Secret could not be made) or
    ``DeploymentRejected`` (the API server)."""
    pods_failure: str | None = None
    """Why the Deployment's pods cannot be created (None: they can)."""
    adopted: bool = False
    """The Deployment found at the first evaluation was taken over."""
    evaluated_at: float = float("-inf")

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
        broker: Broker,
        clock: Clock,
        deployments: DeploymentsApi,
        statuses: PoolStatuses,
        *,
        defaults: WorkloadDefaults | None = None,
        accounts: AccountLabelsApi | None = None,
        policy: poolpolicy.PoolPolicy | None = None,
        users: PoolUsers | None = None,
        metrics: OperatorMetrics | None = None,
        events: PostEvent | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.broker = broker
        self.clock = clock
        self.events = events
        """Posts the pools' Events (None: none are posted, as in tests of the loop)."""
        self.metrics = metrics
        self.deployments = deployments
        self.statuses = statuses
        self.defaults = defaults or WorkloadDefaults()
        self.accounts = accounts
        self.policy = policy if policy is not None else self.defaults.policy()
        self.users = users
        """Each pool's own Redis user (None: workers share the operator's password)."""
        self.poll_seconds = poll_seconds
        self.pools: dict[PoolKey, Pool] = {}
        self.wake: asyncio.Event | None = None
        self._lock = asyncio.Lock()
        self._next_oldest: dict[tuple[str, str], float] = {}
        """When each queue's oldest pending age is read next (clock seconds)."""
        self.decisions: list[tuple[float, PoolKey, int, str]] = []
        """Recent scale changes (time, pool, replicas, reason), newest last."""

    def interval(self) -> float:
        return self.poll_seconds

    # -- pools come and go -------------------------------------------------------------------

    async def upsert(self, body: dict[str, Any]) -> None:
        """A pool was seen: evaluate it at once if it is new or its spec changed (its own
        status writes come back here too, and need nothing). Registered first, so a failed
        evaluation is retried by the next tick."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = Pool(body)
        pool.body = body
        if pool.applied_generation != meta.get("generation"):
            await self.evaluate(key, "spec changed" if pool.adopted else "pool found")

    async def remove(self, key: PoolKey) -> None:
        self.pools.pop(key, None)
        if self.metrics is not None:
            self.metrics.forget_pool(*key)
        if self.users is not None:
            await self.users.remove(key)

    # -- decisions -------------------------------------------------------------------------

    async def tick(self) -> None:
        if self.metrics is not None:
            # Every queue, served by a pool or not: HPA or KEDA may scale on these instead.
            now = self.clock.now()
            for namespace, queue in await self.broker.all_queues():
                with isolated(log, "metrics of queue %s/%s", namespace, queue):
                    # The oldest pending age costs a scan of the line: not every poll.
                    detail = now >= self._next_oldest.get((namespace, queue), 0.0)
                    stats = await self.broker.in_namespace(namespace).stats(queue, detail=detail)
                    _export(self.metrics, stats)
                    if detail:
                        self._next_oldest[(namespace, queue)] = now + OLDEST_PENDING_SECONDS
        for key in list(self.pools):
            try:
                await self.evaluate(key, "poll")
            except Exception:
                log_failure(log, "autoscaling pool %s/%s failed", *key)

    async def on_enqueue(self, namespace: str, queue: str) -> None:
        """Tasks arrived on ``queue`` of ``namespace``: wake pools at zero that serve it now,
        and let the others grow before the next poll (each at most every
        ``ENQUEUE_GAP_SECONDS``, so a stream of enqueues does not turn into a stream of API
        calls). Only pools of the same namespace serve it."""
        now = self.clock.now()
        for key, pool in list(self.pools.items()):
            if key[0] != namespace or queue not in pool.queues:
                continue
            # A pool whose Deployment is refused stays at zero: it is retried at the gap too.
            waking = not pool.desired and pool.problem is None
            growing = (pool.desired or 0) < pool.policy().max_replicas
            if waking or (growing and now - pool.evaluated_at >= ENQUEUE_GAP_SECONDS):
                await self.evaluate(key, f"task enqueued on {queue}")

    async def evaluate(self, key: PoolKey, trigger: str) -> None:
        async with self._lock:
            pool = self.pools.get(key)
            if pool is None:
                return
            now = pool.evaluated_at = self.clock.now()
            found = await self.deployments.observe(*key)
            if not pool.adopted:
                if found is not None:
                    # A restarted operator keeps the pods it finds for one scale-down window
                    # before it may remove them, as if it had just asked for them.
                    pool.desired = found.replicas
                    pool.history = autoscaler.History(((now, found.replicas),))
                pool.adopted = True
            broker = self.broker.in_namespace(key[0])
            depths = [_usable(await broker.stats(q)) for q in pool.queues]
            depth = autoscaler.QueueDepth(
                pending=sum(d.pending for d in depths),
                due_scheduled=sum(d.due_scheduled for d in depths),
                active=sum(d.active for d in depths),
            )
            current = pool.desired or 0
            decision, pool.history = autoscaler.decide(
                depth, current, pool.policy(), pool.history, now
            )
            # Apply the Deployment when the spec changed, and put it back as the operator
            # wants it when it was deleted, scaled by someone else, or refused last time.
            stale = (
                pool.applied_generation != pool.body["metadata"].get("generation")
                or pool.problem is not None
                or found is None
                or found.replicas != current
            )
            if decision.desired != current or stale:
                if found is not None and decision.desired < found.replicas:
                    try:
                        await self._prefer_idle(key)
                    except Exception as exc:
                        # Only the choice of pods suffers: removed workers still drain.
                        log.warning("pool %s/%s: deletion costs not set: %s", *key, exc)
                if await self._apply(pool, decision.desired):
                    found = await self.deployments.observe(*key)
                    if decision.desired != current:
                        self._scaled(pool, key, current, decision, trigger, now)
            if self.metrics is not None:
                self.metrics.observe_pool(*key, depth.load - depth.active, depth.active,
                                          pool.desired or 0)  # fmt: skip
            await self._report(pool, key, depth, found)

    def _scaled(
        self,
        pool: Pool,
        key: PoolKey,
        before: int,
        decision: autoscaler.ScaleDecision,
        trigger: str,
        now: float,
    ) -> None:
        pool.last_scale = now
        pool.last_reason = f"{trigger}: {decision.reason}"
        direction = "up" if decision.desired > before else "down"
        if self.metrics is not None:
            self.metrics.scale_changes.labels(*key, direction).inc()
        self.decisions.append((now, key, decision.desired, trigger))
        del self.decisions[:-100]
        message = f"{before} -> {decision.desired} replicas ({pool.last_reason})"
        log.info("pool %s/%s: %s", *key, message)
        self._event(pool, "Normal", "ScaledUp" if direction == "up" else "ScaledDown", message)

    async def _apply(self, pool: Pool, replicas: int) -> bool:
        """Apply the pool's Deployment; False (and the reason on the pool) if the pool
        policy or the API server refuses it."""
        violations = await self._violations(pool)
        if violations:
            self._refused(pool, "PolicyViolation", "; ".join(map(str, violations)))
            return False
        credentials: PoolCredentials | None = None
        if self.users is not None:
            try:
                credentials = await self.users.ensure(pool.body)
            except Exception as exc:
                self._refused(pool, "RedisUserFailed", f"setting the pool's Redis user: {exc}")
                return False
        try:
            manifest = deployment(pool.body, replicas, self.defaults, credentials)
            await self.deployments.apply(manifest)
        except Exception as exc:
            self._refused(pool, "DeploymentRejected", _api_message(exc))
            return False
        if pool.problem is not None:
            self._event(pool, "Normal", "DeploymentApplied", "the Deployment is accepted again")
        pool.problem = None
        pool.problem_reason = "DeploymentRejected"
        pool.desired = replicas
        pool.applied_generation = pool.body["metadata"].get("generation")
        return True

    async def _violations(self, pool: Pool) -> list[poolpolicy.Violation]:
        """The pool's spec against the pool policy, with the labels it decides on read now
        (a label removed since the last apply counts)."""
        spec = pool.body["spec"]
        namespace = pool.body["metadata"]["namespace"]
        found: dict[str, Mapping[str, str] | poolpolicy.LookupFailed | None] = {}
        for account in poolpolicy.references(spec, self.policy):
            if self.accounts is None:
                found[account] = poolpolicy.LookupFailed("the operator reads no labels")
                continue
            try:
                found[account] = await self.accounts.labels(namespace, account)
            except ApiError as exc:
                # Fail closed: a label the operator may not read allows nothing.
                found[account] = poolpolicy.LookupFailed(reason_text(exc))
        return poolpolicy.check(spec, self.policy, found)

    def _event(self, pool: Pool, kind: str, reason: str, message: str) -> None:
        if self.events is not None:
            self.events(pool.body, kind, reason, message)

    def _refused(self, pool: Pool, reason: str, problem: str) -> None:
        """Record why nothing was applied; a new reason or message is posted as an event."""
        if (reason, problem) != (pool.problem_reason, pool.problem):
            meta = pool.body["metadata"]
            log.warning("pool %s/%s: %s: %s", meta["namespace"], meta["name"], reason, problem)
            self._event(pool, "Warning", reason, problem)
        pool.problem, pool.problem_reason = problem, reason
        pool.applied_generation = pool.body["metadata"].get("generation")

    async def _prefer_idle(self, key: PoolKey) -> None:
        """Mark each pod with what its worker runs, so scale-in removes idle pods first
        (a worker that has not reported lately counts as idle)."""
        namespace, name = key
        pods = await self.deployments.pods(namespace, f"{POOL_LABEL}={name}")
        loads = await self.broker.worker_loads(
            [worker_id_for_pod(namespace, p["name"]) for p in pods]
        )
        for pod in pods:
            cost = loads.get(worker_id_for_pod(namespace, pod["name"])) or 0
            if pod["cost"] != str(cost):
                await self.deployments.set_deletion_cost(namespace, pod["name"], cost)

    async def _report(
        self, pool: Pool, key: PoolKey, depth: autoscaler.QueueDepth, found: DeploymentState | None
    ) -> None:
        if found is not None and found.failure != pool.pods_failure and found.failure:
            self._event(pool, "Warning", "PodsRejected", found.failure)
        pool.pods_failure = found.failure if found is not None else None
        replicas, ready = (found.replicas, found.ready) if found is not None else (0, 0)
        status: dict[str, Any] = {
            "queueDepth": depth.pending + depth.due_scheduled,
            "inFlight": depth.active,
            "desiredReplicas": pool.desired or 0,
            "replicas": replicas,
            "readyReplicas": ready,
            "observedGeneration": pool.body["metadata"].get("generation"),
        }
        if pool.last_scale is not None:
            status["lastScaleTime"] = rfc3339_millis(pool.last_scale)
            status["lastScaleReason"] = pool.last_reason[:1024]
        status["conditions"] = self._conditions(pool, replicas, ready)
        if status != pool.last_status:
            await self.statuses.write(*key, status)
            pool.last_status = status

    def _conditions(self, pool: Pool, replicas: int, ready: int) -> list[dict[str, Any]]:
        """Ready: the Deployment is applied and as many pods are ready as it asks for."""
        if pool.problem:
            truth, reason, message = "False", pool.problem_reason, pool.problem
        elif pool.pods_failure:
            truth, reason, message = "False", "PodsRejected", pool.pods_failure
        elif ready < replicas:
            truth, reason = "False", "PodsStarting"
            message = f"{ready} of {replicas} worker pods ready"
        else:
            truth, reason, message = "True", "Available", f"{ready} worker pods ready"
        previous = next(
            (c for c in pool.last_status.get("conditions", []) if c["type"] == "Ready"), None
        )
        if previous is None or previous["status"] != truth:
            since = rfc3339_millis(self.clock.now())
        else:
            since = previous["lastTransitionTime"]
        return [{"type": "Ready", "status": truth, "reason": reason,
                 "message": message[:1024], "lastTransitionTime": since}]  # fmt: skip

    async def listen(self, stop: asyncio.Event) -> None:
        """React to enqueues (pub/sub) until stopped; reconnect after Redis outages. The
        subscription waits for messages, not for ``stop``, so it is cancelled when stopped."""
        while not stop.is_set():
            follower = asyncio.create_task(self._follow())
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({follower, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for waiter in (follower, stopped):
                waiter.cancel()
            (outcome,) = await asyncio.gather(follower, return_exceptions=True)
            if stop.is_set():
                return
            if not isinstance(outcome, BrokerUnavailableError):  # else told by outages.REDIS
                log.warning("enqueue listener stopped (%s); reconnecting", outcome)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def _follow(self) -> None:
        async for namespace, queue in self.broker.enqueued():
            try:
                await self.on_enqueue(namespace, queue)
            except Exception:
                log_failure(log, "reacting to an enqueue on %s/%s failed", namespace, queue)


def _usable(stats: QueueStats) -> autoscaler.QueueDepth:
    depth = autoscaler.QueueDepth(stats.pending, stats.due, stats.active)
    settings = stats.settings
    if settings is None:
        return depth
    limits = autoscaler.QueueLimits(settings.paused, settings.max_in_flight, settings.rate)
    return autoscaler.usable(depth, limits)


def _export(metrics: OperatorMetrics, stats: QueueStats) -> None:
    labels = (stats.namespace, stats.queue)
    metrics.pending.labels(*labels).set(stats.pending + stats.due)
    metrics.scheduled.labels(*labels).set(stats.scheduled)
    metrics.active.labels(*labels).set(stats.active)
    metrics.dead.labels(*labels).set(stats.dead)
    metrics.processed.labels(*labels).set(stats.processed)
    metrics.failed.labels(*labels).set(stats.failed)
    if stats.oldest_pending is not None or stats.pending + stats.due == 0:
        metrics.oldest_pending.labels(*labels).set(stats.oldest_pending or 0.0)


def _api_message(exc: BaseException) -> str:
    """The API server's own message (it names the field), else the error as text."""
    body = getattr(exc, "body", None)
    if isinstance(body, bytes | str):
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        if isinstance(message, str) and message:
            return message
    return reason_text(exc)
