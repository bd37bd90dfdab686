"""One PeriodicTask's runner: sleeps until its next slot or until woken, then syncs.

Sleeping until the slot, rather than polling, is what puts a child Task on the API server
within milliseconds of its slot while hundreds of idle schedules cost nothing.

A sync is three steps. :meth:`PeriodicRunner.observe` reads the PeriodicTask, its children
in the index, the clock and the runner's memory into a :class:`~.policy.Snapshot`;
:func:`~.policy.plan_sync` decides a :class:`~.policy.SyncPlan` from it without I/O;
:meth:`PeriodicRunner.write` carries the plan out. Only the Replace cancels and the create
of the slot's child are awaited: deletions and the status go to a background housekeeper,
because a slow API server must not hold back the next slot's create.

The API, the clock, the index and the event poster are passed in (:class:`RunnerApi`,
:class:`~kubetasks.clock.Clock`, :class:`ChildIndex`,
:class:`~kubetasks.k8s.events.PostEvent`), so the runner is driven in fake time by tests;
the registry (:mod:`.registry`) wires the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from kubetasks.clock import Clock
from kubetasks.controller.periodic.policy import (
    Child,
    Memory,
    ParsedSchedules,
    Snapshot,
    SyncPlan,
    child_body,
    plan_sync,
    remembered,
)
from kubetasks.k8s.api import reason_text
from kubetasks.k8s.events import PostEvent
from kubetasks.timestamps import rfc3339

log = logging.getLogger("kubetasks.periodic")

#: Seconds before a failed sync (API unreachable, refused write) is tried again.
RETRY_SECONDS = 2.0
#: Seconds a child's change waits before its parent syncs, so that a burst of changes
#: makes one sync (and at most one status write).
CHILD_COALESCE = 0.2


class RunnerApi(Protocol):
    """The API calls a runner makes; :class:`kubetasks.k8s.periodic.PeriodicApi` is the
    real one."""

    async def create_child(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a child Task; False when a Task of that name exists (the slot already ran)."""
        ...

    async def cancel_child(self, namespace: str, name: str) -> None:
        """Set ``spec.cancel`` on a child Task (gone already: nothing to do)."""
        ...

    async def delete_child(self, namespace: str, name: str) -> None:
        """Delete a child Task (gone already: nothing to do)."""
        ...

    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the PeriodicTask's status (None values remove fields)."""
        ...


class ChildIndex(Protocol):
    def __call__(self, namespace: str, uid: str) -> list[Child]:
        """The child Tasks of the PeriodicTask ``uid`` the operator has seen."""
        ...


