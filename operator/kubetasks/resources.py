"""Submit Tasks and TaskSets as resources from Python, and wait for their outcome.

The Redis client (``kubetasks.client``) is the fast path: a task there is a Redis record
only. This client does what ``kubectl apply`` does instead: each task is a Task object (or
many are one TaskSet), so it has ``kubectl get``, events, RBAC, ``dependsOn`` and repair
after Redis data loss, at the API server's cost of a create and a status write per Task (a
TaskSet costs a few writes for all its items). The options are the Redis client's
(:class:`~kubetasks.client.TaskRequest`), plus what only a resource has (a name, labels,
``depends_on``, a TTL); the manifest is built with the resource models, and every rule
across fields is the CRD's, checked by the API server (its refusal names the field).

A handle's ``result()`` watches the object (one watch, not polling) until a final phase and
returns the result, or raises :class:`~kubetasks.errors.TaskFailedError` as the Redis
client does. :class:`AsyncResourceClient` is the API for async code;
:class:`ResourceClient` runs it on a private event loop in a thread of its own, so it may be
shared by every thread of a process.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from kubetasks.client import TaskRequest, _epoch, _request
from kubetasks.errors import ConfigurationError, TaskFailedError, TaskNotFoundError
from kubetasks.k8s.api import KubeApi, context_namespace
from kubetasks.k8s.submit import GoneError, ResourceApi
from kubetasks.models.periodictask import TaskTemplateMetadata
from kubetasks.models.task import RetryBackoff, TaskSpec
from kubetasks.models.taskset import SuccessPolicy, TaskSetItem, TaskSetSpec, TaskSetTemplate
from kubetasks.queue import Broker
from kubetasks.settings import NAMESPACE, POD_NAMESPACE, redis_url
from kubetasks.settings import namespace as namespace_setting
from kubetasks.timestamps import rfc3339
from kubetasks.vocabulary import API_VERSION, FINAL_PHASES, TASKS, TASKSETS, TaskSetPhase

T = TypeVar("T")

#: Options of a resource that the Redis client has no word for.
RESOURCE_OPTIONS = frozenset(
    {"name", "labels", "depends_on", "dependency_results", "dependency_timeout", "ttl"}
)
#: Options of a TaskSet beyond its template's.
SET_OPTIONS = frozenset({"parallelism", "min_succeeded"})
SET_FINAL = (TaskSetPhase.SUCCEEDED, TaskSetPhase.FAILED, TaskSetPhase.CANCELLED)


def _seconds(value: float | None) -> int | None:
    """Whole seconds, rounded up (a resource counts in seconds; waiting longer is safe)."""
    return None if value is None else math.ceil(value)


def _time(value: Any) -> str | None:
    epoch = _epoch(value)
    return None if epoch is None else rfc3339(epoch)


def generate_prefix(handler: str) -> str:
    """A ``generateName`` prefix from a handler name (``email.send`` -> ``email-send-``)."""
    stem = re.sub(r"[^a-z0-9]+", "-", handler.lower()).strip("-")[:50] or "task"
    return stem + "-"


def task_spec(request: TaskRequest, resource: Mapping[str, Any]) -> TaskSpec:
    """The Task spec of a request (the Redis client's options) and the resource options."""
    if request.task_id is not None:
        raise ConfigurationError("task_id is the Redis client's: a resource takes name=...")
    backoff = request.backoff
    fields: dict[str, Any] = {
        "handler": request.handler,
        "args": list(request.args),
        "kwargs": dict(request.kwargs),
        "queue": request.queue,
        "priority": request.priority,
        "max_retries": request.max_retries,
        "timeout_seconds": _seconds(request.timeout),
        "deadline": _time(request.deadline),
        "run_at": _time(request.run_at),
        "delay_seconds": _seconds(request.delay),
        "unique_key": request.unique_key,
        "unique_for_seconds": request.unique_for,
        "depends_on": list(resource["depends_on"]) if resource.get("depends_on") else None,
        "dependency_timeout_seconds": resource.get("dependency_timeout"),
        "dependency_results": resource.get("dependency_results"),
        "ttl_seconds_after_finished": resource.get("ttl"),
    }
    if request.unique_for is not None and request.unique_key is None:
        fields["unique_key"] = request.to_message(0).unique_key  # the Redis client's default
    if backoff != type(backoff)():
        fields["retry_backoff"] = RetryBackoff(
            base_seconds=backoff.base, max_seconds=backoff.cap, jitter=backoff.jitter
        )
    return TaskSpec.model_validate({k: v for k, v in fields.items() if v is not None})


def _split(options: Mapping[str, Any], extra: frozenset[str]) -> tuple[dict[str, Any], ...]:
    resource = {k: v for k, v in options.items() if k in RESOURCE_OPTIONS | extra}
    rest = {k: v for k, v in options.items() if k not in RESOURCE_OPTIONS | extra}
    return resource, rest


def _metadata(resource: Mapping[str, Any], handler: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if resource.get("name"):
        meta["name"] = resource["name"]
    else:
        meta["generateName"] = generate_prefix(handler)
    if resource.get("labels"):
        meta["labels"] = dict(resource["labels"])
    return meta


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, exclude_unset=True, mode="json")


def task_manifest(handler: str, args: Sequence[Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The Task a call ``create_task(handler, *args, **options)`` submits. Options are
    :class:`~kubetasks.client.TaskRequest`'s (but ``task_id``) and :data:`RESOURCE_OPTIONS`;
    any other keyword is a kwarg of the handler."""
    resource, rest = _split(options, frozenset())
    spec = task_spec(_request(handler, args, rest), resource)
    return {
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": _metadata(resource, handler),
        "spec": _dump(spec),
    }


def _item(item: Sequence[Any] | Mapping[str, Any]) -> TaskSetItem:
    if isinstance(item, Mapping):
        unknown = set(item) - {"args", "kwargs"}
        if unknown:
            raise ConfigurationError(
                f"a TaskSet item is a list of args or {{'args': [...], 'kwargs': {{...}}}};"
                f" got the keys {sorted(unknown)}"
            )
        return TaskSetItem.model_validate(dict(item))
    if isinstance(item, str | bytes):
        raise ConfigurationError(f"a TaskSet item is a list of args, not the string {item!r}")
    return TaskSetItem(args=list(item))


def taskset_manifest(
    handler: str,
    items: Iterable[Sequence[Any] | Mapping[str, Any]] | None,
    count: int | None,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The TaskSet a call ``create_taskset(handler, items=..., count=..., **options)``
    submits: the template from the options as for a Task (its ``args``/``kwargs`` option
    keys are the template's), plus ``parallelism`` and ``min_succeeded``."""
    if (items is None) == (count is None):
        raise ConfigurationError("give either items or count, not both and not neither")
    resource, rest = _split(options, SET_OPTIONS)
    args = rest.pop("args", ())
    template_only = {k: resource[k] for k in ("dependency_timeout",) if k in resource}
    spec = task_spec(_request(handler, args, rest), template_only)
    labels = resource.get("labels")
    fields: dict[str, Any] = {
        "template": TaskSetTemplate(
            spec=spec, **({"metadata": TaskTemplateMetadata(labels=dict(labels))} if labels else {})
        ),
        "items": [_item(i) for i in items] if items is not None else None,
        "count": count,
        "parallelism": resource.get("parallelism"),
        "success_policy": (
            SuccessPolicy(min_succeeded=resource["min_succeeded"])
            if resource.get("min_succeeded")
            else None
        ),
        "depends_on": list(resource["depends_on"]) if resource.get("depends_on") else None,
        "ttl_seconds_after_finished": resource.get("ttl"),
    }
    if resource.get("dependency_results"):
        raise ConfigurationError(
            "dependency_results is not supported on a TaskSet: its items do not receive results"
        )
    set_spec = TaskSetSpec.model_validate({k: v for k, v in fields.items() if v is not None})
    return {
        "apiVersion": API_VERSION,
        "kind": "TaskSet",
        "metadata": _metadata(resource, handler),
        "spec": _dump(set_spec),
    }


def _phase(body: Mapping[str, Any]) -> str | None:
    return (body.get("status") or {}).get("phase")


def task_outcome(body: Mapping[str, Any]) -> Any:
    """The result of a finished Task, or :class:`TaskFailedError` for any other end."""
    status = body.get("status") or {}
    if status.get("phase") != "Succeeded":
        raise TaskFailedError(
            body["metadata"]["name"], str(status.get("phase")), status.get("error")
        )
    return status.get("result")


def _set_error(body: Mapping[str, Any]) -> TaskFailedError:
    status = body.get("status") or {}
    error = {"type": "TaskSet" + str(status.get("phase")), "message": status.get("error") or ""}
    if status.get("failures"):
        error["failures"] = status["failures"]
    return TaskFailedError(body["metadata"]["name"], str(status.get("phase")), error)


class AsyncResourceHandle:
    """A submitted Task or TaskSet: its kind, name and stored body, and its outcome."""

    def __init__(self, client: AsyncResourceClient, body: dict[str, Any]) -> None:
        self._client = client
        self.kind: str = body["kind"]
        self.name: str = body["metadata"]["name"]
        self.namespace: str = body["metadata"]["namespace"]
        self.uid: str = body["metadata"]["uid"]
        self.body = body
        """The object as the API server stored it on create."""

    def __repr__(self) -> str:
        return f"<{self.kind} {self.namespace}/{self.name}>"

    @property
    def dependency(self) -> str:
        """How ``depends_on`` names this object (``taskset/<name>`` for a TaskSet)."""
        return f"taskset/{self.name}" if self.kind == "TaskSet" else self.name

    async def status(self) -> dict[str, Any]:
        """The object's status now ({} before the operator wrote any)."""
        body = await self._client._api(self.kind).get(self.namespace, self.name)
        if body is None:
            raise TaskNotFoundError(f"{self.kind} {self.namespace}/{self.name} does not exist")
        return dict(body.get("status") or {})

    async def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """The object once it reached a final phase (a watch of it; TimeoutError after
        ``timeout`` seconds; TaskNotFoundError when it is deleted first)."""
        final = FINAL_PHASES if self.kind == "Task" else SET_FINAL
        try:
            async with asyncio.timeout(timeout):
                return await self._client._api(self.kind).wait(
                    self.namespace, self.name, lambda b: _phase(b) in final
                )
        except GoneError as exc:
            raise TaskNotFoundError(str(exc)) from exc
        except TimeoutError:
            raise TimeoutError(
                f"{self.kind} {self.namespace}/{self.name} not finished after {timeout}s"
            ) from None

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the end; return the result, or raise :class:`TaskFailedError`.

        A Task's result is ``status.result``. A TaskSet's is the list of its items' results
        by index (``None`` for an item without one), read from Redis where the set keeps
        them, as a chord's callback receives it; a set that did not succeed raises."""
        body = await self.wait(timeout)
        if self.kind == "Task":
            return task_outcome(body)
        if _phase(body) != TaskSetPhase.SUCCEEDED:
            raise _set_error(body)
        return await self._client.taskset_results(body)


class AsyncResourceClient:
    """Create Tasks and TaskSets in one namespace: ``namespace``, else
    ``$KUBETASKS_NAMESPACE``, else the pod's own, else the kubeconfig context's, else
    ``default``. Credentials as ``kubectl``'s (kubeconfig, or the service account in a pod).
    ``redis_url`` is read only by a TaskSet handle's ``result()``."""

    def __init__(
        self,
        *,
        namespace: str | None = None,
        api: KubeApi | None = None,
        redis_url: str | None = None,
    ) -> None:
        self.namespace = namespace_setting(namespace or _own_namespace())
        self.api = api or KubeApi()
        self._owns_api = api is None
        self._tasks = ResourceApi(self.api, TASKS)
        self._sets = ResourceApi(self.api, TASKSETS)
        self._redis_url = redis_url
        self._broker: Broker | None = None

    def _api(self, kind: str) -> ResourceApi:
        return self._tasks if kind == "Task" else self._sets

    async def close(self) -> None:
        if self._owns_api:
            await self.api.close()
        if self._broker is not None:
            await self._broker.close()
            self._broker = None

    async def __aenter__(self) -> AsyncResourceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def create_task(self, handler: str, *args: Any, **options: Any) -> AsyncResourceHandle:
        """Create a Task: ``create_task("email.send", "a@example.com", queue="mail",
        delay=10, depends_on=["fetch"], subject="hi")``. Options as
        :func:`task_manifest`; raises :class:`~kubetasks.k8s.api.ApiError` (InvalidError,
        ConflictError, ...) when the API server refuses it."""
        return await self.submit(task_manifest(handler, args, options))

    async def create_taskset(
        self,
        handler: str,
        items: Iterable[Sequence[Any] | Mapping[str, Any]] | None = None,
        *,
        count: int | None = None,
        **options: Any,
    ) -> AsyncResourceHandle:
        """Create a TaskSet: ``create_taskset("images.resize", [["a.png"], ["b.png"]],
        parallelism=100, width=640)`` or ``count=10_000`` (each run gets ``ctx.index``)."""
        return await self.submit(taskset_manifest(handler, items, count, options))

    async def submit(self, manifest: dict[str, Any]) -> AsyncResourceHandle:
        """Create a Task or TaskSet from its manifest (as the ``*_manifest`` functions and the
        canvas build them)."""
        stored = await self._api(manifest["kind"]).create(self.namespace, manifest)
        stored.setdefault("kind", manifest["kind"])
        return AsyncResourceHandle(self, stored)

    def handle(self, kind: str, name: str) -> AsyncResourceHandle:
        """A handle of an existing Task or TaskSet, to wait for it."""
        if kind not in ("Task", "TaskSet"):
            raise ConfigurationError(f"kind must be Task or TaskSet, got {kind!r}")
        meta = {"name": name, "namespace": self.namespace, "uid": ""}
        return AsyncResourceHandle(self, {"kind": kind, "metadata": meta})

    async def taskset_results(self, body: Mapping[str, Any]) -> list[Any]:
        """A TaskSet's results by index, from Redis (``None`` for an item without one)."""
        if self._broker is None:
            self._broker = Broker.from_url(redis_url(self._redis_url), namespace=self.namespace)
        spec = body["spec"]
        queue = spec["template"]["spec"].get("queue", "default")
        total = len(spec["items"]) if spec.get("items") else int(spec["count"])
        found = await self._broker.taskset_results(queue, body["metadata"]["uid"])
        return [json.loads(found[i]) if i in found else None for i in range(total)]


def _own_namespace() -> str | None:
    """The kubeconfig context's namespace when no setting names one (what kubectl uses)."""
    if NAMESPACE.get() or POD_NAMESPACE.get():
        return None
    return context_namespace()


class _Loop:
    """A private event loop in a daemon thread: the sync client's calls run there, so any
    number of threads may wait on it at once."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            call.close()
            raise ConfigurationError(
                "kubetasks.ResourceClient is synchronous: use AsyncResourceClient in async code"
            )
        future: Future[T] = asyncio.run_coroutine_threadsafe(call, self.loop)
        return future.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class ResourceHandle:
    """Synchronous face of :class:`AsyncResourceHandle`."""

    def __init__(self, loop: _Loop, handle: AsyncResourceHandle) -> None:
        self._loop = loop
        self.aio = handle
        self.kind, self.name, self.namespace = handle.kind, handle.name, handle.namespace
        self.uid, self.body, self.dependency = handle.uid, handle.body, handle.dependency

    def __repr__(self) -> str:
        return repr(self.aio)

    def status(self) -> dict[str, Any]:
        return self._loop.run(self.aio.status())

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        return self._loop.run(self.aio.wait(timeout))

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the end; return the result or raise :class:`TaskFailedError`."""
        return self._loop.run(self.aio.result(timeout))


class ResourceClient:
    """Create Tasks and TaskSets from synchronous code, as :class:`AsyncResourceClient`."""

    def __init__(self, *, namespace: str | None = None, redis_url: str | None = None) -> None:
        self._loop = _Loop()

        async def make() -> AsyncResourceClient:
            return AsyncResourceClient(namespace=namespace, redis_url=redis_url)

        try:
            self.aio = self._loop.run(make())
        except BaseException:
            self._loop.stop()
            raise
        self.namespace = self.aio.namespace

    def close(self) -> None:
        self._loop.run(self.aio.close())
        self._loop.stop()

    def __enter__(self) -> ResourceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wrap(self, handle: AsyncResourceHandle) -> ResourceHandle:
        return ResourceHandle(self._loop, handle)

    def create_task(self, handler: str, *args: Any, **options: Any) -> ResourceHandle:
        return self._wrap(self._loop.run(self.aio.create_task(handler, *args, **options)))

    def create_taskset(
        self,
        handler: str,
        items: Iterable[Sequence[Any] | Mapping[str, Any]] | None = None,
        *,
        count: int | None = None,
        **options: Any,
    ) -> ResourceHandle:
        return self._wrap(
            self._loop.run(self.aio.create_taskset(handler, items, count=count, **options))
        )

    def submit(self, manifest: dict[str, Any]) -> ResourceHandle:
        return self._wrap(self._loop.run(self.aio.submit(manifest)))

    def handle(self, kind: str, name: str) -> ResourceHandle:
        return self._wrap(self.aio.handle(kind, name))
