"""Example handlers shipped in the kubetasks worker image (module ``example_handlers``).

They show the shapes a handler can take; a WorkerPool loads them with
``imports: [example_handlers]``, and Tasks name them by their registered names::

    apiVersion: kubetasks.dev/v1alpha1
    kind: Task
    metadata: {name: add-two-numbers}
    spec:
      handler: example.add
      args: [2, 3]

Your own module works the same way: see worker_image/README.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from typing import Any

import kubetasks


@kubetasks.task("example.add")
def add(a: float, b: float) -> float:
    """A plain sync function: positional ``args`` in, a JSON value out."""
    return a + b


@kubetasks.task("example.greet")
async def greet(name: str, *, greeting: str = "Hello") -> str:
    """An async handler taking ``kwargs`` as well (``kwargs: {greeting: Hi}``)."""
    await asyncio.sleep(0)
    return f"{greeting}, {name}!"


@kubetasks.task("example.checksum")
def checksum(text: str, *, rounds: int = 1, ctx: kubetasks.TaskContext) -> dict[str, Any]:
    """A CPU-bound sync handler that asks for its context: it logs, and it stops early when
    the task is cancelled (``spec.cancel: true`` or the Task is deleted)."""
    digest = text.encode()
    for done in range(rounds):
        ctx.raise_if_cancelled()
        digest = hashlib.sha256(digest).digest()
        if done and done % 100_000 == 0:
            ctx.logger.info("task %s: %d of %d rounds", ctx.id, done, rounds)
    return {"sha256": digest.hex(), "rounds": rounds, "attempt": ctx.attempt}


@kubetasks.task("example.flaky")
def flaky(succeed_on_attempt: int = 2, *, ctx: kubetasks.TaskContext) -> str:
    """Fails until a given attempt, to watch retries happen (``status.attempts``)."""
    if ctx.attempt < succeed_on_attempt:
        raise kubetasks.RetryTask(f"attempt {ctx.attempt} fails on purpose", delay=1.0)
    return f"succeeded on attempt {ctx.attempt}"


@kubetasks.task("example.validate")
def validate(order: dict[str, Any]) -> dict[str, Any]:
    """Bad input is a permanent failure: retrying cannot fix it."""
    if order.get("quantity", 0) <= 0:
        raise kubetasks.PermanentTaskError(f"quantity must be positive, got {order!r}")
    return {"accepted": True, "at": time.time()}


@kubetasks.task("example.where")
async def where(seconds: float = 0.0, *, ctx: kubetasks.TaskContext) -> dict[str, Any]:
    """Where and when the task ran: the pod and namespace (from the downward API the
    operator sets), the attempt, and the start and end times (epoch seconds), holding the
    task ``seconds`` in between. Handy to see how a queue's cap or rate limit spreads work
    over the pods of a pool."""
    started = time.time()
    if seconds > 0:
        await asyncio.sleep(seconds)
    return {
        "pod": os.environ.get("POD_NAME"),
        "namespace": os.environ.get("POD_NAMESPACE"),
        "attempt": ctx.attempt,
        "started": started,
        "ended": time.time(),
    }