class PeriodicRunner:
    """Syncs one PeriodicTask at each slot and whenever it or one of its children changes."""

    def __init__(
        self,
        body: Mapping[str, Any],
        *,
        api: RunnerApi,
        clock: Clock,
        children: ChildIndex,
        events: PostEvent,
        schedules: ParsedSchedules,
        ready: asyncio.Event | None = None,
    ) -> None:
        self.body = body
        """The PeriodicTask as last seen, with the status this runner last wrote."""
        self.api = api
        self.clock = clock
        self.children = children
        self.events = events
        self.schedules = schedules
        self.ready = ready
        """Set when ``children`` lists every child; the first sync waits for it."""
        self.wake = asyncio.Event()
        self.memory = Memory()
        self.deletes_sent: set[str] = set()
        """Children whose delete was sent and that the index still lists."""
        self.pending: tuple[tuple[str, ...], dict[str, Any]] | None = None
        """Deletions and status waiting for the housekeeper (only the latest counts)."""
        self.coalescing = False
        self.task: asyncio.Task[None] | None = None
        self.housekeeper: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        meta = self.body["metadata"]
        return f"{meta['namespace']}/{meta['name']}"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop: sync now, then at each slot and whenever woken."""
        if self.task is None:
            self.task = asyncio.create_task(self.run(), name=f"periodic {self.key}")

    def update(self, body: Mapping[str, Any]) -> None:
        """The PeriodicTask changed: sync now."""
        self.body = body
        self.wake.set()

    def child_changed(self) -> None:
        """A child changed: sync shortly. The short delay folds the several events of one
        child's life (admitted, queued, running, finished) into one sync."""
        if not self.coalescing:
            self.coalescing = True
            asyncio.get_running_loop().call_later(CHILD_COALESCE, self._coalesced)

    def _coalesced(self) -> None:
        self.coalescing = False
        self.wake.set()

    async def run(self) -> None:
        if self.ready is not None:
            await self.ready.wait()
        while True:
            self.wake.clear()
            try:
                wake_at = await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "periodic task %s: sync failed, retrying: %s", self.key, reason_text(exc)
                )
                wake_at = self.clock.now() + RETRY_SECONDS
            timeout = None if wake_at is None else max(0.0, wake_at - self.clock.now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def stop(self) -> None:
        tasks = [t for t in (self.task, self.housekeeper) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one sync ---------------------------------------------------------------------------

    async def sync(self) -> float | None:
        """Observe, plan, write; return when to look again (None: when woken)."""
        snapshot = self.observe()
        return await self.write(snapshot, plan_sync(snapshot))

    def observe(self) -> Snapshot:
        """Read everything a sync decides from, and forget what the index now shows."""
        meta = self.body["metadata"]
        now = self.clock.now()
        children = tuple(self.children(meta["namespace"], meta["uid"]))
        indexed = {c.name for c in children}
        self.memory = remembered(self.memory, indexed, now)
        self.deletes_sent &= indexed
        return Snapshot(
            body=self.body,
            now=now,
            children=children,
            schedule=self.schedules.get(self.body.get("spec") or {}),
            memory=self.memory,
            deletes_sent=frozenset(self.deletes_sent),
        )

    async def write(self, snapshot: Snapshot, plan: SyncPlan) -> float | None:
        """Cancel and create as planned, post its warnings, hand the rest to the housekeeper."""
        ours = plan.run is None or await self.create(snapshot.body, plan.run, plan.replace)
        status, self.memory = (plan.status, plan.memory) if ours else plan.taken()
        if plan.too_many_missed and ours:
            log.warning("periodic task %s: %s", self.key, plan.too_many_missed)
            self.event("Warning", "TooManyMissedTimes", plan.too_many_missed)
        if plan.miss_schedule:
            self.event("Warning", "MissSchedule", plan.miss_schedule)
        # The housekeeper may have sent some of these deletes since the snapshot.
        self.tidy(tuple(n for n in plan.delete if n not in self.deletes_sent), status)
        return plan.wake_at

    async def create(self, body: Mapping[str, Any], slot: int, replace: tuple[str, ...]) -> bool:
        """Cancel what Replace replaces, then create the slot's child; False if it existed."""
        namespace = body["metadata"]["namespace"]
        for name in replace:
            await self.api.cancel_child(namespace, name)
        created = await self.api.create_child(namespace, child_body(body, slot, self.clock.now()))
        if not created:
            log.info("periodic task %s: slot %s already ran", self.key, rfc3339(slot))
        return created

    # -- background writes ------------------------------------------------------------------

    def tidy(self, doomed: tuple[str, ...], desired: dict[str, Any]) -> None:
        """Hand deletions and the desired status to the housekeeper."""
        self.pending = (doomed, desired)
        if self.housekeeper is None or self.housekeeper.done():
            self.housekeeper = asyncio.create_task(self.housekeep())

    async def housekeep(self) -> None:
        while self.pending is not None:
            (doomed, desired), self.pending = self.pending, None
            meta = self.body["metadata"]
            try:
                # Status first, deletions after: a child is the only record that its slot
                # ran until a lastScheduleTime at or after its slot is stored (the desired
                # one is at least every child's slot). Deleted before that, a crash would
                # leave the next operator neither, and it would run the slot again.
                # Compared with the newest status seen (ours included), not the one the
                # sync started from.
                current = self.body.get("status") or {}
                changed = {k: v for k, v in desired.items() if current.get(k) != v}
                if changed:
                    await self.api.write_status(meta["namespace"], meta["name"], changed)
                    # Our write comes back through the watch; until then, do not repeat it.
                    self.body = {**self.body, "status": {**current, **changed}}
                for name in doomed:
                    self.deletes_sent.add(name)
                    try:
                        await self.api.delete_child(meta["namespace"], name)
                    except Exception:
                        self.deletes_sent.discard(name)
                        raise
            except Exception as exc:
                log.warning(
                    "periodic task %s: status or history update failed, retrying: %s",
                    self.key,
                    reason_text(exc),
                )
                asyncio.get_running_loop().call_later(RETRY_SECONDS, self.wake.set)

    async def housekept(self) -> None:
        """Wait until the housekeeper has written everything handed to it."""
        if self.housekeeper is not None:
            await self.housekeeper

    def event(self, kind: str, reason: str, message: str) -> None:
        try:
            self.events(self.body, kind, reason, message)
        except Exception as exc:  # events are best effort
            log.debug("event %s on %s not posted: %s", reason, self.key, exc)
