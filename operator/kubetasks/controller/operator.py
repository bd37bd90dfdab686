"""The operator process: kopf settings, shared state, background loops, worker pods.

``kubetasks operator`` imports this module (which registers the handlers) and runs kopf.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, cast

import kopf

from kubetasks import outages
from kubetasks.background import isolated, run_every
from kubetasks.controller import pools, queues, tasks, tasksets  # noqa: F401 - register their handlers
from kubetasks.controller.autoscaling import PoolAutoscaler
from kubetasks.controller.deferred import DeferredWrites
from kubetasks.controller.dependents import Dependents
from kubetasks.controller.epoch import RedisEpoch
from kubetasks.controller.events import PhaseTracker
from kubetasks.controller.expiry import DeadlineExpiry
from kubetasks.controller.feed import TaskFeed
from kubetasks.controller.memo import OperatorMemo
from kubetasks.controller.periodic import PeriodicRunners  # registers the PeriodicTask handlers
from kubetasks.controller.poolusers import PoolUsers
from kubetasks.controller.reaper import Reaper
from kubetasks.controller.repair import Repairer
from kubetasks.controller.state import OperatorSettings, OperatorState
from kubetasks.controller.waiting import WaitingTasks
from kubetasks.errors import BrokerUnavailableError
from kubetasks.k8s.api import KubeApi
from kubetasks.k8s.deployments import DeploymentWriter
from kubetasks.k8s.events import EventPoster
from kubetasks.k8s.labels import ServiceAccountLabels
from kubetasks.k8s.periodic import PeriodicApi
from kubetasks.k8s.poolcredentials import PoolLookup, SecretCreator
from kubetasks.k8s.queues import QueueApi
from kubetasks.k8s.status import PoolStatusWriter, TaskStatusWriter
from kubetasks.k8s.tasks import TaskApi
from kubetasks.k8s.tasksets import TaskSetApi
from kubetasks.metrics import OperatorMetrics
from kubetasks.metrics import serve as serve_metrics
from kubetasks.outcome import ended_outcome
from kubetasks.queue import Broker, Leased
from kubetasks.settings import REDIS_PASSWORD, operator_identity, redis_url, worker_id_for_pod
from kubetasks.status_patches import finished_patch
from kubetasks.vocabulary import KOPF_FINALIZER, POOL_LABEL, TASK_FINALIZER

log = logging.getLogger("kubetasks.operator")

_settings = OperatorSettings()

#: Seconds the operator waits at start for Redis to answer before it takes any event. Well
#: inside the liveness probe's first failure (values.yaml: 10 s delay, 3 failures 20 s apart).
REDIS_START_WAIT = 20.0
#: Seconds between two tries while waiting.
REDIS_START_POLL = 0.2


def configure(settings: OperatorSettings) -> None:
    global _settings
    _settings = settings


class NoDiffBase(kopf.DiffBaseStorage):
    """Keeps no "last handled" state. kopf builds it on every event (a deep copy of the
    object) to diff for on.create/on.update handlers; all our handlers are level-triggered
    ``on.event`` ones, so nothing reads it, and it cost a tenth of the operator's CPU."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


