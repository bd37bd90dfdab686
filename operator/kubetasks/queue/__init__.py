"""The Redis work index: keys, Lua transitions and the broker that runs them."""

from kubetasks.outcome import BackoffPolicy
from kubetasks.queue.broker import Broker
from kubetasks.queue.message import (
    Dequeued,
    EnqueueResult,
    Leased,
    QueueSettings,
    QueueStats,
    SetState,
    TaskInfo,
    TaskMessage,
)

__all__ = [
    "BackoffPolicy",
    "Broker",
    "Dequeued",
    "EnqueueResult",
    "Leased",
    "QueueSettings",
    "QueueStats",
    "SetState",
    "TaskInfo",
    "TaskMessage",
]
