"""A small canvas on resources: chains, groups and chords compiled into ``dependsOn``.

``signature(handler, *args, **options)`` is one call to make later (options as
``ResourceClient.create_task``'s). ``chain(a, b, c)`` runs each step after the previous
one succeeded and hands it the previous result (``dependencyResults: Args``: prepended to
its args). ``group(s1, s2, ...)`` is one TaskSet: the signatures share a handler and options
and differ in args/kwargs, which become the set's items (``group(s, count=n)`` runs ``s``
n times). ``chord(group, callback)`` runs the callback after the set succeeded, with the
set's results (a list by index) as its first argument (``dependsOn: taskset/<name>``).

Nothing here runs anything: :func:`manifests` compiles a canvas into Task and TaskSet
manifests with names derived from one prefix (so each ``dependsOn`` can name its
predecessor before it exists), and :func:`submit` / :func:`submit_async` create them through
the resource client. The operator then does the rest, as for manifests a user applied.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubetasks.client import _REQUEST_FIELDS
from kubetasks.errors import ConfigurationError
from kubetasks.resources import (
    RESOURCE_OPTIONS,
    SET_OPTIONS,
    AsyncResourceClient,
    AsyncResourceHandle,
    ResourceClient,
    ResourceHandle,
    generate_prefix,
    task_manifest,
    taskset_manifest,
)


@dataclass(frozen=True)
class Signature:
    """One call to make: a handler, its arguments and the resource options."""

    handler: str
    args: tuple[Any, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    """``create_task``'s options; keys it does not know are the handler's kwargs."""


@dataclass(frozen=True)
class Group:
    """Signatures of one handler and options: one TaskSet whose items are their arguments."""

    signatures: tuple[Signature, ...]
    count: int | None = None


@dataclass(frozen=True)
class Chord:
    """A group and the callback that receives its results."""

    group: Group
    callback: Signature


@dataclass(frozen=True)
class Chain:
    """Steps run one after the other, each given the previous one's result."""

    steps: tuple[Signature | Group | Chord, ...]


Canvas = Signature | Group | Chord | Chain


def signature(handler: str, *args: Any, **options: Any) -> Signature:
    """``signature("email.send", "a@example.com", queue="mail", subject="hi")``."""
    return Signature(handler, tuple(args), dict(options))


def group(*signatures: Signature, count: int | None = None) -> Group:
    """One TaskSet: an item per signature, or ``count`` runs of the only one."""
    if not signatures:
        raise ConfigurationError("group() needs at least one signature")
    if not all(isinstance(s, Signature) for s in signatures):
        raise ConfigurationError("a group holds signatures only (one TaskSet runs one template)")
    if count is not None and len(signatures) != 1:
        raise ConfigurationError("group(signature, count=n) takes exactly one signature")
    first = signatures[0]
    for other in signatures[1:]:
        if other.handler != first.handler:
            raise ConfigurationError(
                f"a group is one TaskSet, so one handler: {first.handler!r} and"
                f" {other.handler!r} differ (chain or submit them separately)"
            )
        if _template_options(other) != _template_options(first):
            raise ConfigurationError(
                f"the signatures of a group must share their options (they become the"
                f" TaskSet's template): {_template_options(first)} != {_template_options(other)}"
            )
    return Group(tuple(signatures), count)


def chord(header: Group, callback: Signature) -> Chord:
    """Run ``callback`` once ``header``'s set succeeded, with its results first in args."""
    if not isinstance(header, Group) or not isinstance(callback, Signature):
        raise ConfigurationError("chord(group(...), signature(...)): a group, then a signature")
    return Chord(header, callback)


def chain(*steps: Canvas) -> Chain:
    """Run ``steps`` in order; each receives the previous one's result (nested chains are
    flattened)."""
    flat: list[Signature | Group | Chord] = []
    for step in steps:
        if isinstance(step, Chain):
            flat.extend(step.steps)
        elif isinstance(step, Signature | Group | Chord):
            flat.append(step)
        else:
            raise ConfigurationError(f"a chain step is a signature, group or chord, not {step!r}")
    if not flat:
        raise ConfigurationError("chain() needs at least one step")
    return Chain(tuple(flat))


