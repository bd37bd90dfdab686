"""The Kubernetes side of WorkerPools' Redis credentials (``controller/poolusers.py``): the
one module that writes Secrets, and the question whether a pool still exists.

The operator may create Secrets in the namespaces it watches, and nothing else on them: not
read, list, change or delete. A credential Secret is named after what it holds (see
``controller/poolusers.py``), so it never needs changing: new credentials get a new name, and
the garbage collector deletes the Secrets of a deleted pool (owner reference).
"""

from __future__ import annotations

from typing import Any

from kubetasks.k8s.api import ConflictError, KubeApi, NotFoundError, custom_path
from kubetasks.vocabulary import WORKER_POOLS


class SecretCreator:
    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def create(self, manifest: dict[str, Any]) -> bool:
        """Create the Secret; False if one of its name exists already (left as it is)."""
        namespace = manifest["metadata"]["namespace"]
        try:
            await self.api.post(f"/api/v1/namespaces/{namespace}/secrets", manifest)
        except ConflictError:
            return False
        return True


class PoolLookup:
    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def exists(self, namespace: str, name: str) -> bool:
        """Whether the WorkerPool exists (other API errors propagate)."""
        try:
            await self.api.get(custom_path(WORKER_POOLS, namespace, name))
        except NotFoundError:
            return False
        return True
