"""Pydantic models of the kubetasks resources: the single source of the CRDs in ``crds/``."""

from kubetasks.models.base import Condition, Model
from kubetasks.models.periodictask import PeriodicTask, PeriodicTaskSpec, PeriodicTaskStatus
from kubetasks.models.task import FINAL_PHASES, RetryBackoff, Task, TaskSpec, TaskStatus
from kubetasks.models.workerpool import PoolQueue, WorkerPool, WorkerPoolSpec, WorkerPoolStatus

__all__ = [
    "FINAL_PHASES",
    "Condition",
    "Model",
    "PeriodicTask",
    "PeriodicTaskSpec",
    "PeriodicTaskStatus",
    "PoolQueue",
    "RetryBackoff",
    "Task",
    "TaskSpec",
    "TaskStatus",
    "WorkerPool",
    "WorkerPoolSpec",
    "WorkerPoolStatus",
]
