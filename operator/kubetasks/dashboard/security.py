"""Who is asking and whether a form came from the dashboard itself (pure helpers).

A user's bearer token comes from the ``Authorization`` header or from the login cookie
(HttpOnly, SameSite=Strict: page scripts cannot read it, other sites cannot send it).
Actions are POSTs that carry a CSRF token, an HMAC of the bearer token under a key of this
process, and whose ``Origin`` (else ``Referer``) must be the dashboard's own.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

COOKIE = "kubetasks_token"


def bearer(headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
    """The token of a request (the header wins), or None."""
    header = headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    cookie = cookies.get(COOKIE, "").strip()
    return cookie or None


def csrf_token(key: bytes, token: str) -> str:
    """The CSRF token of a session: bound to its bearer token, unguessable without ``key``."""
    return hmac.new(key, b"csrf\0" + token.encode(), hashlib.sha256).hexdigest()


def csrf_ok(key: bytes, token: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(csrf_token(key, token), str(sent))


def same_origin(headers: Mapping[str, str], own: str) -> bool:
    """Whether a POST comes from a page of ``own`` (``scheme://host[:port]``): its Origin
    header, else its Referer, must be that origin; a request with neither is refused."""
    origin = headers.get("Origin")
    if origin is not None:
        return origin == own
    referer = headers.get("Referer")
    return referer is not None and (referer == own or referer.startswith(own + "/"))
