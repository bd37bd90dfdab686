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
import logging
import ssl
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
from kubernetes import client, config

from kubetasks import settings
from kubetasks.errors import ConfigurationError, KubetasksError
from kubetasks.outages import Outage
from kubetasks.vocabulary import GROUP, VERSION

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

JsonObject = dict[str, Any]

log = logging.getLogger("kubetasks.k8s")

_ANONYMOUS = (
    "sent without credentials: the Kubernetes configuration has no token, "
    "client certificate or exec plugin"
)


class ApiError(KubetasksError):
    """The API server answered with an error; ``status`` is the HTTP code, ``reason`` the
    Status reason (NotFound, Conflict, Invalid, ...) and the message is the server's."""

    def __init__(
        self, method: str, path: str, status: int, body: JsonObject, *, hint: str = ""
    ) -> None:
        self.status = status
        self.reason = str(body.get("reason", ""))
        self.body = body
        self.message = str(body.get("message") or body) + (f"; {hint}" if hint else "")
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")


class ForbiddenError(ApiError):
    """403: the operator's or worker's account may not do this (RBAC)."""


class NotFoundError(ApiError):
    """404: the object (or its namespace) does not exist, or no longer does."""


class ConflictError(ApiError):
    """409: AlreadyExists on a create, or a precondition (uid, resourceVersion) not met."""


class InvalidError(ApiError):
    """422: the server refused the object or patch (schema, CEL transition rule, a JSON
    patch ``test`` that failed)."""


class TooManyRequestsError(ApiError):
    """429: the API server's priority and fairness is shedding load; retry later."""


_BY_STATUS: dict[int, type[ApiError]] = {
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidError,
    429: TooManyRequestsError,
}


def load_configuration() -> client.Configuration:
    """In-cluster service account if there is one, else the kubeconfig ($KUBECONFIG).

    The kubernetes client's loaders read every credential form (tokens, token files,
    client certificates, exec plugins, the service account's token) and leave a
    configuration whose refresh hook keeps them current; :func:`authorization` asks it.
    """
    configuration = client.Configuration()
    try:
        # Kubernetes' own variables (the kubelet sets the first, users the second), read
        # now: the kubernetes client reads $KUBECONFIG once, when it is imported.
        if settings.KUBERNETES_SERVICE_HOST.get():
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=settings.KUBECONFIG.get() or None,
                client_configuration=configuration,
            )
    except config.ConfigException as exc:
        raise ConfigurationError(
            f"no Kubernetes credentials: not in a cluster and no usable kubeconfig ({exc})"
        ) from exc
    return configuration


