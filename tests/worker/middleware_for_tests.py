"""Middleware a worker process loads with ``--import middleware_for_tests``: a tracing-style
one (a span per handler call), a metrics-style one (counts by outcome) and one that raises.

They write what they saw into files under ``$KUBETASKS_TEST_MIDDLEWARE_DIR`` (one file per
worker process), since the tests read them from another process.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import handlers_for_tests  # noqa: F401  (the handlers these workers run)
import kubetasks
from kubetasks import TaskContext

OUT = Path(os.environ["KUBETASKS_TEST_MIDDLEWARE_DIR"])
COUNTS: collections.Counter[str] = collections.Counter()


@kubetasks.middleware
@contextlib.asynccontextmanager
async def trace(ctx: TaskContext) -> AsyncIterator[None]:
    span = {"task": ctx.id, "handler": ctx.handler, "attempt": ctx.attempt, "error": None}
    start = time.monotonic()
    try:
        yield
    except BaseException as exc:
        span["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        span["duration"] = time.monotonic() - start
        with (OUT / f"spans-{os.getpid()}.jsonl").open("a") as f:
            f.write(json.dumps(span) + "\n")


@kubetasks.middleware
@contextlib.asynccontextmanager
async def count(ctx: TaskContext) -> AsyncIterator[None]:
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        COUNTS[f"{ctx.handler} {outcome}"] += 1
        (OUT / f"counts-{os.getpid()}.json").write_text(json.dumps(COUNTS))


@kubetasks.middleware
@contextlib.asynccontextmanager
async def refuse_first_attempt(ctx: TaskContext) -> AsyncIterator[None]:
    """Fails the first attempt of ``test.add`` before the handler runs, and the first of
    ``test.record`` after it ran."""
    if ctx.handler == "test.add" and ctx.attempt == 1:
        raise OSError("span exporter unreachable")
    yield
    if ctx.handler == "test.record" and ctx.attempt == 1:
        raise OSError("metrics push failed")
