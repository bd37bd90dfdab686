"""The operator's calls on Task resources other than status: finalizers, deletion, listing.

(Status is written by :mod:`kubetasks.k8s.status`, the one module both operator and workers
use for it.)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from kubetasks.k8s import finalizers
from kubetasks.k8s.api import (
    ApiError,
    ConflictError,
    KubeApi,
    NotFoundError,
    custom_path,
)
from kubetasks.vocabulary import API_VERSION, FINAL_PHASES, PARENT_LABEL, RERUN_OF_LABEL, TASKS

log = logging.getLogger("kubetasks.operator")

#: Tasks per page when listing: a page is one response the API server builds in memory.
PAGE_SIZE = 500
#: The field selector of the Tasks that have not finished (``status.phase`` is a selectable
#: field of the CRD; a Task without a phase yet matches, its phase reading as "").
UNFINISHED = ",".join(f"status.phase!={phase}" for phase in FINAL_PHASES)


def task_paths(namespaces: Iterable[str]) -> list[str]:
    """The Task collections of ``namespaces`` (the cluster-wide one when there is none)."""
    return [custom_path(TASKS, ns) for ns in namespaces] or [custom_path(TASKS)]


def rerun_manifest(old: dict[str, Any]) -> dict[str, Any]:
    """A new Task running what ``old`` ran: its spec and labels, a name generated from its
    own, and the label :data:`~kubetasks.vocabulary.RERUN_OF_LABEL` naming it. A PeriodicTask's
    child label is not copied: the re-run is no run of the schedule (its parent would count
    it against its history and concurrency policy)."""
    meta = old["metadata"]
    labels = dict(meta.get("labels") or {})
    labels.pop(PARENT_LABEL, None)
    labels[RERUN_OF_LABEL] = meta["name"]
    prefix = meta["name"][:50].rstrip("-.") + "-rerun-"
    return {
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": {"generateName": prefix, "namespace": meta["namespace"], "labels": labels},
        "spec": old.get("spec") or {},
    }


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    resource_version: str


class TaskApi:
    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.selects_phase = True
        """The API server takes the :data:`UNFINISHED` field selector (until it refuses)."""

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Task, or None when there is none of that name."""
        try:
            return await self.api.get(custom_path(TASKS, namespace, name))
        except NotFoundError:
            return None

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a Task; returns it as stored (with the name the server generated)."""
        return await self.api.post(custom_path(TASKS, namespace), body)

    async def add_finalizer(self, body: dict[str, Any], finalizer: str) -> None:
        await finalizers.add(self.api, TASKS, body, finalizer)

    async def remove_finalizer(self, body: dict[str, Any], finalizer: str) -> None:
        await finalizers.remove(self.api, TASKS, body, finalizer)

    async def delete(self, namespace: str, name: str, uid: str) -> bool:
        """Delete this very Task (not a newer one of the same name); False if it is gone."""
        try:
            await self.api.delete(
                custom_path(TASKS, namespace, name),
                {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}},
            )
        except (NotFoundError, ConflictError):
            return False
        return True

    async def pages(
        self,
        namespaces: Iterable[str] = (),
        limit: int = PAGE_SIZE,
        *,
        fields: str = "",
        labels: str = "",
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The Tasks in ``namespaces`` (every namespace when empty), ``limit`` at a time
        (``limit``/``continue``), so a caller never holds every Task's body at once; only
        those matching the ``fields`` and ``labels`` selectors when given."""
        for path in task_paths(namespaces):
            async for page in self.listing(path, limit, fields=fields, labels=labels):
                yield page.items

    async def listing(
        self, path: str, limit: int = PAGE_SIZE, *, fields: str = "", labels: str = ""
    ) -> AsyncIterator[Page]:
        """The Tasks under ``path`` (one namespace's or all), a page at a time; every page
        carries the resourceVersion of the one snapshot they were all read from."""
        token = ""
        while True:
            query: dict[str, str | int] = {"limit": limit}
            if fields:
                query["fieldSelector"] = fields
            if labels:
                query["labelSelector"] = labels
            if token:
                query["continue"] = token
            reply = await self.api.get(path, **query)
            meta = reply.get("metadata") or {}
            yield Page(list(reply.get("items") or []), str(meta.get("resourceVersion") or ""))
            token = meta.get("continue") or ""
            if not token:
                return

    def unfinished(self, path: str, limit: int = PAGE_SIZE) -> AsyncIterator[Page]:
        """The unfinished Tasks under ``path``, a page at a time."""
        return self._by_phase(path, limit, [UNFINISHED], final=False)

    def finished(self, path: str, limit: int = PAGE_SIZE) -> AsyncIterator[Page]:
        """The finished Tasks under ``path``, a page at a time (one listing per phase)."""
        return self._by_phase(path, limit, [f"status.phase={p}" for p in FINAL_PHASES], final=True)

    async def _by_phase(
        self, path: str, limit: int, selectors: list[str], *, final: bool
    ) -> AsyncIterator[Page]:
        """The Tasks the field ``selectors`` select on ``status.phase``, one listing each. An
        API server that cannot select on it (before Kubernetes 1.31, or a CRD not yet
        updated) gets a listing of every Task, filtered here: correct, at the cost of reading
        them all."""
        if self.selects_phase:
            try:
                for fields in selectors:
                    async for page in self.listing(path, limit, fields=fields):
                        yield page
                return
            except ApiError as exc:
                if exc.status != 400 or "field label" not in exc.message:
                    raise
                self.selects_phase = False
                log.warning(
                    "the API server cannot select Tasks by status.phase (%s): every Task is"
                    " listed to find those of a phase; install the chart's CRDs on"
                    " Kubernetes 1.31 or later",
                    exc.message[:200],
                )
        async for page in self.listing(path, limit):
            items = [t for t in page.items if _phase(t) in FINAL_PHASES] if final else [
                t for t in page.items if _phase(t) not in FINAL_PHASES
            ]  # fmt: skip
            yield Page(items, page.resource_version)

    def watch(self, path: str, since: str, timeout: int) -> AsyncIterator[dict[str, Any]]:
        """The events of every Task under ``path`` after resourceVersion ``since``, with
        bookmarks, for about ``timeout`` seconds (then the server ends the stream)."""
        return self.api.stream(
            path,
            idle=timeout + 30,
            resourceVersion=since,
            allowWatchBookmarks=True,
            timeoutSeconds=timeout,
        )

    async def list(self, namespaces: Iterable[str] = ()) -> list[dict[str, Any]]:
        """All Tasks in ``namespaces`` (every namespace when empty)."""
        return [task async for page in self.pages(namespaces) for task in page]


def _phase(body: dict[str, Any]) -> str | None:
    return (body.get("status") or {}).get("phase")
