"""Kubernetes API access for kubetasks' own code (kopf's machinery has its own).

Requests are plain JSON over one keep-alive aiohttp session. The official ``kubernetes``
client is used only to read credentials (kubeconfig with its exec and token plugins, or the
in-cluster service account): its synchronous calls cost a thread hop, urllib3 and model
(de)serialization per request, and a response read with ``_preload_content=False`` that is
not released opens a new TLS connection for the next call. Measured on the Task benchmark,
that was most of the worker's and operator's CPU and a TLS handshake on the API server per
status write.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
from kubernetes import client, config

from kubetasks.errors import ConfigurationError, KubetasksError

GROUP = "kubetasks.dev"
VERSION = "v1alpha1"
TASKS, PERIODIC_TASKS, WORKER_POOLS = "tasks", "periodictasks", "workerpools"

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

JsonObject = dict[str, Any]


class ApiError(KubetasksError):
    """The API server answered with an error; ``status`` is the HTTP code, ``reason`` the
    Status reason (NotFound, Conflict, Invalid, ...) and the message is the server's."""

    def __init__(self, method: str, path: str, status: int, body: JsonObject) -> None:
        self.status = status
        self.reason = str(body.get("reason", ""))
        self.body = body
        self.message = str(body.get("message") or body)
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")


def load_configuration() -> client.Configuration:
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
    return configuration


def _ssl_context(configuration: client.Configuration) -> ssl.SSLContext | bool:
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(
        cafile=configuration.ssl_ca_cert or None,
        cadata=getattr(configuration, "ca_cert_data", None) or None,
    )
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


def custom_path(
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The path of kubetasks' own resources (a collection, one object, or its subresource)."""
    path = f"/apis/{GROUP}/{VERSION}"
    if namespace is not None:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{name}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


class KubeApi:
    """``await api.request(method, path, body=..., content_type=...) -> dict``.

    The session is made on first use, in the running event loop, and kept: every request
    reuses a pooled TLS connection (at most ``connections`` at once).
    """

    def __init__(
        self,
        configuration: client.Configuration | None = None,
        *,
        connections: int = 16,
        timeout: float = 30.0,
    ) -> None:
        self.configuration = configuration or load_configuration()
        self.server = str(self.configuration.host).rstrip("/")
        self.connections = connections
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = _ssl_context(self.configuration)
        self._session: aiohttp.ClientSession | None = None

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": JSON}
        # Called per request: token plugins and the in-cluster token refresh through it.
        token = self.configuration.get_api_key_with_prefix("authorization")
        if token:
            headers["Authorization"] = token
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=self.connections)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool] | None = None,
        body: object | None = None,
        content_type: str = JSON,
    ) -> JsonObject:
        """Send one request; raise :class:`ApiError` on an error status, return the body."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        params = (
            {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in query.items()}
            if query
            else None
        )
        async with self._open().request(
            method,
            self.server + path,
            params=params,
            data=data,
            headers=self._headers(content_type if data is not None else None),
            server_hostname=self.configuration.tls_server_name or None,
        ) as response:
            raw = await response.read()
            status = response.status
        try:
            parsed: JsonObject = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"message": raw[:500].decode(errors="replace")}
        if status >= 400:
            raise ApiError(method, path, status, parsed)
        return parsed

    async def get(self, path: str, **query: str | int | bool) -> JsonObject:
        return await self.request("GET", path, query=query)

    async def post(self, path: str, body: object) -> JsonObject:
        return await self.request("POST", path, body=body)

    async def patch(
        self,
        path: str,
        body: object,
        content_type: str = MERGE_PATCH,
        **query: str | int | bool,
    ) -> JsonObject:
        return await self.request("PATCH", path, body=body, content_type=content_type, query=query)

    async def delete(self, path: str, body: object | None = None) -> JsonObject:
        return await self.request("DELETE", path, body=body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of an API error (None for a network error or anything else)."""
    return exc.status if isinstance(exc, ApiError) else None


def reason_text(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.status} {exc.reason}: {exc.message[:500]}"
    return f"{type(exc).__name__}: {exc}"
