"""The operator's calls on Task resources other than status: finalizers, deletion, listing.

(Status is written by :mod:`kubetasks.k8s.status`, the one module both operator and workers
use for it.)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from kubetasks.k8s.api import (
    JSON_PATCH,
    ConflictError,
    InvalidError,
    KubeApi,
    NotFoundError,
    custom_path,
)
from kubetasks.vocabulary import TASKS

log = logging.getLogger("kubetasks.operator")

#: Tasks per page when listing: a page is one response the API server builds in memory.
PAGE_SIZE = 500


class TaskApi:
    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Task, or None when there is none of that name."""
        try:
            return await self.api.get(custom_path(TASKS, namespace, name))
        except NotFoundError:
            return None

    async def add_finalizer(self, body: dict[str, Any], finalizer: str) -> None:
        meta = body["metadata"]
        finalizers = meta.get("finalizers") or []
        if finalizer in finalizers:
            return
        patch: list[dict[str, Any]] = [
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer}
        ]
        if not finalizers:
            patch = [{"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}]
        # Gone already, or its finalizers changed under us (the next event retries).
        with contextlib.suppress(NotFoundError, InvalidError):
            await self.api.patch(
                custom_path(TASKS, meta["namespace"], meta["name"]), patch, JSON_PATCH
            )

    async def remove_finalizer(self, body: dict[str, Any], finalizer: str) -> None:
        """Remove ``finalizer`` if it is still where ``body`` saw it (a JSON-patch test)."""
        meta = body["metadata"]
        finalizers = meta.get("finalizers") or []
        if finalizer not in finalizers:
            return
        index = finalizers.index(finalizer)
        patch = [
            {"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
            {"op": "remove", "path": f"/metadata/finalizers/{index}"},
        ]
        try:
            await self.api.patch(
                custom_path(TASKS, meta["namespace"], meta["name"]), patch, JSON_PATCH
            )
        except (NotFoundError, InvalidError) as exc:  # gone, or finalizers changed: next event
            log.debug("finalizer removal on %s skipped: %s", meta["name"], exc)

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
        self, namespaces: Iterable[str] = (), limit: int = PAGE_SIZE
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The Tasks in ``namespaces`` (every namespace when empty), ``limit`` at a time
        (``limit``/``continue``), so a caller never holds every Task's body at once."""
        paths = [custom_path(TASKS, ns) for ns in namespaces] or [custom_path(TASKS)]
        for path in paths:
            token = ""
            while True:
                query: dict[str, str | int] = {"limit": limit}
                if token:
                    query["continue"] = token
                reply = await self.api.get(path, **query)
                yield list(reply.get("items") or [])
                token = (reply.get("metadata") or {}).get("continue") or ""
                if not token:
                    break

    async def list(self, namespaces: Iterable[str] = ()) -> list[dict[str, Any]]:
        """All Tasks in ``namespaces`` (every namespace when empty)."""
        return [task async for page in self.pages(namespaces) for task in page]
