"""Handlers of bench/drain_profile.py: a no-op, and a stamp that returns how long after
``sent`` (epoch seconds) it started. Neither touches Redis, so the worker's own round trips
are all the server sees."""

from __future__ import annotations

import time

import kubetasks


@kubetasks.task("drain.noop")
async def noop() -> None:
    return None


@kubetasks.task("drain.stamp")
async def stamp(sent: float) -> float:
    return time.time() - sent
