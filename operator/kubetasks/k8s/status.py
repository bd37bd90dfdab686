"""The one module that writes Task status.

Operator and workers both call :class:`TaskStatusWriter`. Writes carry the status patches
built by :mod:`kubetasks.status_patches` to the ``/status`` subresource, with the Task's uid
as a precondition, so a late write never lands on a re-created Task of the same name. The
CRD's CEL transition rules make the API server refuse a write that would move status
backwards (leave a terminal phase, or lower the attempt count); such a refusal means the
write was stale and is dropped, as is a write to a Task that no longer exists. A write the
API server does not answer raises; the worker's sink (:mod:`kubetasks.k8s.sink`) keeps it
and tries again.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kubetasks.k8s.api import (
    JSON_PATCH,
    InvalidError,
    KubeApi,
    NotFoundError,
    custom_path,
)
from kubetasks.vocabulary import TASKS, WORKER_POOLS

log = logging.getLogger("kubetasks.status")


class TaskStatusWriter:
    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.writes = 0
        self.refused = 0

    async def write(
        self,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        uid: str,
        fresh: bool = False,
    ) -> bool:
        """Apply ``patch`` to the Task of that name whose uid is ``uid``; False when it is
        gone (or re-created: another uid) or the write was stale. ``fresh``: the Task most
        likely has no status yet, so that form is tried first (see :func:`status_ops`)."""
        path = custom_path(TASKS, namespace, name, "status")
        # The likely form, the other, and the likely one again: a concurrent first write
        # can add the status between the two (absent when the first was tried, present by
        # the second).
        forms = [fresh, not fresh, fresh]
        last: InvalidError | None = None
        for absent in forms:
            try:
                await self.api.patch(path, status_ops(uid, patch, absent), JSON_PATCH)
            except NotFoundError:
                return False
            except InvalidError as exc:
                last = exc
                if (exc.body.get("details") or {}).get("causes"):
                    break  # a transition rule refused it: status already moved on
                continue  # a test failed: another uid, or the status is (not) there
            self.writes += 1
            return True
        # Another uid (a late write for a deleted Task whose name was reused), or a
        # transition rule refused it: status already moved on.
        self.refused += 1
        log.debug("status write to %s/%s refused as stale: %s", namespace, name, last)
        return False


def status_ops(uid: str, patch: dict[str, Any], absent: bool) -> list[dict[str, Any]]:
    """A merge patch of ``status`` as a JSON patch that applies only to the Task whose uid
    is ``uid``: a merge patch of the status subresource ignores ``metadata``, so only a
    JSON patch ``test`` can carry the uid as a precondition.

    JSON patch cannot add a member to a missing object, and a new Task has no ``status``:
    with ``absent`` the status is added whole (after a ``test`` that there is none, so an
    existing status is never replaced); otherwise each member is set. The writer tries the
    likely form first and the other when it is refused. A None member (merge patch: remove)
    is written as null, which the API server prunes."""
    status = patch["status"]
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": uid}]
    if absent:
        value = {k: v for k, v in status.items() if v is not None}
        return [*ops, {"op": "test", "path": "/status", "value": None},
                {"op": "add", "path": "/status", "value": value}]  # fmt: skip
    return ops + [{"op": "add", "path": f"/status/{k}", "value": v} for k, v in status.items()]


class PoolStatusWriter:
    """Writes WorkerPool status (depth, in flight, desired and actual replicas)."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def write(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        with contextlib.suppress(NotFoundError):  # the pool is gone
            await self.api.patch(
                custom_path(WORKER_POOLS, namespace, name, "status"), {"status": status}
            )
