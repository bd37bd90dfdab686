"""Handlers by name: the ``@kubetasks.task`` decorator and the lookup the worker uses.

A task names its handler with a string (``"email.send"``), not an import path, so producers
need no access to the handler's code and a renamed function keeps its registered name.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from kubetasks.errors import ConfigurationError, HandlerNotFoundError
from kubetasks.outcome import InvalidArgumentsError

F = TypeVar("F", bound=Callable[..., Any])

#: The parameter name through which a handler asks for its :class:`TaskContext`.
CONTEXT_PARAMETER = "ctx"


@dataclass(frozen=True, slots=True)
class Handler:
    name: str
    fn: Callable[..., Any]
    is_async: bool
    wants_context: bool
    signature: inspect.Signature
    bare: bool = False
    """It takes no arguments (but the context): a task without any needs no check."""

    def bind(self, args: list[Any], kwargs: dict[str, Any], ctx: object) -> dict[str, Any]:
        """Check the task's arguments against the signature before running anything.

        Returns the keyword arguments to add (the context). Raises
        :class:`InvalidArgumentsError` naming the mismatch, so a task sent with the wrong
        arguments fails at once with a clear error instead of being retried.
        """
        extra = {CONTEXT_PARAMETER: ctx} if self.wants_context else {}
        if self.bare and not args and not kwargs:
            return extra
        try:
            self.signature.bind(*args, **kwargs, **extra)
        except TypeError as exc:
            raise InvalidArgumentsError(
                f"arguments do not fit handler {self.name!r}: {exc}"
            ) from None
        return extra


_REGISTRY: dict[str, Handler] = {}


def task(name: str) -> Callable[[F], F]:
    """Register a function (sync or async) as the handler called ``name``.

    The handler receives the task's ``args`` and ``kwargs``; a parameter named ``ctx``
    receives the :class:`~kubetasks.TaskContext`. Its return value must be JSON-serializable.
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError("@kubetasks.task needs a handler name, e.g. @task('email.send')")

    def register(fn: F) -> F:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.fn is not fn and _origin(existing.fn) != _origin(fn):
            raise ConfigurationError(
                f"handler name {name!r} is already registered by {_origin(existing.fn)}"
            )
        signature = inspect.signature(fn)
        wants_context = CONTEXT_PARAMETER in signature.parameters
        _REGISTRY[name] = Handler(
            name=name,
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn),
            wants_context=wants_context,
            signature=signature,
            bare=_fits(signature, {CONTEXT_PARAMETER: None} if wants_context else {}),
        )
        return fn

    return register


def _fits(signature: inspect.Signature, kwargs: dict[str, Any]) -> bool:
    try:
        signature.bind(**kwargs)
    except TypeError:
        return False
    return True


def _origin(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


#: Built-in handlers a worker registers only when told to, and how to tell it.
OPT_IN = {
    "kubetasks.http": "start the worker with --allow-http (WorkerPool spec.allowHttp: true)",
    "kubetasks.shell": "start the worker with --allow-shell",
}


def get(name: str) -> Handler:
    try:
        return _REGISTRY[name]
    except KeyError:
        how = OPT_IN.get(name, "is its module in --import?")
        raise HandlerNotFoundError(
            f"no handler registered as {name!r} in this worker ({how})"
        ) from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def import_modules(modules: Iterable[str]) -> None:
    """Import the user's handler modules so their decorators run."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import handler module {module!r}: {exc}") from exc
