"""The worker runtime: runs registered handlers for the tasks of its queues."""

from kubetasks.worker import builtins as _builtins  # noqa: F401 - registers the built-in handlers
from kubetasks.worker.context import TaskContext
from kubetasks.worker.loop import Worker
from kubetasks.worker.registry import task
from kubetasks.worker.sink import NullSink, StatusSink

__all__ = ["NullSink", "StatusSink", "TaskContext", "Worker", "task"]
