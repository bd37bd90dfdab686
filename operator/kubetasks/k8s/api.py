"""Kubernetes API access for kubetasks' own code (the operator's kopf machinery has its own).

The official client is synchronous; its calls run on a small thread pool so the event loop
never blocks, and writes skip response deserialization (``_preload_content=False``), which
is most of the client's cost per call.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubetasks.errors import ConfigurationError

GROUP = "kubetasks.dev"
VERSION = "v1alpha1"
TASKS, PERIODIC_TASKS, WORKER_POOLS = "tasks", "periodictasks", "workerpools"

T = TypeVar("T")


def load_api_client(threads: int = 16) -> client.ApiClient:
    """In-cluster service account if there is one, else the kubeconfig ($KUBECONFIG)."""
    configuration = client.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(client_configuration=configuration)
    except config.ConfigException as exc:
        raise ConfigurationError(
            f"no Kubernetes credentials: not in a cluster and no usable kubeconfig ({exc})"
        ) from exc
    configuration.connection_pool_maxsize = threads
    return client.ApiClient(configuration)


class KubeApi:
    def __init__(self, api_client: client.ApiClient | None = None, *, threads: int = 16) -> None:
        self.api_client = api_client or load_api_client(threads)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kubetasks-api")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()


def status_code(exc: BaseException) -> int | None:
    return exc.status if isinstance(exc, ApiException) else None


def reason_text(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}: {(exc.body or '')[:500]!s}"
    return f"{type(exc).__name__}: {exc}"