async def await_redis(broker: Broker, limit: float = REDIS_START_WAIT) -> bool:
    """Wait up to ``limit`` seconds for Redis to answer; whether it did.

    At install Redis starts beside the operator and often answers a second or two after it.
    Tasks applied at once would otherwise meet an outage: they would wait Pending and be
    queued by the recovery when Redis answered. Waiting here, before any handler or loop
    runs, queues them the normal way. Past the limit the operator starts anyway and works
    through the outage as through any other (the outage log says so)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        try:
            await broker.ping()
            return True
        except BrokerUnavailableError:
            if loop.time() >= deadline:
                log.warning("Redis did not answer within %.0f s of start: starting anyway", limit)
                return False
            await asyncio.sleep(REDIS_START_POLL)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: OperatorMemo, **_: Any) -> None:
    # React to each event at once: the default 0.1 s batching window would be most of the
    # create-to-running latency.
    settings.batching.batch_window = 0.01
    settings.posting.level = logging.WARNING  # kopf's own log lines are not Events
    settings.watching.server_timeout = 300
    # Retry a failed API request every second for a minute (kopf's default backs off to 21 s,
    # so work would resume up to that long after an API server outage ends); kopf's line
    # per attempt is folded into one outage report (outages.KopfOutageFilter).
    settings.networking.error_backoffs = [0.5] + [1.0] * 60
    settings.persistence.finalizer = KOPF_FINALIZER
    if not kopf.get_default_registry()._changing.get_all_handlers():
        settings.persistence.diffbase_storage = NoDiffBase()
    api = KubeApi(outage=outages.API)
    state = OperatorState(
        broker=Broker.from_url(redis_url()),
        api=api,
        writer=TaskStatusWriter(api),
        tasks=TaskApi(api),
        settings=_settings,
    )
    memo.state = state
    await await_redis(state.broker)
    # Events are posted by the operator itself: kopf's poster works only inside kopf's own
    # tasks, and the Task feed and the background loops are not among them.
    events = EventPoster(api)
    memo.events = events
    memo.tracker = PhaseTracker(_settings.events, _settings.events_per_second, post=events)
    memo.deferred = DeferredWrites(
        state,
        TASK_FINALIZER,
        _settings.status_grace_seconds,
        _settings.queued_writes_per_second,
    )
    memo.dependents = Dependents()
    memo.waiting = WaitingTasks(
        state.clock, state.tasks.get, functools.partial(tasks.readmit, memo)
    )
    memo.queues = queues.QueueController(
        state.broker, QueueApi(api), state.clock, namespaces=_settings.namespaces, events=events
    )
    memo.reaper = Reaper(state, default_ttl=memo.queues.ttl_for)
    memo.periodic = PeriodicRunners(
        PeriodicApi(api), state.clock, ready=asyncio.Event(), events=events
    )
    memo.feed = TaskFeed(
        state.tasks,
        _settings.namespaces,
        functools.partial(tasks.task_event, memo),
        observers=[memo.periodic.child_seen],
        ready=memo.periodic.ready,
    )
    memo.tasksets = tasksets.TaskSetController(
        state, TaskSetApi(api), on_finished=functools.partial(dependency_ended, memo)
    )
    state.taskset_outcome = memo.tasksets.outcome
    metrics = OperatorMetrics()
    memo.repairer = Repairer(state, memo.deferred, metrics, feed=memo.feed)
    try:
        serve_metrics(metrics.registry, _settings.metrics_port)
    except OSError as exc:
        # Metrics are for watching, not for working: a taken port must not stop the operator.
        log.error(
            "cannot serve metrics on port %d (--metrics-port): %s", _settings.metrics_port, exc
        )
    users = None
    if _settings.pool_redis_users:
        users = PoolUsers(
            state.broker, SecretCreator(api), PoolLookup(api), state.clock,
            key=REDIS_PASSWORD.get(), namespaces=_settings.namespaces,
        )  # fmt: skip
    memo.autoscaler = PoolAutoscaler(
        state.broker, state.clock, DeploymentWriter(api), PoolStatusWriter(api),
        accounts=ServiceAccountLabels(api), users=users, metrics=metrics, events=events,
    )  # fmt: skip
    expiry = DeadlineExpiry(
        state.broker, functools.partial(report_ended, state), namespaces=_settings.namespaces
    )
    # After a loss of Redis's data, the Queue settings and the pool users are written again
    # at once rather than at their next tick.
    memo.queues.wake = asyncio.Event()
    rebuild = [memo.queues.wake]
    if users is not None:
        users.wake = asyncio.Event()
        rebuild.append(users.wake)
    epoch = RedisEpoch(state, rebuild)
    memo.stop = asyncio.Event()
    memo.loops = [
        asyncio.create_task(memo.feed.run(memo.stop)),
        asyncio.create_task(run_every(epoch, memo.stop)),
        asyncio.create_task(run_every(expiry, memo.stop)),
        asyncio.create_task(run_every(memo.deferred, memo.stop)),
        asyncio.create_task(run_every(memo.reaper, memo.stop)),
        asyncio.create_task(run_every(memo.waiting, memo.stop)),
        asyncio.create_task(run_every(memo.tasksets, memo.stop)),
        asyncio.create_task(run_every(memo.queues, memo.stop)),
        asyncio.create_task(run_every(memo.repairer, memo.stop)),
        asyncio.create_task(run_every(memo.autoscaler, memo.stop)),
        asyncio.create_task(memo.autoscaler.listen(memo.stop)),
    ]
    if users is not None:
        memo.loops.append(asyncio.create_task(run_every(users, memo.stop)))


@kopf.on.cleanup()
async def cleanup(memo: OperatorMemo, **_: Any) -> None:
    memo.stop.set()
    await asyncio.gather(*memo.loops, return_exceptions=True)
    await memo.periodic.stop()
    await memo.events.flush()
    await memo.state.broker.close()
    await memo.state.api.close()


@kopf.on.event("", "v1", "pods", labels={POOL_LABEL: kopf.PRESENT})
async def worker_pod_gone(
    event: kopf.RawEvent,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    memo: OperatorMemo,
    **_: Any,
) -> None:
    """A worker pod is gone: return what it still held at once, without waiting for leases
    to expire. (A pod that shut down cleanly handed its tasks back itself; this is for pods
    that were killed or whose node vanished.)

    Only for pods of the Deployments the operator made, and only on the queues of the pod's
    namespace: the worker id is namespace and pod, so a pod elsewhere that shares a worker's
    name, or a pod that merely carries the label, takes back nothing of anyone's."""
    if event.get("type") != "DELETED" or namespace is None:
        return
    if not _runs_a_pool(dict(body), namespace, memo.autoscaler):
        log.info("pod %s/%s carries the worker label but no pool of ours runs it", namespace,
                 name)  # fmt: skip
        return
    state = memo.state
    broker = state.broker.in_namespace(namespace)
    worker_id = worker_id_for_pod(namespace, name)
    for queue in await broker.queues():
        with isolated(log, "reclaim for pod %s on queue %s/%s", name, namespace, queue):
            requeued, dead = await broker.reclaim(queue, worker_id=worker_id)
            if requeued or dead:
                log.warning(
                    "pod %s/%s vanished holding %d tasks of queue %s",
                    namespace,
                    name,
                    requeued + len(dead),
                    queue,
                )
            for leased in dead:
                with isolated(log, "report of task %s", leased.message.id):
                    await report_ended(state, leased)


