"""The kopf handler of the PeriodicTask controller.

Every event of a PeriodicTask hands its runner the new body. Child Tasks come through the
operator's feed of Tasks (``controller/feed.py``) into the registry's index of children
(:meth:`.registry.PeriodicRunners.child_seen`), not through kopf: a kopf index over Tasks
made a restart cost every Task ever stored. The handler only routes: what a runner does is
in :mod:`.runner` and :mod:`.policy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import kopf

from kubetasks.vocabulary import GROUP, PERIODIC_TASKS, VERSION

if TYPE_CHECKING:
    from kubetasks.controller.memo import OperatorMemo


@kopf.on.event(GROUP, VERSION, PERIODIC_TASKS)
async def periodic_event(
    event: kopf.RawEvent, body: kopf.Body, memo: OperatorMemo, **_: Any
) -> None:
    periodic = memo.periodic
    uid = body["metadata"]["uid"]
    if event.get("type") == "DELETED" or body["metadata"].get("deletionTimestamp"):
        await periodic.forget(uid)
        return
    # Each watch event brings a freshly decoded object and the runner never mutates it, so a
    # shallow copy is enough: a deep copy would copy managedFields and all on every event.
    periodic.observe(dict(body))
