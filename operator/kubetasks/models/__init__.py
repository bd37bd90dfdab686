"""Pydantic models of the kubetasks resources: the single source of the CRDs in ``crds/``."""

from kubetasks.models.base import Condition, Model
from kubetasks.models.periodictask import PeriodicTask, PeriodicTaskSpec, PeriodicTaskStatus
from kubetasks.models.queue import Queue, QueueSpec, QueueStatus, RateLimit
from kubetasks.models.task import RetryBackoff, Task, TaskSpec, TaskStatus
from kubetasks.models.taskset import TaskSet, TaskSetSpec, TaskSetStatus
from kubetasks.models.workerpool import PoolQueue, WorkerPool, WorkerPoolSpec, WorkerPoolStatus

__all__ = [
    "Condition",
    "Model",
    "PeriodicTask",
    "PeriodicTaskSpec",
    "PeriodicTaskStatus",
    "PoolQueue",
    "Queue",
    "QueueSpec",
    "QueueStatus",
    "RateLimit",
    "RetryBackoff",
    "Task",
    "TaskSet",
    "TaskSetSpec",
    "TaskSetStatus",
    "TaskSpec",
    "TaskStatus",
    "WorkerPool",
    "WorkerPoolSpec",
    "WorkerPoolStatus",
]
