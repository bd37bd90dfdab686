"""What the operator's handlers share: Redis, the API, the status writer, the loops."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

from kubetasks.clock import SYSTEM_CLOCK, Clock
from kubetasks.k8s.api import KubeApi
from kubetasks.k8s.status import TaskStatusWriter
from kubetasks.queue import Broker


@dataclass(frozen=True)
class OperatorSettings:
    resync_seconds: float = float(os.environ.get("KUBETASKS_RESYNC_SECONDS", "60"))
    """How often Redis is checked against the Task resources (and repaired)."""
    events: str = os.environ.get("KUBETASKS_EVENTS", "all")
    """Which transitions post Kubernetes Events: all, failures, or none."""
    namespaces: tuple[str, ...] = ()
    """Namespaces watched; empty means all."""
    metrics_port: int = 0
    """Port of the Prometheus /metrics endpoint (0: off)."""


@dataclass
class OperatorState:
    broker: Broker
    api: KubeApi
    writer: TaskStatusWriter
    settings: OperatorSettings
    clock: Clock = field(default=SYSTEM_CLOCK)
    redis_ok: bool = True
    """False after an enqueue failed; the repair loop then runs every few seconds."""
    repair_soon: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to make the repair loop run now (an enqueue just failed)."""