def _runs_a_pool(pod: dict[str, Any], namespace: str, autoscaler: PoolAutoscaler) -> bool:
    """The pod belongs to a known pool's Deployment: its pool label names a pool of its
    namespace and its controller is a ReplicaSet of that pool's Deployment."""
    meta = pod.get("metadata") or {}
    pool = (meta.get("labels") or {}).get(POOL_LABEL)
    if (namespace, pool) not in autoscaler.pools:
        return False
    return any(
        ref.get("kind") == "ReplicaSet"
        and ref.get("controller")
        and str(ref.get("name", "")).startswith(f"{pool}-")
        for ref in meta.get("ownerReferences") or []
    )


async def dependency_ended(
    memo: OperatorMemo, namespace: str, name: str, found: tuple[str | None, Any]
) -> None:
    """A TaskSet ended: the Tasks waiting on it (``dependsOn: [taskset/<name>]``) are
    admitted again (queued with its results, or failed naming it)."""
    lookup = tasks.api_lookup(memo.state, memo.dependents)
    for dependent in memo.dependents.dependency_ended(namespace, name, found):
        with isolated(log, "dependent %s of %s", dependent["metadata"]["name"], name):
            await tasks.admit(
                memo.state, dependent, lookup, graph=memo.dependents, waiting=memo.waiting
            )


async def report_ended(state: OperatorState, leased: Leased) -> None:
    resource = leased.message.resource
    if not resource:
        return
    namespace, _, task = resource.partition("/")
    outcome = ended_outcome(leased.ended or "failed")
    patch = finished_patch(outcome.kind, leased.attempt, state.clock.now(), error=outcome.error)
    await state.writer.write(namespace, task, patch, uid=leased.message.id)


def run(
    *,
    namespaces: list[str],
    standalone: bool,
    peering: str | None,
    liveness: str | None,
    priority: int = 0,
    metrics_port: int = 0,
) -> None:
    configure(OperatorSettings(namespaces=tuple(namespaces), metrics_port=metrics_port))
    # One line per handled event would drown everything else at INFO.
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, logging.root.level))
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=standalone,
            peering_name=peering,
            priority=priority,
            liveness_endpoint=liveness,
            # kopf's Identity is a NewType of str that kopf does not export.
            identity=cast(Any, operator_identity()),
            memo=OperatorMemo(),
        )
    )
