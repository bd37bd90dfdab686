"""A producer's calls on Task and TaskSet resources: create one, and watch it to its end.

The resource client (``kubetasks.resources``) submits through here what ``kubectl apply``
would, and waits for an outcome with a real watch: one GET for the state and
resourceVersion the watch starts from, then one long-lived watch of that object alone
(``fieldSelector=metadata.name=...``), so a waiting producer costs the API server a stream,
not a request per poll. A watch the server expired (410 Gone) or ended starts again from a
fresh GET.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from kubetasks.k8s.api import ApiError, KubeApi, NotFoundError, custom_path

log = logging.getLogger("kubetasks.client")

#: Seconds the API server keeps one watch open before ending it (we then watch again).
WATCH_SECONDS = 300


class GoneError(Exception):
    """The watched object was deleted before it reached a final phase."""


class ResourceApi:
    """Create kubetasks resources of one plural and wait for them."""

    def __init__(self, api: KubeApi, plural: str) -> None:
        self.api = api
        self.plural = plural

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create the object; returns it as stored (with the name the server generated)."""
        return await self.api.post(custom_path(self.plural, namespace), body)

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.api.get(custom_path(self.plural, namespace, name))
        except NotFoundError:
            return None

    async def wait(
        self, namespace: str, name: str, done: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """The object once ``done(object)`` holds, from a GET then a watch of it alone.

        Raises :class:`GoneError` when the object is (or becomes) deleted first. Wrap the
        call in ``asyncio.timeout`` to bound the wait."""
        while True:
            body = await self.get(namespace, name)
            if body is None:
                raise GoneError(f"{self.plural[:-1]} {namespace}/{name} does not exist")
            if done(body):
                return body
            since = str(body["metadata"]["resourceVersion"])
            events = self.api.stream(
                custom_path(self.plural, namespace),
                idle=WATCH_SECONDS + 30,
                fieldSelector=f"metadata.name={name}",
                resourceVersion=since,
                allowWatchBookmarks=True,
                timeoutSeconds=WATCH_SECONDS,
            )
            try:
                # Closed at once when we return mid-stream: its connection is released now,
                # not when the generator is collected.
                async with contextlib.aclosing(events):
                    async for event in events:
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":  # 410 Gone: our resourceVersion is too old
                            log.debug("watch of %s/%s: %s", namespace, name, obj.get("message"))
                            break
                        if kind == "DELETED":
                            raise GoneError(f"{self.plural[:-1]} {namespace}/{name} was deleted")
                        if kind in ("ADDED", "MODIFIED") and done(obj):
                            return obj
            except ApiError as exc:
                if exc.status != 410:
                    raise
