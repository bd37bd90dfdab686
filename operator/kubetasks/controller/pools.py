"""The WorkerPool controller: one Deployment per pool, scaled on its queues' depth.

Events keep the autoscaler's view of each pool current and apply the Deployment when the
pool's spec changes; the autoscaler loop (``autoscaling.py``) does the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import kopf

from kubetasks.vocabulary import GROUP, VERSION, WORKER_POOLS

if TYPE_CHECKING:
    from kubetasks.controller.memo import OperatorMemo


@kopf.on.event(GROUP, VERSION, WORKER_POOLS)
async def pool_event(event: kopf.RawEvent, body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
        # The Deployment and the credential Secret go with it (owner references).
        await memo.autoscaler.remove(key)
        return
    await memo.autoscaler.upsert(dict(body))
