"""The PeriodicTask controller: one runner per PeriodicTask, one child Task per slot.

Exactly once per slot: the child's name is ``<periodic task>-<slot in Unix seconds>``, so
the API server's AlreadyExists makes a second create of the same slot impossible, whether
it comes from this operator after a restart or from another operator running beside it.

The parts, each readable alone:

- :mod:`.policy`: pure decisions (which children are active, which slot runs, which history
  to delete, the status and the child Task's body), from one snapshot to one plan;
- :mod:`.runner`: :class:`~.runner.PeriodicRunner`, one asyncio task per PeriodicTask that
  sleeps until its next slot or until woken, then observes, plans and writes;
- :mod:`.registry`: :class:`PeriodicRunners`, the runners of this operator and what they share;
- :mod:`.handlers`: the kopf handler of PeriodicTasks, registered on import (child Tasks
  come from the operator's feed of Tasks into the registry's index).

The runner is level-triggered: whatever woke it, it recomputes everything from the current
PeriodicTask, the index and the clock, and writes status only when it changed.
"""

from kubetasks.controller.periodic import handlers as handlers  # registers the kopf handler
from kubetasks.controller.periodic.registry import PeriodicRunners

__all__ = ["PeriodicRunners"]
