"""The API calls of the PeriodicTask controller: child Tasks and PeriodicTask status.

The one write that makes a slot run exactly once is the create of its child Task: the name
is derived from the slot, so the API server answers AlreadyExists to every later attempt,
from this operator after a restart or from a second one running beside it. That answer is
an expected outcome here, not an error.

Requests go through :class:`~kubetasks.k8s.api.KubeApi`, whose pooled connections matter
here: a runner writes status on every slot, and a new TLS connection per call costs several
times the client CPU of a reused one (the figures are in bench/FINDINGS.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from kubetasks.k8s.api import ConflictError, KubeApi, NotFoundError, custom_path
from kubetasks.vocabulary import PERIODIC_TASKS, TASKS

log = logging.getLogger("kubetasks.periodic")


class PeriodicApi:
    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.created = 0
        self.already_existed = 0
        self.status_writes = 0

    async def create_child(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a child Task; False when a Task of that name exists (the slot already ran)."""
        try:
            await self.api.post(custom_path(TASKS, namespace), body)
        except ConflictError:
            self.already_existed += 1
            return False
        self.created += 1
        return True

    async def cancel_child(self, namespace: str, name: str) -> None:
        """``spec.cancel: true`` (concurrencyPolicy Replace); the Task controller does the rest."""
        await self._ignore_missing(
            self.api.patch(custom_path(TASKS, namespace, name), {"spec": {"cancel": True}})
        )

    async def delete_child(self, namespace: str, name: str) -> None:
        """Delete a finished child Task (history limits)."""
        await self._ignore_missing(self.api.delete(custom_path(TASKS, namespace, name)))

    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the PeriodicTask's ``/status`` (None values remove fields)."""
        await self._ignore_missing(
            self.api.patch(
                custom_path(PERIODIC_TASKS, namespace, name, "status"), {"status": status}
            )
        )
        self.status_writes += 1

    async def _ignore_missing(self, request: Awaitable[Any]) -> None:
        try:
            await request
        except NotFoundError as exc:
            log.debug("object already gone: %s", exc)
