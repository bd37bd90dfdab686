"""The operator's own view of Tasks: the unfinished ones listed, then every change watched.

kopf lists and watches every Task, and its machinery per object (a worker, and a readiness
toggle per object of a resource that has an index) made a restart cost every Task ever
stored: over 10,000 finished Tasks a restarted operator was still busy after 15 minutes, and
no handler ran until kopf had been through them all. What the operator acts on at start-up
is what is unfinished, so the feed:

1. lists, a page at a time, the unfinished Tasks (a field selector on ``status.phase``, a
   selectable field of the CRD) and the children of PeriodicTasks (a label selector: their
   runners count finished children too, and the history limits keep them few);
2. then watches every Task from the first listing's resourceVersion: every change after
   it, finished Tasks included, and nothing of the history before it;
3. tells each event to the ``observers`` at once (in order, synchronously: the PeriodicTask
   child index is complete when :attr:`ready` is set) and hands it to ``handle`` one at a
   time per Task, at most ``concurrency`` Tasks at once: while one event of a Task is being
   handled, a newer one replaces the one waiting (the handler is level-triggered), and a
   burst waits for a slot instead of opening more connections to Redis than its pool has.

A watch that ends is resumed from the last resourceVersion seen (bookmarks keep it recent);
one the server no longer has (410 Gone) starts over with the listing. Tasks deleted during
such a gap are not told; the repair loop sweeps what they left in Redis. An API server
outage is reported by the API client's outage (one line when it starts and ends); the feed
retries every half second meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kubetasks.background import isolated, log_failure
from kubetasks.k8s.api import ApiError, is_unavailable, reason_text
from kubetasks.k8s.tasks import TaskApi, task_paths
from kubetasks.vocabulary import PARENT_LABEL

log = logging.getLogger("kubetasks.operator")

Handler = Callable[[str, dict[str, Any]], Awaitable[None]]
Observer = Callable[[str, dict[str, Any]], None]

#: Seconds the API server keeps one watch request open (then the feed opens the next).
WATCH_SECONDS = 300
#: Seconds before a failed listing or watch is tried again while the API server is away.
RETRY_SECONDS = 0.5
#: Seconds before one that failed otherwise (403: the operator's RBAC) is tried again.
REFUSED_RETRY_SECONDS = 10.0
#: Tasks handled at once: the size of the operator's Redis connection pool.
CONCURRENCY = 64


class _Gone(Exception):
    """The watch's resourceVersion is too old for the server (410): list again."""


class TaskFeed:
    name = "task-feed"

    def __init__(
        self,
        tasks: TaskApi,
        namespaces: Iterable[str],
        handle: Handler,
        observers: Iterable[Observer] = (),
        concurrency: int = CONCURRENCY,
        ready: asyncio.Event | None = None,
    ) -> None:
        self.tasks = tasks
        self.paths = task_paths(namespaces)
        self.handle = handle
        self.observers = tuple(observers)
        self.ready = ready or asyncio.Event()
        """Set once every namespace's first listing has been told to the observers."""
        self._listed: set[str] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._waiting: dict[str, tuple[str, dict[str, Any]]] = {}
        self._handling: dict[str, asyncio.Task[None]] = {}
        self.events = 0
        """Events seen (listed Tasks included)."""
        self.listings = 0

    @property
    def busy(self) -> int:
        """Tasks with an event being handled or waiting to be."""
        return len(self._handling)

    async def run(self, stop: asyncio.Event) -> None:
        loops = [asyncio.create_task(self._follow(p), name=f"feed {p}") for p in self.paths]
        try:
            await stop.wait()
        finally:
            for task in [*loops, *self._handling.values()]:
                task.cancel()
            await asyncio.gather(*loops, *self._handling.values(), return_exceptions=True)

    async def _follow(self, path: str) -> None:
        since = ""
        while True:
            try:
                if not since:
                    since = await self._list(path)
                since = await self._watch(path, since)
            except asyncio.CancelledError:
                raise
            except _Gone:
                log.info("task watch of %s: resourceVersion %s expired, listing again", path,
                         since)  # fmt: skip
                since = ""
            except Exception as exc:
                if is_unavailable(exc):  # the API client's outage reports it
                    await asyncio.sleep(RETRY_SECONDS)
                else:
                    log.warning("task watch of %s failed, retrying: %s", path, reason_text(exc))
                    await asyncio.sleep(REFUSED_RETRY_SECONDS)

    async def _list(self, path: str) -> str:
        """Tell every unfinished Task and every PeriodicTask child; returns the resourceVersion
        the watch goes on from."""
        since = ""
        async for page in self.tasks.unfinished(path):
            since = since or page.resource_version
            for body in page.items:
                self._tell("ADDED", body)
        async for page in self.tasks.listing(path, labels=PARENT_LABEL):
            for body in page.items:
                self._tell("ADDED", body)
        self.listings += 1
        self._listed.add(path)
        if self._listed.issuperset(self.paths):
            self.ready.set()
        return since

    async def _watch(self, path: str, since: str) -> str:
        """Tell every event after ``since`` until the server ends the stream; returns the
        resourceVersion to go on from."""
        async for event in self.tasks.watch(path, since, WATCH_SECONDS):
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if body.get("code") == 410:
                    raise _Gone
                raise ApiError("WATCH", path, int(body.get("code") or 500), body)
            since = (body.get("metadata") or {}).get("resourceVersion") or since
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._tell(kind, body)
        return since

    def _tell(self, kind: str, body: dict[str, Any]) -> None:
        self.events += 1
        for observer in self.observers:
            with isolated(log, "observer of task %s", body["metadata"].get("name")):
                observer(kind, body)
        uid = body["metadata"]["uid"]
        waiting = self._waiting.get(uid)
        if waiting is None or waiting[0] != "DELETED":  # nothing comes after a deletion
            self._waiting[uid] = (kind, body)
        if uid not in self._handling:
            self._handling[uid] = asyncio.create_task(self._drain(uid))

    async def _drain(self, uid: str) -> None:
        try:
            while uid in self._waiting:
                async with self._slots:
                    kind, body = self._waiting.pop(uid)
                    try:
                        await self.handle(kind, body)
                    except Exception:
                        meta = body["metadata"]
                        log_failure(log, "handling %s of task %s/%s", kind,
                                    meta.get("namespace"), meta.get("name"))  # fmt: skip
        finally:
            del self._handling[uid]

    async def settled(self) -> None:
        """Until the first listing is told and what was being handled then is done."""
        await self.ready.wait()
        with contextlib.suppress(Exception):
            await asyncio.gather(*list(self._handling.values()))
