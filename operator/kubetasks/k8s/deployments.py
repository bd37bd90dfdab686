"""The one module that writes worker Deployments (their spec and their scale) and the
deletion cost of worker pods.

Deployments are applied whole with server-side apply under one field manager, replicas
included, so a pool's spec change and a scale decision can never fight over fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from kubetasks.k8s.api import KubeApi, status_code

FIELD_MANAGER = "kubetasks-operator"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


@dataclass(frozen=True)
class DeploymentState:
    replicas: int
    """Replicas the Deployment asks for (``spec.replicas``)."""
    ready: int
    """Pods ready."""
    failure: str | None = None
    """Why its ReplicaSet cannot create pods (``ReplicaFailure`` condition), if it cannot."""


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

    async def observe(self, namespace: str, name: str) -> DeploymentState | None:
        """What a Deployment asks for and has, or None if it does not exist."""
        try:
            found = await self.api.call(self.api.apps.read_namespaced_deployment, name, namespace)
        except Exception as exc:
            if status_code(exc) == 404:
                return None
            raise
        status = found.status
        failure = next(
            (
                c.message or c.reason or "pods cannot be created"
                for c in (status.conditions if status else None) or []
                if c.type == "ReplicaFailure" and c.status == "True"
            ),
            None,
        )
        return DeploymentState(
            replicas=int(found.spec.replicas or 0),
            ready=int((status.ready_replicas if status else 0) or 0),
            failure=failure,
        )

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
