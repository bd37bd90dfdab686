"""The labels of the ServiceAccount a WorkerPool names, read for the pool policy
(``controller/poolpolicy.py``). Nothing is cached: a label removed by the platform team counts
from the next apply of the pool's Deployment."""

from __future__ import annotations

from kubetasks.k8s.api import KubeApi, NotFoundError


class ServiceAccountLabels:
    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def labels(self, namespace: str, name: str) -> dict[str, str] | None:
        """The ServiceAccount's labels; None if it does not exist. Other API errors (a
        forbidden read) propagate."""
        try:
            body = await self.api.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
        except NotFoundError:
            return None
        return dict((body.get("metadata") or {}).get("labels") or {})
