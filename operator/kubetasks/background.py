"""The shape every background loop shares (worker and operator): ``tick()`` on an interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Protocol

from kubetasks import outages
from kubetasks.errors import BrokerUnavailableError

log = logging.getLogger("kubetasks.background")


def log_failure(logger: logging.Logger, message: str, *args: object, brief: str = "") -> None:
    """Log a failed step (inside ``except``): during an outage of Redis or the API server,
    which is told once (``kubetasks.outages``), at debug level only; else as a warning
    ending with ``brief`` (a one-line reason), or without one as an error with the
    traceback."""
    if outages.any_ongoing():
        logger.debug(message + " (during an outage)", *args, exc_info=True)
    elif brief:
        logger.warning(message + ": %s", *args, brief)
    else:
        logger.exception(message, *args)


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
        log_failure(logger, "skipped " + what, *args)


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
    a Redis hiccup must not end the worker. A tick that failed because Redis or the API
    server is unreachable logs nothing of its own: the outage is told once
    (``kubetasks.outages``)."""
    while not stop.is_set():
        try:
            await component.tick()
        except BrokerUnavailableError:
            pass
        except Exception:
            if outages.any_ongoing():
                log.debug("%s tick failed during an outage; retrying", component.name)
            else:
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
