"""Hooks around every handler call: tracing, metrics, per-task set-up, registered in code.

A middleware is a function of the task's :class:`~kubetasks.TaskContext` that returns an
async context manager (usually written with :func:`contextlib.asynccontextmanager`). The
worker enters every registered middleware, in registration order, before the handler runs
and leaves them in reverse order after it: the code before ``yield`` is "before", the code
after it "after", and an exception from the handler (a timeout or a cancellation included)
is raised at the ``yield``, so ``try/except/finally`` there is "on error".

A middleware that raises (entering or leaving) fails the attempt like a handler that raises:
the task is not lost, its error is a :class:`MiddlewareError` naming the middleware and the
original exception, and it is retried by the task's retry policy. A middleware that swallows
the handler's exception turns the attempt into a success with a null result.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from kubetasks.errors import ConfigurationError
from kubetasks.worker.context import TaskContext

Middleware = Callable[[TaskContext], AbstractAsyncContextManager[Any]]

_MIDDLEWARE: list[Middleware] = []


class MiddlewareError(Exception):
    """A middleware raised before or after the handler; the attempt fails with it."""


def middleware(fn: Middleware) -> Middleware:
    """Register ``fn(ctx)`` (an async context manager factory) around every handler call
    of this worker process. Registering the same function twice registers it once."""
    if not callable(fn):
        raise ConfigurationError(f"@kubetasks.middleware needs a callable, got {fn!r}")
    if fn not in _MIDDLEWARE:
        _MIDDLEWARE.append(fn)
    return fn


def any_registered() -> bool:
    """Whether any middleware is registered (without one a handler call enters nothing)."""
    return bool(_MIDDLEWARE)


def registered() -> list[Middleware]:
    return list(_MIDDLEWARE)


def clear() -> None:
    """Forget every middleware (tests)."""
    _MIDDLEWARE.clear()


def _name(fn: Middleware) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


@contextlib.asynccontextmanager
async def around(ctx: TaskContext) -> AsyncIterator[None]:
    """Enter every middleware for one handler call. An exception a middleware raises of
    its own is wrapped in :class:`MiddlewareError`; the handler's own passes through."""
    async with contextlib.AsyncExitStack() as stack:
        for fn in _MIDDLEWARE:
            try:
                await stack.enter_async_context(_guarded(fn, ctx))
            except MiddlewareError:
                raise
            except Exception as exc:
                raise MiddlewareError(
                    f"middleware {_name(fn)} failed before the handler: {type(exc).__name__}: {exc}"
                ) from exc
        yield


@contextlib.asynccontextmanager
async def _guarded(fn: Middleware, ctx: TaskContext) -> AsyncIterator[None]:
    manager = fn(ctx)
    await manager.__aenter__()
    handler_exc: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        handler_exc = exc
    try:
        if handler_exc is None:
            await manager.__aexit__(None, None, None)
            return
        suppressed = await manager.__aexit__(
            type(handler_exc), handler_exc, handler_exc.__traceback__
        )
    except BaseException as exc:
        if exc is handler_exc:
            raise
        if isinstance(exc, MiddlewareError | KeyboardInterrupt | SystemExit):
            raise
        raise MiddlewareError(
            f"middleware {_name(fn)} failed after the handler: {type(exc).__name__}: {exc}"
        ) from exc
    if not suppressed:
        raise handler_exc
