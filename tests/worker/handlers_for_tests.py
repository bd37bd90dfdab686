"""Handlers the worker tests register (also imported by worker subprocesses via --import)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import kubetasks
from kubetasks import PermanentTaskError, RetryTask, TaskContext

EVENTS: list[tuple[str, Any]] = []
"""What in-process handlers did, in order (tests clear it)."""


@kubetasks.task("test.record")
async def record(label: str) -> str:
    EVENTS.append(("ran", label))
    return label


@kubetasks.task("test.add")
def add(a: int, b: int) -> int:
    return a + b


@kubetasks.task("test.flaky")
async def flaky(succeed_on: int, ctx: TaskContext) -> dict[str, Any]:
    EVENTS.append(("attempt", (ctx.attempt, time.time())))
    if ctx.attempt < succeed_on:
        raise ValueError(f"attempt {ctx.attempt} fails")
    return {"attempt": ctx.attempt}


@kubetasks.task("test.retry_later")
async def retry_later(ctx: TaskContext) -> int:
    if ctx.attempt == 1:
        raise RetryTask("not yet", delay=0.3)
    return ctx.attempt


@kubetasks.task("test.permanent")
async def permanent() -> None:
    raise PermanentTaskError("this input can never work")


@kubetasks.task("test.sleep")
async def sleep(seconds: float, ctx: TaskContext) -> str:
    EVENTS.append(("started", ctx.id))
    await asyncio.sleep(seconds)
    return "slept"


@kubetasks.task("test.sync_sleep")
def sync_sleep(seconds: float, ctx: TaskContext) -> str:
    ctx.wait_cancelled(seconds)
    return "slept"


@kubetasks.task("test.not_json")
async def not_json() -> object:
    return object()


@kubetasks.task("test.mark_file")
async def mark_file(path: str, seconds: float = 0.0) -> int:
    """Append this process's pid to a file, then sleep: lets process tests see who ran what."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    await asyncio.sleep(seconds)
    return os.getpid()


@kubetasks.task("test.tally")
async def tally(path: str, seconds: float = 0.0, *, ctx: TaskContext) -> int:
    """Record "<task id> <pid>" (one O_APPEND write), then sleep: who ran what, how often."""
    with open(path, "a") as f:
        f.write(f"{ctx.id} {os.getpid()}\n")
    await asyncio.sleep(seconds)
    return os.getpid()
