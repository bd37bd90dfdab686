"""Long-running local processes that another process can find and stop again.

``kubetasks dev up`` starts etcd, kube-apiserver, kube-controller-manager, Redis and the
process kubelet and exits; ``kubetasks dev down``, run later from another shell, must stop
exactly those processes. Each one therefore gets a pidfile, its own session (so a Ctrl-C in
the terminal that started it does not reach it) and a log file. A pid alone is not proof of
identity, since pids are reused: a process counts as ours only while its command line still
mentions the state directory, which every command line we build does (or, for Redis, which
rewrites its process title, while it runs inside it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def is_running(pid: int, marker: str | None = None) -> bool:
    """Whether ``pid`` is a live (not zombie) process whose command line contains ``marker``
    or whose working directory is under it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    # The state is the field after the parenthesised command name, which may contain spaces.
    if stat[stat.rindex(")") + 2 :].startswith(("Z", "X")):
        return False
    if marker is None or marker in cmdline:
        return True
    # Redis rewrites its process title (dropping `--dir`) but runs inside its data directory.
    try:
        return os.readlink(f"/proc/{pid}/cwd").startswith(marker)
    except OSError:
        return False


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (``VmRSS`` from ``/proc/<pid>/status``), 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def terminate(pid: int, marker: str | None = None, timeout: float = 10.0) -> None:
    """SIGTERM ``pid``, wait up to ``timeout`` seconds, then SIGKILL its whole process group.

    Works for processes that are not our children (``dev down`` from another shell): we poll
    ``/proc`` instead of waiting. Children are also reaped, so they do not linger as zombies.
    """
    if not is_running(pid, marker):
        _reap(pid)
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_running(pid):
            break
        time.sleep(0.05)
    else:
        kill_group(pid)
    _reap(pid)


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (every process is started as a group leader)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + 5
    while is_running(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.02)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: its parent reaps it
        os.waitpid(pid, os.WNOHANG)


class ManagedProcess:
    """One named process with a pidfile under ``run_dir`` and output in ``log_dir``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        run_dir: Path,
        log_dir: Path,
        marker: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.cwd = cwd
        """Working directory; under the marker, it identifies the process like its argv."""
        self.argv = list(argv)
        self.pidfile = run_dir / f"{name}.pid"
        self.log_file = log_dir / f"{name}.log"
        self.marker = marker
        self.env = dict(env) if env is not None else None
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        """Start the process in its own session; returns its pid."""
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
                cwd=self.cwd,
            )
        self.pidfile.write_text(f"{self._popen.pid}\n")
        return self._popen.pid

    @property
    def pid(self) -> int | None:
        return read_pidfile(self.pidfile)

    def running(self) -> bool:
        pid = self.pid
        if self._popen is not None:
            return self._popen.poll() is None
        return pid is not None and is_running(pid, self.marker)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.pid
        if pid is not None:
            terminate(pid, self.marker, timeout)
        if self._popen is not None:
            if self._popen.poll() is None:
                kill_group(self._popen.pid)
            self._popen.wait()
            self._popen = None
        self.pidfile.unlink(missing_ok=True)


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
