"""Handlers every worker has: for smoke tests, demos and simple integrations.

Two reach beyond the worker and are registered only when the worker is started with an
explicit flag: ``kubetasks.shell`` runs programs on it (``--allow-shell``), and
``kubetasks.http`` makes requests from its network position (``--allow-http``, WorkerPool
``spec.allowHttp``). Whoever may create a Task may then use them, so ``kubetasks.http`` also
goes only where :mod:`kubetasks.worker.netpolicy` lets it (public addresses unless the
operator allows more), connects to the addresses it vetted, follows redirects only when
asked (each hop vetted again), reads at most a capped number of bytes of the answer and
gives up after a bounded time. Any later network built-in goes through :func:`_vet` too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from kubetasks.errors import PermanentTaskError, RetryTask
from kubetasks.settings import HttpSettings
from kubetasks.worker import netpolicy
from kubetasks.worker.context import TaskContext
from kubetasks.worker.registry import task

#: Most output bytes ``kubetasks.shell`` returns per stream (results are size-capped).
MAX_BODY = 16 * 1024


@task("kubetasks.echo")
async def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the arguments it was given."""
    return {"args": list(args), "kwargs": kwargs}


@task("kubetasks.sleep")
async def sleep(seconds: float = 1.0, result: Any = None) -> Any:
    """Sleep, then return ``result`` (or the number of seconds slept)."""
    await asyncio.sleep(float(seconds))
    return seconds if result is None else result


@task("kubetasks.fail")
async def fail(
    message: str = "failed on purpose",
    *,
    permanent: bool = False,
    succeed_on_attempt: int | None = None,
    seconds: float = 0.0,
    ctx: TaskContext,
) -> Any:
    """Raise an error; with ``succeed_on_attempt`` succeed from that attempt on (for demos
    of retries). ``permanent`` fails without retrying; ``seconds`` works that long first."""
    if seconds > 0:
        await asyncio.sleep(seconds)
    if succeed_on_attempt is not None and ctx.attempt >= succeed_on_attempt:
        return {"succeeded_on_attempt": ctx.attempt}
    if permanent:
        raise PermanentTaskError(message)
    raise RuntimeError(message)


async def shell(command: list[str], *, timeout: float | None = None, ctx: TaskContext) -> Any:
    """Run a program (a list of arguments; no shell). A non-zero exit fails the attempt."""
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise PermanentTaskError("command must be a non-empty list of strings")
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    result: dict[str, Any] = {
        "returncode": proc.returncode,
        "stdout": out[-MAX_BODY:].decode(errors="replace"),
        "stderr": err[-MAX_BODY:].decode(errors="replace"),
    }
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {proc.returncode}: {result['stderr'][-500:]}")
    return result


def enable_shell() -> None:
    """Register ``kubetasks.shell`` (only with the worker's explicit ``--allow-shell``)."""
    task("kubetasks.shell")(shell)


# -- kubetasks.http --------------------------------------------------------------------------

