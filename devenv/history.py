"""Many Tasks stored at once through the API server: the history a cluster keeps, for tests
and benchmarks of what the operator does with it.

A restart of the operator over a day of history only shows what it costs when that history
is there. Running thousands of Tasks through workers to get it takes minutes; this module
stores them directly, as the operator and a worker would have left them: a finished Task is
created, then its ``/status`` subresource is merge-patched with the status a worker writes
when a handler succeeds on its first attempt (built by ``kubetasks.status_patches``, so the
shape cannot drift from the workers'); an unfinished Task is created and left without a
status, as one the operator has not seen yet. Nothing else is on them: a Task a worker took
within the operator's grace never gets its finalizer or a Queued status (see
``controller/deferred.py``).

Requests go out over one pooled aiohttp session (:class:`kubetasks.k8s.api.KubeApi`), at
most ``concurrency`` at once; a request the API server sheds (429, 5xx) or a dropped
connection is tried again, so a store that returns has stored every Task it was asked for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from devenv.controlplane import ClusterAccess
from kubetasks.k8s.api import ConflictError, JsonObject, KubeApi, custom_path, is_unavailable
from kubetasks.status_patches import finished_patch, running_patch
from kubetasks.vocabulary import API_VERSION, TASKS

#: Requests in flight at once. The API server is what limits the rate: on 2 cores it is busy
#: a whole core from about 32 on, and more in flight gains little (a status write costs it
#: about four times what a create does).
CONCURRENCY = 32
#: Tries of one request the API server shed or never answered, 0.2 s apart.
TRIES = 50
#: The handler of the stored Tasks, a built-in every worker has.
HANDLER = "kubetasks.echo"
#: The pod name a finished Task records as its worker.
WORKER = "history-worker-0"


@dataclass(frozen=True)
class Stored:
    """What one store did: ``count`` Tasks in ``seconds``, with ``requests`` API calls."""

    count: int
    seconds: float
    requests: int
    uids: dict[str, str]
    """Name -> uid of every Task stored."""

    @property
    def rate(self) -> float:
        """Tasks stored per second."""
        return self.count / self.seconds if self.seconds > 0 else float("inf")


def task_body(name: str, index: int, handler: str, labels: Mapping[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": metadata,
        "spec": {"handler": handler, "args": [index]},
    }


def finished_status(index: int, finished_at: float, worker: str = WORKER) -> dict[str, Any]:
    """The status patch of a Task whose handler (``kubetasks.echo`` of ``[index]``) succeeded
    on its first attempt, started 50 ms before ``finished_at``: the worker's Running patch
    and then its Succeeded one, merged as the API server merges them."""
    running = running_patch(1, worker, finished_at - 0.05)["status"]
    done = finished_patch("succeeded", 1, finished_at, result={"args": [index], "kwargs": {}})
    status = running | done["status"]
    # Nulls remove fields in a merge patch; on a Task without status they are just noise.
    return {"status": {k: v for k, v in status.items() if v is not None}}


async def _retried(
    call: Callable[[], Awaitable[JsonObject]], *, create: bool = False
) -> JsonObject | None:
    """``call()`` until it succeeds, and its answer. With ``create``, a 409 after a failed
    try means that the create which seemed lost had reached the API server: None."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except ConflictError:
            if create and attempt > 1:
                return None
            raise
        except Exception as exc:
            if not is_unavailable(exc) or attempt >= TRIES:
                raise
        await asyncio.sleep(0.2)


