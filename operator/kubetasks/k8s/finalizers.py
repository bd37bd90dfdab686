"""Adding and removing the operator's finalizer on a custom resource, with JSON patches that
fail instead of overwriting a list somebody else changed since it was read.

Tasks and TaskSets use the same two calls (``TaskApi`` and ``TaskSetApi`` name the plural).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kubetasks.k8s.api import JSON_PATCH, InvalidError, KubeApi, NotFoundError, custom_path

log = logging.getLogger("kubetasks.operator")


async def add(api: KubeApi, plural: str, body: dict[str, Any], finalizer: str) -> None:
    """Add ``finalizer`` to the resource ``body`` is of, unless ``body`` has it already."""
    meta = body["metadata"]
    finalizers = meta.get("finalizers") or []
    if finalizer in finalizers:
        return
    patch: list[dict[str, Any]] = [
        {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer}
    ]
    if not finalizers:
        patch = [{"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}]
    # Gone already, or its finalizers changed under us (the next event retries).
    with contextlib.suppress(NotFoundError, InvalidError):
        await api.patch(custom_path(plural, meta["namespace"], meta["name"]), patch, JSON_PATCH)


async def remove(api: KubeApi, plural: str, body: dict[str, Any], finalizer: str) -> None:
    """Remove ``finalizer`` if it is still where ``body`` saw it (a JSON-patch test)."""
    meta = body["metadata"]
    finalizers = meta.get("finalizers") or []
    if finalizer not in finalizers:
        return
    index = finalizers.index(finalizer)
    patch = [
        {"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
        {"op": "remove", "path": f"/metadata/finalizers/{index}"},
    ]
    try:
        await api.patch(custom_path(plural, meta["namespace"], meta["name"]), patch, JSON_PATCH)
    except (NotFoundError, InvalidError) as exc:  # gone, or finalizers changed: next event
        log.debug("finalizer removal on %s %s skipped: %s", plural, meta["name"], exc)
