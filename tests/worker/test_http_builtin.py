"""``kubetasks.http`` is opt-in and safe by default: where it may go, what it reads, how long.

Every request goes to a real server on 127.0.0.1 in a thread; nothing leaves the machine
(the metadata-style address 169.254.169.254 is refused before any connection is made). The
policy itself is pure and tested with injected resolution results.

In-process tests call ``builtins.http_request`` under explicit settings and never
``enable_http``: the registry is process-wide, and the test that a default worker does not
know ``kubetasks.http`` must see it unregistered. Registration through the CLI is tested in
a worker subprocess, which is also where the memory of a huge answer is measured.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import RunWorker
from fixtures.waiting import wait_until
from kubetasks.cli import build_parser
from kubetasks.client import AsyncClient
from kubetasks.controller.workloads import worker_args
from kubetasks.errors import ConfigurationError, PermanentTaskError, RetryTask, TaskFailedError
from kubetasks.settings import HttpSettings, parse_cidrs, parse_http_allow
from kubetasks.worker import netpolicy
from kubetasks.worker.builtins import http_request

METADATA = "http://169.254.169.254/latest/meta-data/"
BIG = 50 * 1024 * 1024
CHUNK = 64 * 1024
LOOPBACK = HttpSettings(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
TESTS = Path(__file__).resolve().parent.parent


# -- a real server on loopback ----------------------------------------------------------------


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.sent = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.stop = threading.Event()
        self.big_done = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        path = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(path.query).items()}
        self.server.requests.append((self.command, self.path, dict(self.headers.items())))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if path.path == "/hello":
            self._answer(200, b"hello")
        elif path.path == "/headers":
            self._answer(200, json.dumps(dict(self.headers.items())).encode())
        elif path.path == "/status":
            self._answer(int(query["code"]), b"status body")
        elif path.path == "/redirect":
            self.send_response(int(query.get("code", "302")))
            self.send_header("Location", query["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path.path == "/big":
            self._stream_big()
        elif path.path == "/slow":
            self._drip()
        else:
            self._answer(404, b"no such path")

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream_big(self) -> None:
        # A small send buffer keeps what the kernel swallows for a client that stopped
        # reading small, so the count below is close to what the client really took.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
        self.send_response(200)
        self.send_header("Content-Length", str(BIG))
        self.end_headers()
        chunk = b"x" * CHUNK
        try:
            while self.server.sent < BIG:
                self.wfile.write(chunk)
                self.server.sent += len(chunk)
        except OSError:
            self.close_connection = True
        finally:
            self.server.big_done.set()

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        try:
            while not self.server.stop.wait(0.05):
                self.wfile.write(b".")
                self.wfile.flush()
        except OSError:
            self.close_connection = True


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.stop.set()
        srv.shutdown()
        thread.join(5)
        srv.server_close()


# -- the pure policy --------------------------------------------------------------------------


def ips(*texts: str) -> list[netpolicy.IPAddress]:
    return [ipaddress.ip_address(t) for t in texts]


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.96.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "shared (CGNAT) address space"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("2002:7f00:1::", "loopback"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert netpolicy.address_kind(ipaddress.ip_address(address)) == kind


def test_a_name_is_refused_when_any_of_its_addresses_is_not_public() -> None:
    settings = HttpSettings()
    assert netpolicy.refusal("example.com", ips("93.184.215.14"), settings) is None
    assert netpolicy.refusal("rebind.example", ips("93.184.215.14", "10.0.0.7"), settings) == (
        "rebind.example resolves to 10.0.0.7, which is private (allow it with --http-allow)"
    )
    assert netpolicy.refusal("169.254.169.254", ips("169.254.169.254"), settings) == (
        "169.254.169.254 is link-local (allow it with --http-allow)"
    )
    assert netpolicy.refusal("void.example", [], settings) == "void.example resolves to no address"


def test_the_allowlist_overrides_and_the_denylist_adds() -> None:
    names, networks = parse_http_allow(["api.default.svc.cluster.local,10.96.0.0/12", "Echo."])
    settings = HttpSettings(
        allow_hosts=names,
        allow_networks=networks,
        deny_networks=parse_cidrs(["34.118.224.0/20"], "--http-deny-cidrs"),
    )
    assert netpolicy.refusal("API.default.svc.cluster.local.", ips("10.244.1.5"), settings) is None
    assert netpolicy.refusal("echo", ips("127.0.0.1"), settings) is None
    assert netpolicy.refusal("other.svc", ips("10.96.0.10"), settings) is None  # allowed CIDR
    assert netpolicy.refusal("other.svc", ips("10.244.0.3"), settings) is not None
    assert netpolicy.refusal("public.example", ips("34.118.230.9"), settings) == (
        "public.example resolves to 34.118.230.9, which is in a denied network"
        " (34.118.224.0/20, --http-deny-cidrs) (allow it with --http-allow)"
    )
    with pytest.raises(ConfigurationError, match="neither a CIDR nor a host name"):
        parse_http_allow(["http://x/"])
    with pytest.raises(ConfigurationError, match="--http-deny-cidrs"):
        parse_cidrs(["10.0.0.0/33"], "--http-deny-cidrs")


async def test_localhost_really_resolves_to_loopback_and_is_refused() -> None:
    infos = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    addresses = ips(*{str(info[4][0]) for info in infos})
    assert addresses and all(a.is_loopback for a in addresses)
    with pytest.raises(PermanentTaskError, match=r"localhost resolves to .*, which is loopback"):
        await http_request(HttpSettings(), "http://localhost:9/")


def test_timeouts_default_and_cap() -> None:
    settings = HttpSettings(default_timeout=10, max_timeout=60)
    assert [settings.bounded_timeout(t) for t in (None, 3, 3600)] == [10, 3, 60]
    with pytest.raises(ConfigurationError):
        HttpSettings(default_timeout=90, max_timeout=60)


# -- requests to a real loopback server -------------------------------------------------------


async def test_loopback_is_refused_by_default_and_nothing_is_sent(server: Server) -> None:
    with pytest.raises(PermanentTaskError) as refused:
        await http_request(HttpSettings(), f"{server.url}/hello")
    assert str(refused.value) == (
        f"kubetasks.http: refused {server.url}/hello: 127.0.0.1 is loopback"
        " (allow it with --http-allow)"
    )
    assert server.requests == []


async def test_an_allowed_loopback_server_answers_with_the_name_in_host(server: Server) -> None:
    assert await http_request(LOOPBACK, f"{server.url}/hello") == {
        "status": 200,
        "body": "hello",
        "truncated": False,
    }
    port = server.server_address[1]
    by_name = HttpSettings(allow_hosts=frozenset({"localhost"}))
    answer = await http_request(
        by_name, f"http://localhost:{port}/headers", headers={"X-Token": "t"}
    )
    sent = json.loads(answer["body"])
    assert (sent["Host"], sent["X-Token"], sent["Accept-Encoding"]) == (
        f"localhost:{port}",
        "t",
        "identity",
    )


async def test_the_metadata_address_is_refused_without_a_connection() -> None:
    with pytest.raises(PermanentTaskError) as refused:
        await http_request(LOOPBACK, METADATA, headers={"Metadata-Flavor": "Google"})
    assert str(refused.value) == (
        f"kubetasks.http: refused {METADATA}: 169.254.169.254 is link-local"
        " (allow it with --http-allow)"
    )


async def test_a_redirect_is_reported_not_followed(server: Server) -> None:
    url = f"{server.url}/redirect?to={METADATA}"
    assert await http_request(LOOPBACK, url) == {
        "status": 302,
        "body": "",
        "truncated": False,
        "location": METADATA,
    }
    assert len(server.requests) == 1


async def test_each_redirect_hop_is_checked_again(server: Server) -> None:
    url = f"{server.url}/redirect?to={METADATA}"
    with pytest.raises(PermanentTaskError, match=r"refused http://169\.254\.169\.254/.*link-local"):
        await http_request(LOOPBACK, url, follow_redirects=True)
    allowed_hop = f"{server.url}/redirect?code=307&to=/hello"
    answer = await http_request(LOOPBACK, allowed_hop, "POST", body="x", follow_redirects=True)
    assert (answer["status"], answer["body"]) == (200, "hello")
    assert [(m, p.split("?")[0]) for m, p, _ in server.requests[1:]] == [
        ("POST", "/redirect"),
        ("POST", "/hello"),  # 307 keeps the method
    ]


async def test_credentials_stay_with_their_origin_and_hops_are_bounded(server: Server) -> None:
    port = server.server_address[1]
    other_origin = f"http://localhost:{port}/headers"
    settings = HttpSettings(
        allow_networks=LOOPBACK.allow_networks, allow_hosts=frozenset({"localhost"})
    )
    answer = await http_request(
        settings,
        f"{server.url}/redirect?to={other_origin}",
        headers={"Authorization": "Bearer secret", "X-Kept": "1"},
        follow_redirects=True,
    )
    sent = json.loads(answer["body"])
    assert "Authorization" not in sent
    assert sent["X-Kept"] == "1"
    loop_url = f"{server.url}/redirect?to=/redirect%3Fto%3D/hello"
    few = HttpSettings(allow_networks=LOOPBACK.allow_networks, max_redirects=1)
    with pytest.raises(PermanentTaskError, match="more than 1 redirects"):
        await http_request(few, loop_url, follow_redirects=True)


@pytest.mark.parametrize("name", ["Host", "transfer-encoding", "Connection", "Accept-Encoding"])
async def test_headers_the_handler_owns_are_refused(server: Server, name: str) -> None:
    with pytest.raises(PermanentTaskError, match="is set by the handler itself"):
        await http_request(LOOPBACK, f"{server.url}/hello", headers={name: "x"})
    assert server.requests == []


async def test_schemes_other_than_http_are_refused() -> None:
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/", "gopher://127.0.0.1:6379/_INFO"):
        with pytest.raises(PermanentTaskError, match="only http and https"):
            await http_request(LOOPBACK, url)


async def test_statuses_map_to_retry_or_failure(server: Server) -> None:
    with pytest.raises(RetryTask, match="answered 503"):
        await http_request(LOOPBACK, f"{server.url}/status?code=503")
    with pytest.raises(PermanentTaskError, match="answered 404: status body"):
        await http_request(LOOPBACK, f"{server.url}/status?code=404")


async def test_a_huge_answer_is_cut_at_the_cap_and_not_read(server: Server) -> None:
    answer = await http_request(LOOPBACK, f"{server.url}/big")
    assert (answer["status"], len(answer["body"]), answer["truncated"]) == (200, 16 * 1024, True)
    await wait_until(server.big_done.is_set)
    assert server.sent < 2 * 1024 * 1024, server.sent  # of 50 MiB


async def test_a_slow_server_is_cut_at_the_most_the_worker_allows(server: Server) -> None:
    settings = HttpSettings(
        allow_networks=LOOPBACK.allow_networks, default_timeout=0.5, max_timeout=1.0
    )
    start = time.monotonic()
    with pytest.raises(RetryTask) as timed_out:
        await http_request(settings, f"{server.url}/slow", timeout=3600)
    elapsed = time.monotonic() - start
    assert 0.9 < elapsed < 2.0
    assert "timed out after 1 s (asked 3600 s; the most kubetasks.http allows" in str(
        timed_out.value
    )


# -- the opt-in -------------------------------------------------------------------------------


async def test_a_default_worker_does_not_know_kubetasks_http(
    client: AsyncClient, run_worker: RunWorker, server: Server
) -> None:
    async with run_worker():
        handle = await client.enqueue("kubetasks.http", f"{server.url}/hello", max_retries=0)
        with pytest.raises(TaskFailedError) as failure:
            await handle.result(timeout=5)
    assert failure.value.error is not None
    assert failure.value.error["type"] == "HandlerNotFoundError"
    assert "start the worker with --allow-http" in failure.value.error["message"]
    assert server.requests == []


def test_a_pool_asks_for_it_with_allow_http() -> None:
    spec: dict[str, Any] = {"queues": [{"name": "default"}]}
    assert "--allow-http" not in worker_args(spec)
    args = worker_args(spec | {"allowHttp": True})
    assert build_parser().parse_args(args).allow_http is True


def test_allow_and_deny_flags_without_allow_http_are_a_mistake(redis_url: str) -> None:
    proc = _worker(redis_url, "--http-allow", "127.0.0.1/32", stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert b"--http-allow and --http-deny-cidrs need --allow-http" in err


async def test_a_worker_with_allow_http_runs_it_and_a_huge_answer_costs_no_memory(
    client: AsyncClient, redis_url: str, server: Server
) -> None:
    worker = _worker(redis_url, "--allow-http", "--http-allow", "127.0.0.1/32")
    try:
        hello = await client.enqueue("kubetasks.http", f"{server.url}/hello")
        assert await hello.result(timeout=20) == {
            "status": 200,
            "body": "hello",
            "truncated": False,
        }
        _reset_peak_memory(worker.pid)
        before = _memory_kib(worker.pid, "VmRSS")
        big = await client.enqueue("kubetasks.http", f"{server.url}/big")
        result = await big.result(timeout=20)
        await wait_until(server.big_done.is_set)
        peak = _memory_kib(worker.pid, "VmHWM")
        metadata = await client.enqueue("kubetasks.http", METADATA, max_retries=3)
        with pytest.raises(TaskFailedError) as refused:
            await metadata.result(timeout=20)
    finally:
        worker.kill()
        worker.communicate()
    assert (len(result["body"]), result["truncated"]) == (16 * 1024, True)
    assert peak - before < 16 * 1024, (before, peak)  # KiB: far from the 50 MiB answer
    assert server.sent < 2 * 1024 * 1024, server.sent  # of 50 MiB
    assert refused.value.error is not None
    assert refused.value.error["type"] == "PermanentTaskError"
    assert "169.254.169.254 is link-local" in refused.value.error["message"]
    info = await metadata.status()
    assert info is not None and info.attempts == 1  # refused, not retried


def _worker(redis_url: str, *flags: str, stderr: int | None = None) -> subprocess.Popen[bytes]:
    env = os.environ | {"PYTHONPATH": f"{TESTS / 'worker'}{os.pathsep}{TESTS}"}
    return subprocess.Popen(
        [sys.executable, "-m", "kubetasks.cli", "worker", "--redis-url", redis_url,
         "--report-status", "none", "--log-level", "warning", *flags],
        env=env, stderr=stderr,
    )  # fmt: skip


def _reset_peak_memory(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux 4.0+)


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")
