"""The shape every background loop shares (worker and operator): ``tick()`` on an interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

log = logging.getLogger("kubetasks.loops")


class Component(Protocol):
    name: str

    def interval(self) -> float:
        """Seconds until the next tick."""
        ...

    async def tick(self) -> None: ...


async def run_every(component: Component, stop: asyncio.Event) -> None:
    """Tick until ``stop`` is set. A failing tick is logged and retried on the next one:
    a Redis hiccup must not end the worker."""
    while not stop.is_set():
        try:
            await component.tick()
        except Exception:
            log.exception("%s tick failed; retrying", component.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), component.interval())
