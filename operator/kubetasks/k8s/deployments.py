"""The one module that writes worker Deployments (their spec and their scale) and the
deletion cost of worker pods.

Deployments are applied whole with server-side apply under one field manager, replicas
included, so a pool's spec change and a scale decision can never fight over fields.
"""

from __future__ import annotations

from typing import Any, cast

from kubetasks.k8s.api import KubeApi, status_code

FIELD_MANAGER = "kubetasks-operator"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


class DeploymentWriter:
    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.applies = 0

    async def apply(self, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        await self.api.call(
            self.api.apps.patch_namespaced_deployment,
            meta["name"],
            meta["namespace"],
            manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
            _preload_content=False,
        )
        self.applies += 1

    async def replicas(self, namespace: str, name: str) -> tuple[int, int] | None:
        """(spec replicas, ready replicas) of a Deployment, or None if it does not exist."""
        try:
            found = await self.api.call(self.api.apps.read_namespaced_deployment, name, namespace)
        except Exception as exc:
            if status_code(exc) == 404:
                return None
            raise
        ready = found.status.ready_replicas if found.status else 0
        return int(found.spec.replicas or 0), int(ready or 0)

    async def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Live pods (not being deleted) matching a label selector, as plain dicts."""
        listing = await self.api.call(
            self.api.core.list_namespaced_pod, namespace, label_selector=selector
        )
        pods = cast(list[Any], listing.items)
        return [
            {
                "name": p.metadata.name,
                "cost": (p.metadata.annotations or {}).get(DELETION_COST),
                "phase": p.status.phase,
            }
            for p in pods
            if p.metadata.deletion_timestamp is None
        ]

    async def set_deletion_cost(self, namespace: str, pod: str, cost: int) -> None:
        """Pods with a lower cost are removed first when a ReplicaSet scales in."""
        patch = {"metadata": {"annotations": {DELETION_COST: str(cost)}}}
        try:
            await self.api.call(
                self.api.core.patch_namespaced_pod, pod, namespace, patch, _preload_content=False
            )
        except Exception as exc:
            if status_code(exc) != 404:
                raise
