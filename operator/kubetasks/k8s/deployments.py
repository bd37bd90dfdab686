"""The one module that writes worker Deployments (their spec and their scale) and the
deletion cost of worker pods.

Deployments are applied whole with server-side apply under one field manager, replicas
included, so a pool's spec change and a scale decision can never fight over fields.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, TypedDict

from kubetasks.k8s.api import APPLY_PATCH, STRATEGIC_MERGE_PATCH, KubeApi, NotFoundError

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


class WorkerPod(TypedDict):
    """A live worker pod, as the autoscaler needs it to choose which pods go first."""

    name: str
    cost: str | None
    """Its ``pod-deletion-cost`` annotation (None: not set)."""
    phase: str | None


class DeploymentWriter:
    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.applies = 0

    async def apply(self, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        await self.api.patch(
            _deployment_path(meta["namespace"], meta["name"]),
            manifest,
            APPLY_PATCH,
            fieldManager=FIELD_MANAGER,
            force=True,
        )
        self.applies += 1

    async def observe(self, namespace: str, name: str) -> DeploymentState | None:
        """What a Deployment asks for and has, or None if it does not exist."""
        try:
            found = await self.api.get(_deployment_path(namespace, name))
        except NotFoundError:
            return None
        status = found.get("status") or {}
        failure = next(
            (
                c.get("message") or c.get("reason") or "pods cannot be created"
                for c in status.get("conditions") or []
                if c.get("type") == "ReplicaFailure" and c.get("status") == "True"
            ),
            None,
        )
        return DeploymentState(
            replicas=int((found.get("spec") or {}).get("replicas") or 0),
            ready=int(status.get("readyReplicas") or 0),
            failure=failure,
        )

    async def pods(self, namespace: str, selector: str) -> list[WorkerPod]:
        """Live pods (not being deleted) matching a label selector."""
        listing = await self.api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)
        return [
            WorkerPod(
                name=p["metadata"]["name"],
                cost=(p["metadata"].get("annotations") or {}).get(DELETION_COST),
                phase=(p.get("status") or {}).get("phase"),
            )
            for p in listing.get("items") or []
            if not p["metadata"].get("deletionTimestamp")
        ]

    async def set_deletion_cost(self, namespace: str, pod: str, cost: int) -> None:
        """Pods with a lower cost are removed first when a ReplicaSet scales in."""
        patch = {"metadata": {"annotations": {DELETION_COST: str(cost)}}}
        with contextlib.suppress(NotFoundError):  # the pod is gone already
            await self.api.patch(
                f"/api/v1/namespaces/{namespace}/pods/{pod}", patch, STRATEGIC_MERGE_PATCH
            )


def _deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
