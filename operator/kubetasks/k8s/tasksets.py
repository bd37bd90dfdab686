"""The operator's calls on TaskSet resources: status, finalizers, deletion, lookups.

A TaskSet's status is the operator's alone (its items report to Redis, never to the API), so
a plain merge patch of ``/status`` is enough: there is no second writer to race with.
"""

from __future__ import annotations

import logging
from typing import Any

from kubetasks.k8s import finalizers
from kubetasks.k8s.api import (
    ConflictError,
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
        await finalizers.add(self.api, TASKSETS, body, finalizer)

    async def remove_finalizer(self, body: dict[str, Any], finalizer: str) -> None:
        await finalizers.remove(self.api, TASKSETS, body, finalizer)

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
