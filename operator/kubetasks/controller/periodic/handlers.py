"""The kopf handlers of the PeriodicTask controller, and the index of child Tasks.

Children are followed through a kopf index of Tasks labelled ``kubetasks.dev/periodic-task``
and keyed by their controlling owner's uid; every change of a child wakes its parent's
runner, and every event of a PeriodicTask hands its runner the new body. The handlers only
route: what a runner does is in :mod:`.runner` and :mod:`.policy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import kopf

from kubetasks.controller.periodic.policy import Child, child_from, owner_uid
from kubetasks.vocabulary import GROUP, PARENT_LABEL, PERIODIC_TASKS, TASKS, VERSION

if TYPE_CHECKING:
    from kubetasks.controller.memo import OperatorMemo


@kopf.index(GROUP, VERSION, TASKS, labels={PARENT_LABEL: kopf.PRESENT})
def periodic_children(
    namespace: str | None, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], Child] | None:
    raw = dict(meta)
    uid = owner_uid(raw)
    if uid is None:
        return None
    return {(namespace or "", uid): child_from(raw, status)}


@kopf.on.event(GROUP, VERSION, PERIODIC_TASKS)
async def periodic_event(
    event: kopf.RawEvent, body: kopf.Body, memo: OperatorMemo, **kwargs: Any
) -> None:
    periodic = memo.periodic
    periodic.index = kwargs["periodic_children"]
    uid = body["metadata"]["uid"]
    if event.get("type") == "DELETED" or body["metadata"].get("deletionTimestamp"):
        await periodic.forget(uid)
        return
    # Each watch event brings a freshly decoded object and the runner never mutates it, so a
    # shallow copy is enough: a deep copy would copy managedFields and all on every event.
    periodic.observe(dict(body))


@kopf.on.event(GROUP, VERSION, TASKS, labels={PARENT_LABEL: kopf.PRESENT})
async def periodic_child_event(body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    uid = owner_uid(dict(body["metadata"]))
    if uid is not None:
        memo.periodic.poke(uid)
