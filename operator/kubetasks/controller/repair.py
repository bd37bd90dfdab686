"""Make Redis agree with the Task resources, at start-up and on a resync period.

The resources are the source of truth and Redis is a derived index. Each tick lists the
Tasks and (1) admits those the operator never handled, (2) re-enqueues every unfinished
Task that Redis has no record of (after a Redis restart without persistence, a FLUSHALL,
or a failed enqueue), keeping its attempt count, (3) copies the outcome of Tasks that ended
in Redis onto resources that still show them unfinished (the worker's own status write was
lost: API server down, RBAC missing), and (4) finishes deletions whose clean-up failed.
While Redis is unreachable the tick runs every few seconds instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any, cast

from kubetasks.controller import tasks
from kubetasks.controller.admission import build_message
from kubetasks.controller.state import OperatorState
from kubetasks.k8s.api import GROUP, TASKS, VERSION
from kubetasks.transitions import (
    PENDING,
    QUEUED,
    TERMINAL,
    WAITING,
    finished_patch,
    operator_patch,
)

log = logging.getLogger("kubetasks.operator")

#: Seconds between repair ticks while Redis is unreachable.
FAST_RETRY = 2.0


class Repairer:
    name = "repair"

    def __init__(self, state: OperatorState) -> None:
        self.state = state
        self.restored = 0
        self.wake: asyncio.Event | None = state.repair_soon

    def interval(self) -> float:
        return FAST_RETRY if not self.state.redis_ok else self.state.settings.resync_seconds

    async def list_tasks(self) -> list[dict[str, Any]]:
        api = self.state.api
        namespaces = self.state.settings.namespaces
        if not namespaces:
            listing = await api.call(api.custom.list_cluster_custom_object, GROUP, VERSION, TASKS)
            return list(cast(dict[str, Any], listing)["items"])
        items: list[dict[str, Any]] = []
        for namespace in namespaces:
            listing = await api.call(
                api.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, TASKS
            )
            items += cast(dict[str, Any], listing)["items"]
        return items

    async def tick(self) -> None:
        try:
            await self.state.broker.ping()
        except ConnectionError:
            self.state.redis_ok = False
            return
        self.state.redis_ok = True
        items = await self.list_tasks()
        known = {
            (t["metadata"]["namespace"], t["metadata"]["name"]): (
                (t.get("status") or {}).get("phase"),
                (t.get("status") or {}).get("result"),
            )
            for t in items
        }

        def lookup(namespace: str, name: str) -> tuple[str | None, Any]:
            return known.get((namespace, name), (None, None))

        by_queue: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for body in items:
            meta = body["metadata"]
            phase = (body.get("status") or {}).get("phase")
            spec = body.get("spec") or {}
            if meta.get("deletionTimestamp"):
                await tasks.finalize(self.state, body)
            elif phase in TERMINAL or spec.get("cancel"):
                continue
            elif phase is None or phase == WAITING or (phase == PENDING and spec.get("dependsOn")):
                await tasks.admit(self.state, body, lookup)
            else:
                by_queue[spec.get("queue", "default")].append(body)
        for queue, bodies in by_queue.items():
            await self._restore(queue, bodies)

    async def _restore(self, queue: str, bodies: list[dict[str, Any]]) -> None:
        """Re-enqueue the Tasks of one queue that Redis does not know."""
        broker = self.state.broker
        by_uid = {b["metadata"]["uid"]: b for b in bodies}
        missing = await broker.missing(queue, list(by_uid))
        await self._settle(queue, [b for uid, b in by_uid.items() if uid not in missing])
        if not missing:
            return
        now = self.state.clock.now()
        messages, spent = [], {}
        for uid in missing:
            body = by_uid[uid]
            try:
                messages.append(build_message(body, now))
            except Exception as exc:
                log.warning("cannot restore task %s: %s", body["metadata"]["name"], exc)
                continue
            spent[uid] = int((body.get("status") or {}).get("attempts") or 0)
        await broker.enqueue(messages, spent=spent)
        self.restored += len(messages)
        log.warning("restored %d tasks of queue %s that Redis had lost", len(messages), queue)
        for message in messages:
            body = by_uid[message.id]
            if (body.get("status") or {}).get("phase") == PENDING:
                meta = body["metadata"]
                patch = operator_patch(
                    QUEUED,
                    now,
                    "Enqueued",
                    f"on queue {queue}",
                    extra={"attempts": spent[message.id]},
                )
                await self.state.writer.write(meta["namespace"], meta["name"], patch)

    async def _settle(self, queue: str, bodies: list[dict[str, Any]]) -> None:
        """Write the outcome Redis recorded onto unfinished resources that lack it."""
        settled = 0
        for body in bodies:
            info = await self.state.broker.get_task(queue, body["metadata"]["uid"])
            if info is None or not info.done:
                continue
            at = info.finished_at or self.state.clock.now()
            patch = finished_patch(
                info.state, info.attempts, at, result=info.result, error=info.error
            )
            meta = body["metadata"]
            if await self.state.writer.write(meta["namespace"], meta["name"], patch):
                settled += 1
        if settled:
            log.warning("wrote the outcome of %d finished tasks of queue %s", settled, queue)
