"""Kubernetes Events about kubetasks' resources, posted in the background.

``kopf.event`` works only inside kopf's own tasks (its poster lives in their context), and
Task events come from the operator's own feed (``controller/feed.py``), so the operator
posts them itself, as kopf does: a core/v1 Event per call, not awaited by the caller. Events
are best effort: a failed post is logged at debug level and dropped, and at most
:data:`IN_FLIGHT` posts are under way at once (beyond that, a post is dropped and counted).
Rate limits belong to the caller (``controller/events.py`` has a budget).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from kubetasks.k8s.api import KubeApi, reason_text

log = logging.getLogger("kubetasks.k8s")

#: The ``source.component`` of the Events (the "From" of ``kubectl describe``).
COMPONENT = "kubetasks-operator"
#: Posts under way at once.
IN_FLIGHT = 32
#: Longest message kept (the API server refuses longer ones); the middle is cut.
MAX_MESSAGE = 1024


def event_body(obj: Mapping[str, Any], kind: str, reason: str, message: str) -> dict[str, Any]:
    """The core/v1 Event of ``reason`` about ``obj`` (a resource as the API returns it)."""
    meta = obj["metadata"]
    if len(message) > MAX_MESSAGE:
        half = MAX_MESSAGE // 2 - 2
        message = f"{message[:half]}...{message[-half:]}"
    now = datetime.now(UTC).isoformat()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": meta["namespace"], "generateName": f"{meta['name']}."},
        "type": kind,
        "reason": reason,
        "message": message,
        "action": reason,
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "source": {"component": COMPONENT},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": now,
    }


class PostEvent(Protocol):
    def __call__(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        """Post an Event of ``reason`` about ``body`` (best effort, not awaited)."""
        ...


class EventPoster:
    """``poster(obj, kind, reason, message)`` posts an Event in the background."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self._in_flight: set[asyncio.Task[None]] = set()
        self.dropped = 0

    def __call__(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        if len(self._in_flight) >= IN_FLIGHT:
            self.dropped += 1
            return
        event = event_body(body, kind, reason, message)
        task = asyncio.get_running_loop().create_task(self._post(event))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _post(self, body: dict[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        try:
            await self.api.post(f"/api/v1/namespaces/{namespace}/events", body)
        except Exception as exc:
            log.debug("event %s not posted: %s", body["reason"], reason_text(exc))

    async def flush(self) -> None:
        """Until the posts under way are done (at shutdown)."""
        await asyncio.gather(*self._in_flight, return_exceptions=True)
