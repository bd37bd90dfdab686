"""The words kubetasks shares with the Kubernetes API, declared once (pure).

The API group and version, the resource plurals, the labels, annotations and finalizers the
operator puts on objects, the phases of a Task and the concurrency policies of a
PeriodicTask are part of the API users and other tools see: a word written twice would one
day be written two ways. Everything else (the models and so the CRDs, the controllers, the
worker's status writes, the tests and the benches) imports them from here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

GROUP = "kubetasks.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
"""The ``apiVersion`` of every kubetasks resource."""

TASKS, PERIODIC_TASKS, WORKER_POOLS, QUEUES = "tasks", "periodictasks", "workerpools", "queues"
"""The resource plurals (the path segments of the API)."""
TASKSETS = "tasksets"
"""The TaskSet plural."""
TASKSET_DEPENDENCY = "taskset/"
"""A ``dependsOn`` entry starting with this names a TaskSet, not a Task (a chord)."""

POOL_LABEL = "kubetasks.dev/worker-pool"
"""On every worker pod (and its Deployment's selector): the WorkerPool's name."""
PARENT_LABEL = "kubetasks.dev/periodic-task"
"""On every child Task of a PeriodicTask: the parent's name (hashed if over 63 characters,
see ``scheduling.parent_label``)."""
SCHEDULED_ANNOTATION = "kubetasks.dev/scheduled-time"
"""On every child Task: the slot it runs for, whole-second RFC 3339 in UTC."""
CREATED_ANNOTATION = "kubetasks.dev/created-at"
"""On every child Task: when the operator sent the create, RFC 3339 with milliseconds
(creationTimestamp has whole seconds only; this is what lateness is measured with)."""
RERUN_OF_LABEL = "kubetasks.dev/rerun-of"
"""On a Task made by ``kubetasks tasks rerun``: the name of the Task it re-runs."""
TASK_FINALIZER = "kubetasks.dev/cleanup"
"""On a Task the operator has put on a queue: removed once its message left Redis."""
TASKSET_FINALIZER = "kubetasks.dev/taskset-cleanup"
"""On a TaskSet whose items the operator enqueued: removed once they left Redis."""
KOPF_FINALIZER = "kubetasks.dev/kopf"
"""kopf's own finalizer on the resources it handles."""


# Every phase a Task goes through. A StrEnum: each member is the string the API stores and
# compares equal to it. (A comment, not a docstring: pydantic would put a docstring into the
# CRD schema beside the status.phase field's own description.)
class TaskPhase(StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"
    SCHEDULED = "Scheduled"
    QUEUED = "Queued"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    DEADLINE_EXCEEDED = "DeadlineExceeded"


RERUNNABLE_PHASES = (TaskPhase.FAILED, TaskPhase.CANCELLED, TaskPhase.DEADLINE_EXCEEDED)
"""The phases of a Task that ``kubetasks tasks rerun`` re-runs."""

FINAL_PHASES = (
    TaskPhase.SUCCEEDED,
    TaskPhase.FAILED,
    TaskPhase.CANCELLED,
    TaskPhase.DEADLINE_EXCEEDED,
)
"""The phases a Task never leaves (in this order in the CRD's CEL rule)."""


# The phases of a TaskSet (a comment for the same reason as TaskPhase's).
class TaskSetPhase(StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


TASKSET_FINAL_PHASES = (TaskSetPhase.SUCCEEDED, TaskSetPhase.FAILED, TaskSetPhase.CANCELLED)
"""The phases a TaskSet never leaves."""

ConcurrencyPolicy = Literal["Allow", "Forbid", "Replace"]
"""What a PeriodicTask does when a slot comes while an earlier child still runs: run both,
skip the new slot, or cancel the running child (CronJob's concurrencyPolicy)."""
