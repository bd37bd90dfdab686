"""What the operator's handlers share: Redis, the API, the status writer, the loops."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubetasks import settings
from kubetasks.clock import SYSTEM_CLOCK, Clock
from kubetasks.k8s.api import KubeApi
from kubetasks.k8s.status import TaskStatusWriter
from kubetasks.k8s.tasks import TaskApi
from kubetasks.queue import Broker


@dataclass(frozen=True)
class OperatorSettings:
    resync_seconds: float = field(default_factory=settings.RESYNC_SECONDS.get)
    """How often Redis is checked against the Task resources (and repaired)."""
    history_sweep_seconds: float = field(default_factory=settings.HISTORY_SWEEP_SECONDS.get)
    """How often the reaper pages through the finished Tasks."""
    events: str = field(default_factory=settings.EVENTS.get)
    """Which transitions post Kubernetes Events: all, failures, or none."""
    namespaces: tuple[str, ...] = ()
    """Namespaces watched; empty means all."""
    metrics_port: int = 0
    """Port of the Prometheus /metrics endpoint (0: off)."""
    status_grace_seconds: float = field(default_factory=settings.STATUS_GRACE_SECONDS.get)
    """How long a queued Task may go without its finalizer and Queued status: a worker that
    takes it sooner makes both writes unnecessary (see ``controller/deferred.py``)."""
    queued_writes_per_second: float = field(default_factory=settings.QUEUED_WRITES_PER_SECOND.get)
    """Budget for those deferred writes (ten seconds' worth may be saved up): in a larger
    burst, Tasks past it show no phase until a worker takes them."""
    events_per_second: float = field(default_factory=settings.EVENTS_PER_SECOND.get)
    """Budget of Kubernetes Events the operator posts for Task transitions (bursts of five
    times as many are allowed); transitions beyond it are counted, not posted."""
    default_ttl_seconds_after_finished: int | None = field(
        default_factory=settings.DEFAULT_TTL_SECONDS_AFTER_FINISHED.get
    )
    """Seconds after which a finished Task is deleted when neither it nor its Queue sets
    ``ttlSecondsAfterFinished``; None keeps it (chart value
    ``operator.defaultTtlSecondsAfterFinished``)."""
    pool_redis_users: bool = field(default_factory=settings.POOL_REDIS_USERS.get)
    """Each WorkerPool gets its own Redis user and credential Secret (``poolusers.py``)."""


@dataclass
class OperatorState:
    broker: Broker
    api: KubeApi
    writer: TaskStatusWriter
    tasks: TaskApi
    settings: OperatorSettings
    clock: Clock = field(default=SYSTEM_CLOCK)
    redis_ok: bool = True
    """False after an enqueue failed; the repair loop then runs every few seconds."""
    repair_soon: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to make the repair loop run now (an enqueue just failed)."""
    taskset_outcome: Callable[[str, str], Awaitable[tuple[str | None, Any]]] | None = None
    """(phase, results) of a TaskSet by namespace and name (``controller/tasksets.py``), for
    Tasks that depend on one (a chord)."""
    redis_lost_at: float | None = None
    """When Redis was last found to have lost its data (``epoch.py``); None: never."""
