"""The shape every background loop shares (worker and operator): ``tick()`` on an interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Protocol

from kubetasks.errors import BrokerUnavailableError

log = logging.getLogger("kubetasks.background")


@contextlib.contextmanager
def isolated(logger: logging.Logger, what: str, *args: object) -> Iterator[None]:
    """One item of a loop over queues or Tasks: an error is logged and the loop goes on with
    the next item, so one bad item never stops the pass for the others. A lost Redis still
    ends the pass: every other item would fail the same way."""
    try:
        yield
    except BrokerUnavailableError:
        raise
    except Exception:
        logger.exception("skipped " + what, *args)


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
    a Redis hiccup must not end the worker. A tick that failed because Redis is
    unreachable logs nothing of its own: the outage is told once (``outages.REDIS``)."""
    while not stop.is_set():
        try:
            await component.tick()
        except BrokerUnavailableError:
            pass
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