def _template_options(sig: Signature) -> dict[str, Any]:
    """A signature's options but its kwargs (the item's): what the set's template holds."""
    known = _REQUEST_FIELDS | RESOURCE_OPTIONS | SET_OPTIONS
    return {k: v for k, v in sig.options.items() if k in known}


def _kwargs(sig: Signature) -> dict[str, Any]:
    options = _template_options(sig)
    return {k: v for k, v in sig.options.items() if k not in options}


def _after(options: Mapping[str, Any], dependency: str | None) -> dict[str, Any]:
    """Options with ``dependency`` added to ``depends_on``."""
    merged = dict(options)
    if dependency is not None:
        merged["depends_on"] = [*merged.get("depends_on", ()), dependency]
    return merged


class _Compiler:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.out: list[dict[str, Any]] = []

    def name(self) -> str:
        return f"{self.prefix}-{len(self.out)}"

    def task(self, sig: Signature, after: str | None, *, pass_result: bool) -> str:
        options = _after(sig.options, after)
        if pass_result and after is not None and not after.startswith("taskset/"):
            options.setdefault("dependency_results", "Args")
        name = self.name()
        self.out.append(task_manifest(sig.handler, sig.args, {**options, "name": name}))
        return name

    def taskset(self, grp: Group, after: str | None) -> str:
        first = grp.signatures[0]
        options = _after(_template_options(first), after)
        name = self.name()
        if grp.count is not None:
            options.update(_kwargs(first), args=first.args)
            items = None
        else:
            items = [{"args": list(s.args), "kwargs": _kwargs(s)} for s in grp.signatures]
        self.out.append(
            taskset_manifest(first.handler, items, grp.count, {**options, "name": name})
        )
        return "taskset/" + name

    def node(self, node: Signature | Group | Chord, after: str | None) -> str:
        if isinstance(node, Signature):
            return self.task(node, after, pass_result=True)
        if isinstance(node, Group):
            return self.taskset(node, after)
        return self.task(node.callback, self.taskset(node.group, after), pass_result=True)


def manifests(canvas: Canvas, prefix: str | None = None) -> list[dict[str, Any]]:
    """The Task and TaskSet manifests of ``canvas``, in dependency order, named
    ``<prefix>-0``, ``<prefix>-1``, ... (default prefix: the first handler and a random
    suffix). The last one is the canvas's outcome."""
    steps = canvas.steps if isinstance(canvas, Chain) else (canvas,)
    first = steps[0]
    handler = (
        first.handler
        if isinstance(first, Signature)
        else (
            first.signatures[0] if isinstance(first, Group) else first.group.signatures[0]
        ).handler
    )
    compiler = _Compiler(prefix or generate_prefix(handler) + secrets.token_hex(3))
    after: str | None = None
    for step in steps:
        after = compiler.node(step, after)
    return compiler.out


@dataclass
class Submitted:
    """The resources a canvas became; ``result()`` is the last one's."""

    handles: Sequence[ResourceHandle]

    @property
    def last(self) -> ResourceHandle:
        return self.handles[-1]

    def result(self, timeout: float | None = None) -> Any:
        return self.last.result(timeout)


@dataclass
class AsyncSubmitted:
    """The resources a canvas became; ``await result()`` is the last one's."""

    handles: Sequence[AsyncResourceHandle]

    @property
    def last(self) -> AsyncResourceHandle:
        return self.handles[-1]

    async def result(self, timeout: float | None = None) -> Any:
        return await self.last.result(timeout)


def submit(client: ResourceClient, canvas: Canvas, prefix: str | None = None) -> Submitted:
    """Create the resources of ``canvas`` through ``client``."""
    return Submitted([client.submit(m) for m in manifests(canvas, prefix)])


async def submit_async(
    client: AsyncResourceClient, canvas: Canvas, prefix: str | None = None
) -> AsyncSubmitted:
    """Create the resources of ``canvas`` through ``client``."""
    return AsyncSubmitted([await client.submit(m) for m in manifests(canvas, prefix)])
