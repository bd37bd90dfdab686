"""The shape every background loop shares (worker and operator): ``tick()`` on an interval."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("kubetasks.loops")


class Component(Protocol):
    name: str
    wake: asyncio.Event | None
    """Set by others to run the next tick at once (None: only the interval counts)."""

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
        wake = component.wake
        waiters = [asyncio.ensure_future(stop.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        _, pending = await asyncio.wait(
            waiters, timeout=component.interval(), return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in pending:
            waiter.cancel()
        if wake is not None:
            wake.clear()