#: Headers the handler sets itself: hop-by-hop ones, the Host that must match the vetted URL,
#: a length aiohttp computes, and the encoding (identity, so the read cap counts real bytes
#: and a compressed answer cannot inflate past it).
RESERVED_HEADERS = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "accept-encoding",
    }
)
#: Headers dropped when a redirect leaves the origin (scheme, host, port), as curl does.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class _PinnedResolver(AbstractResolver):
    """Answers aiohttp with the addresses :func:`_vet` checked, and nothing else: the
    connection goes to a vetted address while the Host header and TLS SNI keep the name."""

    def __init__(self) -> None:
        self.vetted: dict[tuple[str, int], list[netpolicy.IPAddress]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self.vetted.get((host, port))
        if not addresses:
            raise OSError(f"{host}:{port} was not vetted")  # never happens: _vet came first
        return [
            {
                "hostname": host,
                "host": str(a),
                "port": port,
                "family": socket.AF_INET6 if a.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for a in addresses
        ]

    async def close(self) -> None:
        pass


async def _resolve(host: str, port: int) -> list[netpolicy.IPAddress]:
    """Every address ``host`` resolves to (A and AAAA), through the event loop's resolver."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[netpolicy.IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if address not in found:
            found.append(address)
    return found


async def _vet(url: URL, settings: HttpSettings, resolver: _PinnedResolver) -> None:
    """Refuse a URL the policy forbids (PermanentTaskError), else pin its vetted addresses."""
    if url.scheme not in ("http", "https"):
        raise PermanentTaskError(f"kubetasks.http: refused {url}: only http and https URLs")
    host, port = url.raw_host, url.port
    if not host or port is None:
        raise PermanentTaskError(f"kubetasks.http: refused {url}: no host")
    # The ASCII (IDNA) form aiohttp also uses, so the name vetted is the name asked for.
    addresses = await _resolve(host, port)
    why = netpolicy.refusal(host, addresses, settings)
    if why is not None:
        raise PermanentTaskError(f"kubetasks.http: refused {url}: {why}")
    resolver.vetted[(host, port)] = addresses


def _checked_headers(headers: dict[str, str] | None) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise PermanentTaskError("kubetasks.http: headers must be an object of strings")
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str) or not _TOKEN.fullmatch(name):
            raise PermanentTaskError(f"kubetasks.http: invalid header {name!r}")
        if any(c in value for c in "\r\n\0"):
            raise PermanentTaskError(f"kubetasks.http: header {name!r} has a line break")
        if name.lower() in RESERVED_HEADERS:
            raise PermanentTaskError(
                f"kubetasks.http: header {name!r} is set by the handler itself"
            )
    return dict(headers)


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    """Up to ``cap`` bytes of the body and whether there was more. Reads at most one byte
    past the cap, then closes the connection: the rest is never read."""
    kept = bytearray()
    while len(kept) <= cap:
        chunk = await response.content.read(cap + 1 - len(kept))
        if not chunk:
            return bytes(kept), False
        kept += chunk
    response.close()
    return bytes(kept[:cap]), True


async def http_request(
    settings: HttpSettings,
    url: str,
    method: str = "GET",
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
    body: str | None = None,
    timeout: float | None = None,
    follow_redirects: bool = False,
) -> dict[str, Any]:
    """The body of ``kubetasks.http`` under ``settings``; see :func:`enable_http`."""
    method = str(method).upper()
    if method not in METHODS:
        raise PermanentTaskError(
            f"kubetasks.http: method {method!r} is not one of {sorted(METHODS)}"
        )
    if not isinstance(url, str):
        raise PermanentTaskError("kubetasks.http: url must be a string")
    try:
        current = URL(url)
    except ValueError as exc:
        raise PermanentTaskError(f"kubetasks.http: invalid url {url!r}: {exc}") from None
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        raise PermanentTaskError(f"kubetasks.http: timeout must be seconds, got {timeout!r}")
    sent = _checked_headers(headers)
    sent["Accept-Encoding"] = "identity"
    seconds = settings.bounded_timeout(timeout)
    resolver = _PinnedResolver()
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, trust_env=False
    ) as session:
        try:
            async with asyncio.timeout(seconds):
                for _hop in range(settings.max_redirects + 1):
                    await _vet(current, settings, resolver)
                    async with session.request(
                        method, current, headers=sent, json=json, data=body,
                        allow_redirects=False, timeout=aiohttp.ClientTimeout(total=None),
                    ) as response:  # fmt: skip
                        status = response.status
                        location = response.headers.get("Location")
                        data, truncated = await _read_capped(response, settings.max_body)
                    if not (follow_redirects and status in REDIRECTS and location):
                        break
                    try:
                        target = current.join(URL(location))
                    except ValueError:
                        raise PermanentTaskError(
                            f"kubetasks.http: {current} redirects to an invalid URL {location!r}"
                        ) from None
                    if status == 303 or (status in (301, 302) and method == "POST"):
                        method = "GET" if method != "HEAD" else method
                        json = body = None
                        sent = {k: v for k, v in sent.items() if k.lower() != "content-type"}
                    if target.origin() != current.origin():
                        sent = {
                            k: v for k, v in sent.items() if k.lower() not in CREDENTIAL_HEADERS
                        }
                    current = target
                else:
                    raise PermanentTaskError(
                        f"kubetasks.http: {url}: more than {settings.max_redirects} redirects"
                    )
        except TimeoutError as exc:
            raise RetryTask(
                f"kubetasks.http: {method} {current} {_timed_out(seconds, timeout)}"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryTask(
                f"kubetasks.http: {method} {current}: {type(exc).__name__}: {exc}"
            ) from exc
    text = data.decode(errors="replace")
    if status >= 500 or status == 429:
        raise RetryTask(f"kubetasks.http: {method} {current} answered {status}")
    if status >= 400:
        raise PermanentTaskError(
            f"kubetasks.http: {method} {current} answered {status}: {text[:200]}"
        )
    result: dict[str, Any] = {"status": status, "body": text, "truncated": truncated}
    if location is not None and status in REDIRECTS:
        result["location"] = location
    return result


def _timed_out(seconds: float, asked: float | None) -> str:
    if asked is not None and float(asked) > seconds:
        return (
            f"timed out after {seconds:g} s (asked {float(asked):g} s; the most kubetasks.http"
            " allows in this worker, --http-max-timeout)"
        )
    return f"timed out after {seconds:g} s"


def enable_http(settings: HttpSettings | None = None) -> None:
    """Register ``kubetasks.http`` (only with the worker's explicit ``--allow-http``)."""
    chosen = settings or HttpSettings()

    async def http(
        url: str,
        method: str = "GET",
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        body: str | None = None,
        timeout: float | None = None,
        follow_redirects: bool = False,
    ) -> dict[str, Any]:
        """Make an HTTP request to a destination the worker allows; 5xx, 429, timeouts and
        connection errors are retried, other 4xx and refused destinations fail. Redirects
        are returned (status and ``location``) unless ``follow_redirects``. ``timeout`` is
        capped by the worker (default 10 s, at most 60 s). The result holds ``status``, the
        start of ``body`` (16 KiB by default) and ``truncated``."""
        return await http_request(
            chosen, url, method, headers=headers, json=json, body=body,
            timeout=timeout, follow_redirects=follow_redirects,
        )  # fmt: skip

    task("kubetasks.http")(http)
