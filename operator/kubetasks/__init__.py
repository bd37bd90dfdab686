"""kubetasks: a Kubernetes-native distributed task queue.

Only the names below carry public guarantees; everything else is internal. They are the
names the README tells users to write, no more and no fewer (tests/surface compares them).
"""

from kubetasks import canvas  # a public module: chain, group, chord over resources
from kubetasks.client import AsyncClient, Client, TaskRequest
from kubetasks.errors import DuplicateTaskError, PermanentTaskError, RetryTask
from kubetasks.outcome import BackoffPolicy
from kubetasks.resources import AsyncResourceClient, ResourceClient
from kubetasks.worker.context import TaskContext
from kubetasks.worker.middleware import middleware
from kubetasks.worker.registry import task

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncResourceClient",
    "BackoffPolicy",
    "Client",
    "DuplicateTaskError",
    "PermanentTaskError",
    "ResourceClient",
    "RetryTask",
    "TaskContext",
    "TaskRequest",
    "__version__",
    "canvas",
    "middleware",
    "task",
]
