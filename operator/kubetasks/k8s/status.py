"""The one module that writes Task status.

Operator and workers both call :class:`TaskStatusWriter`. Writes are merge patches of the
``/status`` subresource built by :mod:`kubetasks.status_patches`. The CRD's CEL transition rules
make the API server refuse a write that would move status backwards (leave a terminal phase,
or lower the attempt count); such a refusal means the write was stale and is dropped, as is a
write to a Task that no longer exists.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kubetasks.k8s.api import InvalidError, KubeApi, NotFoundError, custom_path, reason_text
from kubetasks.vocabulary import TASKS, WORKER_POOLS

log = logging.getLogger("kubetasks.status")


class TaskStatusWriter:
    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.writes = 0
        self.refused = 0

    async def write(self, namespace: str, name: str, patch: dict[str, Any]) -> bool:
        """Apply ``patch``; False when the Task is gone or the write was stale."""
        try:
            await self.api.patch(custom_path(TASKS, namespace, name, "status"), patch)
        except NotFoundError:
            return False
        except InvalidError as exc:  # a transition rule refused it: status already moved on
            self.refused += 1
            log.debug("status write to %s/%s refused as stale: %s", namespace, name, exc)
            return False
        self.writes += 1
        return True

    async def write_quietly(self, namespace: str, name: str, patch: dict[str, Any]) -> bool:
        """Like :meth:`write`, but a failure is logged, not raised (worker reporting must
        never stop the work itself)."""
        try:
            return await self.write(namespace, name, patch)
        except Exception as exc:
            log.warning("status write to %s/%s failed: %s", namespace, name, reason_text(exc))
            return False


class PoolStatusWriter:
    """Writes WorkerPool status (depth, in flight, desired and actual replicas)."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def write(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        with contextlib.suppress(NotFoundError):  # the pool is gone
            await self.api.patch(
                custom_path(WORKER_POOLS, namespace, name, "status"), {"status": status}
            )
