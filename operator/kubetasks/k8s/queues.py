"""The one module that reads and writes Queue resources.

The CLI pauses and resumes a queue by applying ``spec.paused`` (server-side apply, its own
field manager, so it creates the Queue when there is none and touches no other field); the
operator lists Queues and writes their status.
"""

from __future__ import annotations

import contextlib
from typing import Any

from kubetasks.k8s.api import APPLY_PATCH, KubeApi, NotFoundError, custom_path
from kubetasks.vocabulary import GROUP, QUEUES, VERSION

#: Field manager of ``kubetasks pause`` / ``resume``.
CLI_FIELD_MANAGER = "kubetasks-cli"


class QueueApi:
    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def set_paused(self, namespace: str, name: str, paused: bool) -> dict[str, Any]:
        """Pause or resume queue ``name`` of ``namespace``; returns the Queue as stored."""
        manifest = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Queue",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"paused": paused},
        }
        return await self.api.patch(
            custom_path(QUEUES, namespace, name),
            manifest,
            APPLY_PATCH,
            fieldManager=CLI_FIELD_MANAGER,
            force=True,
        )

    async def list(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every Queue of ``namespace`` (None: of every namespace)."""
        found = await self.api.get(custom_path(QUEUES, namespace))
        return list(found.get("items") or [])

    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        with contextlib.suppress(NotFoundError):  # deleted meanwhile
            await self.api.patch(custom_path(QUEUES, namespace, name, "status"), {"status": status})

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Queue ``name`` of ``namespace``, or None when there is none."""
        try:
            return await self.api.get(custom_path(QUEUES, namespace, name))
        except NotFoundError:
            return None
