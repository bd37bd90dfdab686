"""All PeriodicTask runners of this operator, and what they share.

The kopf handlers (:mod:`.handlers`) call :class:`PeriodicRunners` for every PeriodicTask event
and every change of a child Task; it keeps one started :class:`~.runner.PeriodicRunner` per
PeriodicTask uid and hands each runner the API, the clock, the kopf index of children, the
event poster and the cache of parsed schedules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf

from kubetasks.clock import SYSTEM_CLOCK, Clock
from kubetasks.controller.periodic.policy import Child, ParsedSchedules
from kubetasks.controller.periodic.runner import PeriodicRunner, RunnerApi

log = logging.getLogger("kubetasks.periodic")


def post_kopf_event(body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    """Post an Event through kopf's poster (queued, written by kopf in the background)."""
    kopf.event(cast(kopf.Body, body), type=kind, reason=reason, message=message)


class PeriodicRunners:
    """All runners of this operator, by PeriodicTask uid."""

    def __init__(self, api: RunnerApi, clock: Clock = SYSTEM_CLOCK) -> None:
        self.api = api
        self.clock = clock
        self.runners: dict[str, PeriodicRunner] = {}
        self.index: kopf.Index[tuple[str, str], Child] | None = None
        """The kopf index of child Tasks by (namespace, owner uid); set by the handlers."""
        self.parsed = ParsedSchedules()

    def children(self, namespace: str, uid: str) -> list[Child]:
        if self.index is None:
            return []
        return list(self.index.get((namespace, uid), []))

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
                events=post_kopf_event,
                schedules=self.parsed,
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
