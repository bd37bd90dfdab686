"""All PeriodicTask runners of this operator, and what they share.

The kopf handler (:mod:`.handlers`) calls :class:`PeriodicRunners` for every PeriodicTask
event, and the operator's feed of Tasks for every event of a child Task; it keeps one started
:class:`~.runner.PeriodicRunner` per PeriodicTask uid and hands each runner the API, the
clock, the index of children, the event poster and the cache of parsed schedules.

The index holds what the operator last saw of each child (name, phase, slot, finish time):
the unfinished ones and, for the history limits, the finished ones the runners have not yet
deleted. The feed lists every child before it sets ``ready``, and no runner decides a slot
before that: Forbid must not start a slot while a child it has not seen yet still runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from kubetasks.clock import SYSTEM_CLOCK, Clock
from kubetasks.controller.periodic.policy import Child, ParsedSchedules, child_from, owner_uid
from kubetasks.controller.periodic.runner import PeriodicRunner, RunnerApi
from kubetasks.k8s.events import PostEvent
from kubetasks.vocabulary import PARENT_LABEL

log = logging.getLogger("kubetasks.periodic")


class PeriodicRunners:
    """All runners of this operator, by PeriodicTask uid."""

    def __init__(
        self,
        api: RunnerApi,
        clock: Clock = SYSTEM_CLOCK,
        ready: asyncio.Event | None = None,
        events: PostEvent | None = None,
    ) -> None:
        self.api = api
        self.events = events or _no_events
        self.clock = clock
        self.ready = ready
        """Set when the index holds every child (None: from the start)."""
        self.runners: dict[str, PeriodicRunner] = {}
        self.index: dict[tuple[str, str], dict[str, Child]] = {}
        """Child Tasks by (namespace, owner uid), then by name."""
        self.parsed = ParsedSchedules()

    def children(self, namespace: str, uid: str) -> list[Child]:
        return list(self.index.get((namespace, uid), {}).values())

    def child_seen(self, kind: str, body: Mapping[str, Any]) -> None:
        """An event of a Task (any Task: only children are kept) from the feed."""
        meta = body["metadata"]
        if PARENT_LABEL not in (meta.get("labels") or {}):
            return
        uid = owner_uid(meta)
        if uid is None:
            return
        key = (meta.get("namespace") or "", uid)
        if kind == "DELETED":
            children = self.index.get(key)
            if children is not None:
                children.pop(meta["name"], None)
                if not children:
                    del self.index[key]
        else:
            child = child_from(meta, body.get("status") or {})
            self.index.setdefault(key, {})[meta["name"]] = child
        self.poke(uid)

    def observe(self, body: Mapping[str, Any]) -> None:
        """A PeriodicTask was seen: start its runner, or wake it with the new body."""
        uid = body["metadata"]["uid"]
        runner = self.runners.get(uid)
        if runner is None:
            runner = PeriodicRunner(
                body,
                api=self.api,
                clock=self.clock,
                children=self.children,
                events=self.events,
                schedules=self.parsed,
                ready=self.ready,
            )
            self.runners[uid] = runner
            runner.start()
        else:
            runner.update(body)

    def poke(self, uid: str) -> None:
        """A child of ``uid`` changed: its runner syncs shortly."""
        runner = self.runners.get(uid)
        if runner is not None:
            runner.child_changed()

    async def forget(self, uid: str) -> None:
        runner = self.runners.pop(uid, None)
        if runner is not None:
            await runner.stop()

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.runners.values()), return_exceptions=True)
        self.runners.clear()


def _no_events(body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    return None
