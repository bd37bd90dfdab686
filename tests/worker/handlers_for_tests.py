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


@kubetasks.task("test.item")
async def item(
    *args: Any,
    fail: list[int] | None = None,
    flaky: list[int] | None = None,
    log: str | None = None,
    seconds: float = 0.0,
    pad: int = 0,
    ctx: TaskContext,
) -> dict[str, Any]:
    """A TaskSet item: returns its index, set name and arguments. Indexes in ``fail`` fail
    for good; those in ``flaky`` fail their first attempt. With ``log``, appends
    "start <index>" and "end <index>" lines (one O_APPEND write each) around ``seconds`` of
    work, so a test can replay how many ran at once."""
    if log:
        with open(log, "a") as f:
            f.write(f"start {ctx.index} {ctx.attempt}\n")
    await asyncio.sleep(seconds)
    if log:
        with open(log, "a") as f:
            f.write(f"end {ctx.index} {ctx.attempt}\n")
    if ctx.index in (fail or []):
        raise PermanentTaskError(f"item {ctx.index} fails on purpose")
    if ctx.index in (flaky or []) and ctx.attempt == 1:
        raise RuntimeError(f"item {ctx.index} fails its first attempt")
    result: dict[str, Any] = {"index": ctx.index, "taskset": ctx.taskset, "args": list(args)}
    if pad:
        result["pad"] = "x" * pad
    return result


@kubetasks.task("test.sum_results")
async def sum_results(results: list[Any], *args: Any) -> dict[str, Any]:
    """A chord's callback: the set's results arrive as the first argument."""
    indexes = [r["index"] for r in results if r is not None]
    return {"count": len(results), "sum": sum(indexes), "nulls": results.count(None)}


@kubetasks.task("test.read_results")
async def read_results(reference: dict[str, Any], *, ctx: TaskContext) -> dict[str, Any]:
    """A chord's callback for a set whose results are too large to pass: reads them."""
    results = await ctx.taskset_results(reference)
    indexes = [r["index"] for r in results if r is not None]
    return {"reference": reference["resultsTooLarge"], "indexes": indexes}


@kubetasks.task("test.progress")
async def progress(steps: int, seconds: float, ctx: TaskContext) -> int:
    for step in range(1, steps + 1):
        ctx.progress(step / steps, f"step {step} of {steps}")
        await asyncio.sleep(seconds / steps)
    return steps


@kubetasks.task("test.halfway")
async def halfway(release: str, ctx: TaskContext) -> int | None:
    """Reports 0.01, 0.02 .. 0.5 in a tight loop (the worker coalesces them), then waits
    until the file ``release`` exists."""
    for step in range(1, 51):
        ctx.progress(step / 100, f"step {step}")
    while True:
        if await asyncio.to_thread(os.path.exists, release):
            return ctx.index
        await asyncio.sleep(0.05)


@kubetasks.task("test.needs_file")
async def needs_file(path: str) -> str:
    """Fails (FileNotFoundError, with a traceback) until ``path`` exists, then returns it."""
    with open(path) as f:
        return f.read()
