"""Read-only listings of kubetasks' resources, for the dashboard's pages.

WorkerPools and PeriodicTasks are shown as their status says (the operator writes it); the
pods of a pool are listed to ask Redis how busy each worker is. Every call reads one page
of at most ``limit`` objects.
"""

from __future__ import annotations

from typing import Any

from kubetasks.k8s.api import KubeApi, custom_path
from kubetasks.vocabulary import PERIODIC_TASKS, POOL_LABEL, WORKER_POOLS

LIMIT = 500


class ResourceReader:
    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def _list(self, path: str, limit: int, **query: str | int | bool) -> list[dict[str, Any]]:
        found = await self.api.get(path, limit=limit, **query)
        return list(found.get("items") or [])

    async def worker_pools(self, namespace: str | None, limit: int = LIMIT) -> list[dict[str, Any]]:
        """The WorkerPools of ``namespace`` (None: of every namespace)."""
        return await self._list(custom_path(WORKER_POOLS, namespace), limit)

    async def periodic_tasks(
        self, namespace: str | None, limit: int = LIMIT
    ) -> list[dict[str, Any]]:
        """The PeriodicTasks of ``namespace`` (None: of every namespace)."""
        return await self._list(custom_path(PERIODIC_TASKS, namespace), limit)

    async def pool_pods(self, namespace: str, pool: str, limit: int = LIMIT) -> list[str]:
        """Names of the running pods of WorkerPool ``pool``."""
        items = await self._list(
            f"/api/v1/namespaces/{namespace}/pods",
            limit,
            labelSelector=f"{POOL_LABEL}={pool}",
            fieldSelector="status.phase=Running",
        )
        return [str(p["metadata"]["name"]) for p in items]

    async def periodic_runs(
        self, namespace: str, periodic: str, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Child Tasks of PeriodicTask ``periodic`` (one page: at most ``limit``)."""
        from kubetasks.vocabulary import PARENT_LABEL, TASKS

        return await self._list(
            custom_path(TASKS, namespace), limit, labelSelector=f"{PARENT_LABEL}={periodic}"
        )
