"""The Redis work index: keys, Lua transitions and the broker that runs them."""

from kubetasks.outcome import BackoffPolicy
from kubetasks.queue.broker import Broker
from kubetasks.queue.message import (
    EnqueueResult,
    Leased,
    QueueStats,
    TaskInfo,
    TaskMessage,
)

__all__ = [
    "BackoffPolicy",
    "Broker",
    "EnqueueResult",
    "Leased",
    "QueueStats",
    "TaskInfo",
    "TaskMessage",
]
