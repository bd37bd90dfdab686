"""Install the CRDs from ``crds/`` into a (local) API server and wait until they serve.

Tests and ``kubetasks dev up`` need the kubetasks resource types before anything else can
run. Server-side apply makes installing idempotent (a reused environment gets the current
definitions), and waiting for ``Established`` means the next request for a Task does not
race the API server's discovery.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from devenv.kubeapi import JsonApi, JsonObject
from kubetasks.errors import ConfigurationError

APPLY_PATCH = "application/apply-patch+yaml"
_CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def load_crds(directory: Path) -> list[JsonObject]:
    """Every CustomResourceDefinition document in ``directory/*.yaml``, in file order."""
    found: list[JsonObject] = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                found.append(doc)
    return found


def apply_crds(api: JsonApi, directory: Path, timeout: float = 30.0) -> list[str]:
    """Apply the CRDs of ``directory``; returns their names once all are Established."""
    names = []
    for crd in load_crds(directory):
        name = crd["metadata"]["name"]
        api.request(
            "PATCH",
            f"{_CRD_PATH}/{name}",
            query={"fieldManager": "kubetasks-dev", "force": "true"},
            body=crd,
            content_type=APPLY_PATCH,
        )
        names.append(name)
    deadline = time.monotonic() + timeout
    for name in names:
        while not _established(api.get(f"{_CRD_PATH}/{name}")):
            if time.monotonic() > deadline:
                raise ConfigurationError(f"CRD {name} was not Established in {timeout}s")
            time.sleep(0.1)
    return names


def _established(crd: JsonObject) -> bool:
    return any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in crd.get("status", {}).get("conditions") or []
    )
