"""The operator's calls on TaskSet resources: status, finalizers, deletion, lookups.

A TaskSet's status is the operator's alone (its items report to Redis, never to the API), so
a plain merge patch of ``/status`` is enough: there is no second writer to race with.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kubetasks.k8s.api import (
    JSON_PATCH,
    ConflictError,
    InvalidError,
    KubeApi,
    NotFoundError,
    custom_path,
)
from kubetasks.vocabulary import TASKSETS

log = logging.getLogger("kubetasks.tasksets")


class TaskSetApi:
    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.status_writes = 0

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.api.get(custom_path(TASKSETS, namespace, name))
        except NotFoundError:
            return None

    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Merge-patch the TaskSet's ``/status``; False when it is gone."""
        try:
            await self.api.patch(
                custom_path(TASKSETS, namespace, name, "status"), {"status": status}
            )
        except NotFoundError:
            return False
        self.status_writes += 1
        return True

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
        with contextlib.suppress(NotFoundError, InvalidError):
            await self.api.patch(
                custom_path(TASKSETS, meta["namespace"], meta["name"]), patch, JSON_PATCH
            )

    async def remove_finalizer(self, body: dict[str, Any], finalizer: str) -> None:
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
                custom_path(TASKSETS, meta["namespace"], meta["name"]), patch, JSON_PATCH
            )
        except (NotFoundError, InvalidError) as exc:
            log.debug("finalizer removal on taskset %s skipped: %s", meta["name"], exc)

    async def delete(self, namespace: str, name: str, uid: str) -> bool:
        """Delete this very TaskSet (not a newer one of the same name)."""
        try:
            await self.api.delete(
                custom_path(TASKSETS, namespace, name),
                {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}},
            )
        except (NotFoundError, ConflictError):
            return False
        return True
