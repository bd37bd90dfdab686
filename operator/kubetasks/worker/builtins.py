"""Handlers every worker has: for smoke tests, demos and simple integrations.

``kubetasks.shell`` runs programs on the worker, so it is registered only when the worker is
started with ``--allow-shell``; everything else is always there.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from kubetasks.errors import PermanentTaskError, RetryTask
from kubetasks.worker.context import TaskContext
from kubetasks.worker.registry import task

#: Most response or output bytes a built-in returns (results are size-capped).
MAX_BODY = 16 * 1024


@task("kubetasks.echo")
async def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the arguments it was given."""
    return {"args": list(args), "kwargs": kwargs}


@task("kubetasks.sleep")
async def sleep(seconds: float = 1.0, result: Any = None) -> Any:
    """Sleep, then return ``result`` (or the number of seconds slept)."""
    await asyncio.sleep(float(seconds))
    return seconds if result is None else result


@task("kubetasks.fail")
async def fail(
    message: str = "failed on purpose",
    *,
    permanent: bool = False,
    succeed_on_attempt: int | None = None,
    seconds: float = 0.0,
    ctx: TaskContext,
) -> Any:
    """Raise an error; with ``succeed_on_attempt`` succeed from that attempt on (for demos
    of retries). ``permanent`` fails without retrying; ``seconds`` works that long first."""
    if seconds > 0:
        await asyncio.sleep(seconds)
    if succeed_on_attempt is not None and ctx.attempt >= succeed_on_attempt:
        return {"succeeded_on_attempt": ctx.attempt}
    if permanent:
        raise PermanentTaskError(message)
    raise RuntimeError(message)


@task("kubetasks.http")
async def http(
    url: str,
    method: str = "GET",
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
    body: str | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Make an HTTP request. 5xx, 429 and connection errors are retried; other 4xx fail."""
    if not url.startswith(("http://", "https://")):
        raise PermanentTaskError(f"url must start with http:// or https://, got {url!r}")
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.request(method, url, headers=headers, json=json, data=body) as response,
        ):
            text = (await response.read())[:MAX_BODY].decode(errors="replace")
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RetryTask(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
    if status >= 500 or status == 429:
        raise RetryTask(f"{method} {url} answered {status}")
    if status >= 400:
        raise PermanentTaskError(f"{method} {url} answered {status}: {text[:200]}")
    return {"status": status, "body": text}


async def shell(command: list[str], *, timeout: float | None = None, ctx: TaskContext) -> Any:
    """Run a program (a list of arguments; no shell). A non-zero exit fails the attempt."""
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise PermanentTaskError("command must be a non-empty list of strings")
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    result: dict[str, Any] = {
        "returncode": proc.returncode,
        "stdout": out[-MAX_BODY:].decode(errors="replace"),
        "stderr": err[-MAX_BODY:].decode(errors="replace"),
    }
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {proc.returncode}: {result['stderr'][-500:]}")
    return result


def enable_shell() -> None:
    """Register ``kubetasks.shell`` (only with the worker's explicit ``--allow-shell``)."""
    task("kubetasks.shell")(shell)
