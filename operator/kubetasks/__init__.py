"""kubetasks: a Kubernetes-native distributed task queue.

Only the names below carry public guarantees; everything else is internal.
"""

from kubetasks.client import Client
from kubetasks.errors import PermanentTaskError, RetryTask
from kubetasks.worker.context import TaskContext
from kubetasks.worker.registry import task

__version__ = "0.1.0"

__all__ = ["Client", "PermanentTaskError", "RetryTask", "TaskContext", "__version__", "task"]
