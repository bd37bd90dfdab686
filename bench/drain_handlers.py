"""Handlers of bench/drain_profile.py: a no-op, a stamp that returns how long after ``sent``
(epoch seconds) it started, and ``drain.incr``, the no-op of bench/queue_bench.py (one
``INCR`` on a redis.asyncio client of its own). The first two do not touch Redis, so the
worker's own round trips are all the server sees."""

from __future__ import annotations

import os
import time
from typing import Any

import kubetasks


@kubetasks.task("drain.noop")
async def noop() -> None:
    return None


@kubetasks.task("drain.stamp")
async def stamp(sent: float) -> float:
    return time.time() - sent


_redis: Any = None


@kubetasks.task("drain.incr")
async def incr() -> None:
    global _redis
    if _redis is None:
        import redis.asyncio

        _redis = redis.asyncio.Redis.from_url(os.environ["DRAIN_REDIS_URL"])
    await _redis.incr("drain:done")
