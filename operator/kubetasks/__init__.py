"""kubetasks: a Kubernetes-native distributed task queue.

Only the names below carry public guarantees; everything else is internal. They are the
names the README tells users to write, no more and no fewer (tests/surface compares them).
"""

from kubetasks.client import AsyncClient, Client, TaskRequest
from kubetasks.errors import DuplicateTaskError, PermanentTaskError, RetryTask
from kubetasks.outcome import BackoffPolicy
from kubetasks.worker.context import TaskContext
from kubetasks.worker.registry import task

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "BackoffPolicy",
    "Client",
    "DuplicateTaskError",
    "PermanentTaskError",
    "RetryTask",
    "TaskContext",
    "TaskRequest",
    "__version__",
    "task",
]
