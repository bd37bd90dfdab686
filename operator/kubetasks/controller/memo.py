"""What kopf hands every handler as ``memo``: the operator's components, typed.

kopf copies the memo given to ``kopf.operator(memo=...)`` (shallowly) for each object it
handles, and passes the copy as the ``memo`` keyword; any object will do. The startup handler
fills this one in before kopf starts watching, so every handler finds every component, and
the copies share them. (Task events come from the operator's own feed, which hands the
memo itself.) A field read before startup raises ``AttributeError``, as it would
on ``kopf.Memo``.

The components are imported for type checking only: the handler modules (``tasks``,
``queues``, ``pools``, ``periodic``) import this one, and several components live in them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubetasks.controller.autoscaling import PoolAutoscaler
    from kubetasks.controller.deferred import DeferredWrites
    from kubetasks.controller.dependents import Dependents
    from kubetasks.controller.events import PhaseTracker
    from kubetasks.controller.feed import TaskFeed
    from kubetasks.controller.periodic.registry import PeriodicRunners
    from kubetasks.controller.queues import QueueController
    from kubetasks.controller.reaper import Reaper
    from kubetasks.controller.repair import Repairer
    from kubetasks.controller.state import OperatorState
    from kubetasks.controller.tasksets import TaskSetController
    from kubetasks.controller.waiting import WaitingTasks
    from kubetasks.k8s.events import EventPoster


class OperatorMemo:
    """The operator's components, set once by the startup handler."""

    state: OperatorState
    """Redis, the API, the Task status writer, the settings and the clock."""
    feed: TaskFeed
    """The unfinished Tasks listed, then every Task event: into ``tasks.task_event``."""
    events: EventPoster
    """Posts Kubernetes Events in the background (for every component)."""
    tracker: PhaseTracker
    """Posts an Event per Task transition, within its budget."""
    deferred: DeferredWrites
    """The finalizer and Queued status writes a queued Task may do without."""
    dependents: Dependents
    """Tasks waiting on other Tasks, and the outcomes they wait for."""
    waiting: WaitingTasks
    """Waiting Tasks, looked at again when their deadline or dependency timeout passes."""
    queues: QueueController
    """Queue resources: their spec into Redis, their load back into status."""
    reaper: Reaper
    """Deletes finished Tasks when their TTL runs out."""
    repairer: Repairer
    """Puts Redis back in line with the Task resources."""
    tasksets: TaskSetController
    """TaskSets: their items into Redis, their status back in aggregate."""
    periodic: PeriodicRunners
    """One runner per PeriodicTask."""
    autoscaler: PoolAutoscaler
    """WorkerPools: their Deployments and replicas."""
    stop: asyncio.Event
    """Set at cleanup: the background loops return."""
    loops: list[asyncio.Task[None]]
    """The background loops, awaited at cleanup."""
