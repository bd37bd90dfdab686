"""The WorkerPool resource: a worker Deployment that follows the depth of its queues.

The operator owns one Deployment per pool and sets its replicas from the tasks waiting, due
and running on the pool's queues, between ``minReplicas`` (0 allowed) and ``maxReplicas``.
Pod template overrides are passed through to the Deployment as Kubernetes defines them, so
they are kept as given here and checked by the API server when the Deployment is applied.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field
from pydantic.config import JsonDict

from kubetasks.models.base import (
    ANY_JSON,
    CONDITIONS,
    DNS_SUBDOMAIN,
    MAX_NAME,
    MAX_QUEUE,
    QUEUE_NAME,
    Annotations,
    Condition,
    Labels,
    Model,
    Timestamp,
    cel,
)

#: A list or object of Kubernetes' own shape, passed through to the Deployment.
_K8S_LIST: JsonDict = {"items": {"type": "object", **ANY_JSON}}
_K8S_OBJECT: JsonDict = {"type": "object", **ANY_JSON}


class PoolQueue(Model):
    """A queue the pool's workers take tasks from."""

    name: str = Field(max_length=MAX_QUEUE, pattern=QUEUE_NAME)
    """The queue's name, as Tasks give it in ``spec.queue``."""
    weight: int = Field(default=1, ge=1, le=100)
    """Share of the workers' attention: a queue of weight 3 is asked three times as often as
    one of weight 1. With ``strictPriority``, queues are instead served in the order listed.
    Default 1."""


class PodTemplate(Model):
    """Overrides for the worker pods."""

    labels: Labels | None = Field(default=None, max_length=64)
    """Extra labels of the worker pods."""
    annotations: Annotations | None = Field(default=None, max_length=64)
    """Extra annotations of the worker pods."""
    service_account_name: str | None = Field(
        default=None, max_length=MAX_NAME, pattern=DNS_SUBDOMAIN
    )
    """Service account of the worker pods. Default: the one the chart installs for workers."""
    env: list[dict[str, Any]] | None = Field(
        default=None, max_length=128, json_schema_extra=_K8S_LIST
    )
    """Extra environment variables of the worker container (Kubernetes EnvVar objects)."""
    resources: dict[str, Any] | None = Field(default=None, json_schema_extra=_K8S_OBJECT)
    """Resource requests and limits of the worker container (Kubernetes
    ResourceRequirements)."""
    node_selector: Labels | None = Field(default=None, max_length=64)
    """Node labels the worker pods must land on."""
    tolerations: list[dict[str, Any]] | None = Field(
        default=None, max_length=64, json_schema_extra=_K8S_LIST
    )
    """Taints the worker pods tolerate (Kubernetes Toleration objects)."""
    affinity: dict[str, Any] | None = Field(default=None, json_schema_extra=_K8S_OBJECT)
    """Scheduling constraints of the worker pods (Kubernetes Affinity)."""
    image_pull_secrets: list[dict[str, Any]] | None = Field(
        default=None, max_length=16, json_schema_extra=_K8S_LIST
    )
    """Secrets to pull the worker image with (``[{name: ...}]``)."""
    priority_class_name: str | None = Field(default=None, max_length=MAX_NAME)
    """Priority class of the worker pods."""


class WorkerPoolSpec(Model):
    """Which queues to serve, with what image and concurrency, scaled between which bounds."""

    rules: ClassVar = [
        cel("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas"),
        cel(
            "self.queues.all(q, self.queues.exists_one(p, p.name == q.name))",
            "each queue may be listed only once",
            fieldPath=".queues",
        ),
    ]

    queues: list[PoolQueue] = Field(min_length=1, max_length=16)
    """The queues served, with weights (at least one)."""
    strict_priority: bool = False
    """Serve the queues strictly in the order listed: a later queue is only asked when every
    earlier one is empty. Default false (weighted)."""
    image: str | None = Field(default=None, max_length=512)
    """Worker image (with your handlers installed). Default: the chart's worker image."""
    imports: list[str] | None = Field(
        default=None,
        max_length=32,
        json_schema_extra={
            "items": {
                "type": "string",
                "maxLength": 256,
                "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
            }
        },
    )
    """Python modules each worker imports at start, registering their handlers
    (``kubetasks worker --import``)."""
    allow_http: bool = False
    """Register the built-in ``kubetasks.http`` handler in the workers (``kubetasks worker
    --allow-http``). It reaches public addresses only: loopback, link-local, private and the
    other non-public ranges are refused, after DNS resolution. Anyone who may create Tasks on
    the pool's queues can then make requests from the worker pods. Default false: a Task
    naming ``kubetasks.http`` fails with an unknown-handler error."""
    concurrency: int = Field(default=10, ge=1, le=1000)
    """Tasks one worker pod runs at the same time. Default 10."""
    min_replicas: int = Field(default=0, ge=0, le=1000)
    """Fewest worker pods, even with empty queues. 0 lets the pool scale to zero; it wakes up
    as soon as a task is enqueued on one of its queues. Default 0."""
    max_replicas: int = Field(default=10, ge=1, le=1000)
    """Most worker pods. Default 10."""
    target_tasks_per_replica: int | None = Field(default=None, ge=1, le=100000)
    """Tasks (waiting, due and running) per worker pod that the autoscaler aims at:
    replicas = ceil(tasks / target). Default: concurrency."""
    scale_up_stabilization_seconds: int = Field(default=0, ge=0, le=3600)
    """Scale up only to the lowest replica count wanted over this many past seconds.
    Default 0 (at once)."""
    scale_down_stabilization_seconds: int = Field(default=60, ge=0, le=3600)
    """Scale down only to the highest replica count wanted over this many past seconds, so a
    short lull does not remove pods. Default 60."""
    termination_grace_period_seconds: int = Field(default=30, ge=1, le=86400)
    """Time a worker pod has to finish its running tasks when it is removed; tasks still
    running then go back to the queue without spending an attempt. Default 30."""
    pod_template: PodTemplate | None = None
    """Overrides for the worker pods."""


class WorkerPoolStatus(Model):
    """The pool's load and size, written by the operator's autoscaler."""

    queue_depth: int | None = Field(default=None, ge=0)
    """Tasks waiting or due on the pool's queues."""
    in_flight: int | None = Field(default=None, ge=0)
    """Tasks running on the pool's queues."""
    desired_replicas: int | None = Field(default=None, ge=0)
    """Replicas the autoscaler last asked for."""
    replicas: int | None = Field(default=None, ge=0)
    """Worker pods that exist (the Deployment's replicas)."""
    ready_replicas: int | None = Field(default=None, ge=0)
    """Worker pods that are ready."""
    last_scale_time: Timestamp | None = None
    """When the autoscaler last changed the replicas."""
    last_scale_reason: str | None = Field(default=None, max_length=1024)
    """Why it did."""
    conditions: list[Condition] | None = Field(
        default=None, max_length=16, json_schema_extra=CONDITIONS
    )
    """Ready (the Deployment is applied and its pods are available) and others the operator
    reports, such as a spec it cannot use."""
    observed_generation: int | None = None
    """The spec generation the operator last applied."""


class WorkerPool(Model):
    """Worker pods for some queues, scaled on their depth, down to zero."""

    spec: WorkerPoolSpec
    status: WorkerPoolStatus | None = None