def context_namespace() -> str | None:
    """The namespace of the kubeconfig's current context (what kubectl uses without -n);
    None in a cluster, without a kubeconfig or when the context names none."""
    if settings.KUBERNETES_SERVICE_HOST.get():
        return None
    try:
        _, current = config.list_kube_config_contexts(config_file=settings.KUBECONFIG.get() or None)
    except (config.ConfigException, OSError):
        return None
    namespace = ((current or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else None


def authorization(configuration: client.Configuration) -> str | None:
    """The ``Authorization`` header the configuration holds now (None: it holds no token).

    Asked on every request, of the configuration's own method: ``get_api_key_with_prefix``
    runs the loaders' refresh hook first, where the in-cluster loader re-reads the token
    file the kubelet rotates (once a minute) and the kubeconfig loader runs an exec plugin
    again when its credential is about to expire. The kubernetes client keeps the token
    under ``BearerToken`` since 36.0.1 and under ``authorization`` before (and 36.0.0
    stored it there while reading the other): ask for both, as kopf does, so that every
    version the dependency range allows sends what it loaded.
    """
    return configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")


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


def _check_credentials(configuration: client.Configuration) -> bool:
    """Whether the configuration has no credential at all (True: anonymous).

    A token this module cannot send is refused here: going out anonymous with a token
    loaded is how every pod's request was once refused, with no error at start-up.
    """
    if authorization(configuration) is not None:
        return False
    if configuration.api_key:
        raise ConfigurationError(
            "the Kubernetes configuration holds a credential under api_key "
            f"{sorted(configuration.api_key)} that kubetasks does not know how to send "
            f"(kubernetes client {getattr(client, '__version__', '?')}): expected "
            "'BearerToken' or 'authorization'"
        )
    if configuration.cert_file:
        return False
    log.warning(
        "no Kubernetes credentials (no token, client certificate or exec plugin) for %s: "
        "requests go out as system:anonymous",
        configuration.host,
    )
    return True


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
    reuses a pooled TLS connection (at most ``connections`` at once). Watches
    (:meth:`stream`) have a session of their own, without a limit.
    """

    def __init__(
        self,
        configuration: client.Configuration | None = None,
        *,
        connections: int = 16,
        timeout: float = 30.0,
        outage: Outage | None = None,
    ) -> None:
        self.configuration = configuration or load_configuration()
        self.outage = outage
        """Told of every request's success or failure for want of a working API server
        (the operator's: ``outages.API``); None: nobody is."""
        self.server = str(self.configuration.host).rstrip("/")
        self.connections = connections
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = _ssl_context(self.configuration)
        self._session: aiohttp.ClientSession | None = None
        self._streams: aiohttp.ClientSession | None = None
        self.anonymous = _check_credentials(self.configuration)
        """No token and no client certificate: requests go out as ``system:anonymous``."""

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": JSON}
        token = authorization(self.configuration)  # per request: rotated and refreshed
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

    def _open_streams(self) -> aiohttp.ClientSession:
        # Watches hold their connection for minutes: in the requests' pool, a watch per
        # namespace would take the connections every request waits for.
        if self._streams is None or self._streams.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=0)
            self._streams = aiohttp.ClientSession(connector=connector)
        return self._streams

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool] | None = None,
        body: object | None = None,
        content_type: str = JSON,
    ) -> JsonObject:
        """Send one request, return the body; an error status raises :class:`ApiError`, as
        the subclass of its status when there is one (:class:`NotFoundError`, ...)."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            async with self._open().request(
                method,
                self.server + path,
                params=_params(query),
                data=data,
                headers=self._headers(content_type if data is not None else None),
                server_hostname=self.configuration.tls_server_name or None,
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if self.outage is not None:
                self.outage.failed(exc)
            raise
        return self._answer(method, path, status, raw)

    def _answer(self, method: str, path: str, status: int, raw: bytes) -> JsonObject:
        """Tell the outage of the answer; return its body, or raise its error."""
        if self.outage is not None:
            if status == 429 or status >= 500:
                self.outage.failed(ConnectionError(f"{status} on {method} {path}"))
            else:
                self.outage.succeeded()
        try:
            parsed: JsonObject = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"message": raw[:500].decode(errors="replace")}
        if status >= 400:
            hint = _ANONYMOUS if self.anonymous and status in (401, 403) else ""
            raise _BY_STATUS.get(status, ApiError)(method, path, status, parsed, hint=hint)
        return parsed

    async def get(self, path: str, **query: str | int | bool) -> JsonObject:
        return await self.request("GET", path, query=query)

    async def stream(
        self, path: str, *, idle: float, **query: str | int | bool
    ) -> AsyncGenerator[JsonObject, None]:
        """A watch: GET ``path`` with ``watch=true`` and ``query``; yields each event (one
        JSON object per line) as it comes. Ends when the server closes the stream; a stream
        silent for ``idle`` seconds raises TimeoutError (bookmarks and the server's own
        ``timeoutSeconds`` keep a healthy one talking). An error status raises
        :class:`ApiError` as :meth:`request` does."""
        params = _params({**query, "watch": True})
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout.total, sock_read=idle)
        try:
            async with self._open_streams().get(
                self.server + path,
                params=params,
                headers=self._headers(None),
                server_hostname=self.configuration.tls_server_name or None,
                timeout=timeout,
            ) as response:
                if response.status >= 400:
                    self._answer("GET", path, response.status, await response.read())
                elif self.outage is not None:
                    self.outage.succeeded()
                # Lines of a large object can exceed aiohttp's default 64 KiB line limit:
                # read chunks and split them ourselves.
                buffered = b""
                ended = False
                try:
                    async for chunk in response.content.iter_any():
                        buffered += chunk
                        *lines, buffered = buffered.split(b"\n")
                        for line in lines:
                            if line.strip():
                                yield json.loads(line)
                    ended = True
                finally:
                    if not ended:
                        _abort(response)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if self.outage is not None:
                self.outage.failed(exc)
            raise

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
        for session in (self._session, self._streams):
            if session is not None:
                await session.close()
        self._session = self._streams = None


def _abort(response: aiohttp.ClientResponse) -> None:
    """Drop the connection of a watch left mid-stream (its reader returned, or was cancelled
    or failed): it cannot be reused, and a TLS close would wait up to 30 s for the server's
    close_notify, which the API server does not send while the watch is open; a loop that
    ends meanwhile leaves the socket unclosed (ResourceWarning: unclosed transport)."""
    connection = response.connection
    transport = connection.transport if connection is not None else None
    if transport is not None:
        transport.abort()


def _params(query: Mapping[str, str | int | bool] | None) -> dict[str, str] | None:
    """Query parameters as strings (booleans lower case, as the API server expects)."""
    if not query:
        return None
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in query.items()}


def is_unavailable(exc: BaseException) -> bool:
    """Whether a request failed for want of a working API server (unreachable, connection
    lost, timed out, overloaded: 429 or 5xx), so the same request may succeed later as is;
    any other answer (403, 404, 409, 422, ...) would be the same again."""
    if isinstance(exc, ApiError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, aiohttp.ClientError | OSError | TimeoutError)


def reason_text(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.status} {exc.reason}: {exc.message[:500]}"
    return f"{type(exc).__name__}: {exc}"