async def _store(
    api: KubeApi,
    namespace: str,
    names: Iterator[tuple[int, str]],
    count: int,
    *,
    finished: bool,
    handler: str,
    labels: Mapping[str, str],
    concurrency: int,
) -> Stored:
    collection = custom_path(TASKS, namespace)
    # Finished ones end 10 ms apart, the last one now: a burst that ran a moment ago.
    end = time.time()
    requests = 0
    uids: dict[str, str] = {}

    async def one(index: int, name: str) -> None:
        nonlocal requests
        body = task_body(name, index, handler, labels)
        path = custom_path(TASKS, namespace, name)
        made = await _retried(lambda: api.post(collection, body), create=True)
        if made is None:
            made = await _retried(lambda: api.get(path))
        assert made is not None
        uids[name] = made["metadata"]["uid"]
        requests += 1
        if finished:
            patch = finished_status(index, end - (count - index) * 0.01)
            await _retried(lambda: api.patch(f"{path}/status", patch))
            requests += 1

    async def client() -> None:
        for index, name in names:  # one shared iterator: each Task is taken by one client
            await one(index, name)

    began = time.monotonic()
    await asyncio.gather(*(client() for _ in range(min(concurrency, count))))
    return Stored(count, time.monotonic() - began, requests, uids)


def _names(prefix: str, count: int, start: int) -> Iterator[tuple[int, str]]:
    return ((i, f"{prefix}-{i:06d}") for i in range(start, start + count))


async def store_finished(
    api: KubeApi,
    namespace: str,
    count: int,
    *,
    prefix: str = "done",
    start: int = 0,
    handler: str = HANDLER,
    labels: Mapping[str, str] | None = None,
    concurrency: int = CONCURRENCY,
) -> Stored:
    """Store ``count`` Succeeded Tasks named ``<prefix>-<index>`` (six digits, from
    ``start``) in ``namespace``: a create and a status write each."""
    return await _store(
        api, namespace, _names(prefix, count, start), count, finished=True,
        handler=handler, labels=labels or {}, concurrency=concurrency,
    )  # fmt: skip


async def store_unfinished(
    api: KubeApi,
    namespace: str,
    count: int,
    *,
    prefix: str = "todo",
    start: int = 0,
    handler: str = HANDLER,
    labels: Mapping[str, str] | None = None,
    concurrency: int = CONCURRENCY,
) -> Stored:
    """Store ``count`` Tasks without a status, named ``<prefix>-<index>``: what the operator
    finds when it starts, still to be queued."""
    return await _store(
        api, namespace, _names(prefix, count, start), count, finished=False,
        handler=handler, labels=labels or {}, concurrency=concurrency,
    )  # fmt: skip


@dataclass(frozen=True)
class History:
    finished: Stored
    unfinished: Stored

    def __str__(self) -> str:
        return ", ".join(
            f"{s.count} {what} in {s.seconds:.1f} s ({s.rate:.0f} Tasks/s)"
            for what, s in (("finished", self.finished), ("unfinished", self.unfinished))
            if s.count
        )


async def store_history(
    access: ClusterAccess,
    namespace: str,
    *,
    finished: int = 0,
    unfinished: int = 0,
    concurrency: int = CONCURRENCY,
    finished_labels: Mapping[str, str] | None = None,
    unfinished_labels: Mapping[str, str] | None = None,
) -> History:
    """``finished`` Succeeded Tasks (``done-*``), then ``unfinished`` new ones (``todo-*``),
    with ``access``'s credentials (the control plane's ``admin``)."""
    api = KubeApi(access.configuration(), connections=concurrency)
    try:
        done = await store_finished(
            api, namespace, finished, labels=finished_labels, concurrency=concurrency
        )
        todo = await store_unfinished(
            api, namespace, unfinished, labels=unfinished_labels, concurrency=concurrency
        )
    finally:
        await api.close()
    return History(done, todo)


def store_history_sync(
    access: ClusterAccess,
    namespace: str,
    *,
    finished: int = 0,
    unfinished: int = 0,
    concurrency: int = CONCURRENCY,
    finished_labels: Mapping[str, str] | None = None,
    unfinished_labels: Mapping[str, str] | None = None,
) -> History:
    """:func:`store_history` from code without an event loop (tests, benchmarks)."""
    return asyncio.run(
        store_history(
            access, namespace, finished=finished, unfinished=unfinished,
            concurrency=concurrency, finished_labels=finished_labels,
            unfinished_labels=unfinished_labels,
        )
    )  # fmt: skip
