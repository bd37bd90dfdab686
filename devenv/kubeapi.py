"""Plain-JSON requests to the API server through a ``kubernetes`` ApiClient.

The dev tools (process kubelet, CRD installer) read and patch a handful of fields on Pods,
Nodes and CRDs. Doing that on dictionaries, with the API's own field names, is shorter and
clearer than converting to and from the generated models, and it still goes through the
official client's connection pool, TLS settings and default headers (impersonation included).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s

from kubetasks.errors import KubetasksError

JsonObject = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ApiError(KubetasksError):
    """The API server answered with an error status; ``status`` and ``reason`` say which."""

    def __init__(self, method: str, path: str, status: int, body: JsonObject) -> None:
        self.status = status
        self.reason = str(body.get("reason", ""))
        self.body = body
        message = body.get("message") or body
        super().__init__(f"{method} {path}: {status} {self.reason}: {message}")


class JsonApi:
    """``request(method, path, ...) -> dict`` over an existing ``kubernetes`` ApiClient."""

    def __init__(self, api: k8s.ApiClient, *, timeout: float = 15.0) -> None:
        self.api = api
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        body: object | None = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        url = str(self.api.configuration.host) + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = dict(self.api.default_headers)
        headers["Accept"] = "application/json"
        if body is not None:
            headers["Content-Type"] = content_type
        # The client's own urllib3 pool (TLS settings, client certificate): its call_api
        # changed signature in kubernetes 36, this did not.
        response = self.api.rest_client.pool_manager.request(
            method,
            url,
            body=None if body is None else json.dumps(body).encode(),
            headers=headers,
            timeout=self.timeout,
        )
        raw: bytes = response.data
        data: JsonObject = json.loads(raw) if raw else {}
        if response.status >= 400:
            raise ApiError(method, path, response.status, data)
        return data

    def get(self, path: str, **query: str | int) -> JsonObject:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: object) -> JsonObject:
        return self.request("POST", path, body=body)

    def put(self, path: str, body: object) -> JsonObject:
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: object, *, content_type: str = MERGE_PATCH) -> JsonObject:
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, body: object | None = None) -> JsonObject:
        return self.request("DELETE", path, body=body)
