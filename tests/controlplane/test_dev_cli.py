"""``kubetasks dev up|status|down`` as a user runs them: separate processes, one state dir.

The commands are run through ``python -m devenv.commands`` so these tests exercise
exactly the code behind ``kubetasks dev`` without depending on how the main CLI is wired.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devenv.binaries import find_kubectl
from devenv.kubelet import PID_ANNOTATION, PROCESS_KUBELET_LABEL

pytestmark = pytest.mark.controlplane


def dev(state: Path, *args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBETASKS_DEV_DIR=str(state))
    return subprocess.run(
        [sys.executable, "-m", "devenv.commands", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def exports(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            found[key] = value
    return found


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line, environment or working directory mentions ``text`` (what
    `pgrep -f` finds, plus pod processes, which carry the state dir in their environment,
    and Redis, which rewrites its command line but runs in its data directory)."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat[stat.rindex(")") + 2] == "Z":
                continue
            if (
                needle in (entry / "cmdline").read_bytes()
                or needle in (entry / "environ").read_bytes()
                or os.readlink(entry / "cwd").startswith(text)  # Redis renames its cmdline
            ):
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def kubectl(
    kubeconfig: str, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(find_kubectl()), *args],
        env=dict(os.environ, KUBECONFIG=kubeconfig),
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


def redis_ping(url: str) -> bool:
    host_port = url.removeprefix("redis://").split("/")[0]
    host, port = host_port.split(":")
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "sleeper", "labels": {PROCESS_KUBELET_LABEL: "true"}},
    "spec": {
        "containers": [
            {
                "name": "main",
                "image": "x",
                "command": [sys.executable, "-c", "import time\nwhile True: time.sleep(1)"],
            }
        ]
    },
}


def test_up_status_down_leave_no_process(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    try:
        up = dev(state, "up")
        assert up.returncode == 0, up.stderr
        env = exports(up.stdout)
        assert set(env) == {"KUBECONFIG", "KUBETASKS_REDIS_URL"}
        assert env["KUBECONFIG"].startswith(str(state))
        assert redis_ping(env["KUBETASKS_REDIS_URL"])

        nodes = kubectl(env["KUBECONFIG"], "get", "nodes", "-o", "json")
        assert nodes.returncode == 0, nodes.stderr
        (node,) = json.loads(nodes.stdout)["items"]
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert (node["metadata"]["name"], ready) == ("kubetasks-local", "True")

        # The background kubelet runs a labelled pod as a local process.
        applied = kubectl(env["KUBECONFIG"], "apply", "-f", "-", input=json.dumps(POD))
        assert applied.returncode == 0, applied.stderr
        waited = kubectl(
            env["KUBECONFIG"], "wait", "pod/sleeper", "--for=condition=Ready", "--timeout=30s"
        )
        assert waited.returncode == 0, waited.stderr
        pod = json.loads(kubectl(env["KUBECONFIG"], "get", "pod/sleeper", "-o", "json").stdout)
        pod_pid = int(pod["metadata"]["annotations"][PID_ANNOTATION])
        assert pod_pid in processes_mentioning(str(state))

        status = dev(state, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "healthy                  yes" in status.stdout
        for component in ("etcd", "kube-apiserver", "kube-controller-manager", "redis", "kubelet"):
            assert f"{component:<24} running, pid " in status.stdout

        again = dev(state, "up")
        assert again.returncode == 0, again.stderr
        assert "reusing" in again.stderr
        assert exports(again.stdout) == env

        down = dev(state, "down")
        assert down.returncode == 0, down.stderr
        assert processes_mentioning(str(state)) == []
        after = dev(state, "status")
        assert after.returncode == 1
        assert "healthy                  no" in after.stdout
    finally:
        dev(state, "down")
        for pid in processes_mentioning(str(state)):  # never leak, even when the test fails
            os.kill(pid, signal.SIGKILL)


def test_up_replaces_a_broken_environment(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    try:
        first = dev(state, "up", "--no-kubelet")
        assert first.returncode == 0, first.stderr
        apiserver_pid = int((state / "controlplane" / "run" / "kube-apiserver.pid").read_text())
        os.kill(apiserver_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while dev(state, "status").returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert dev(state, "status").returncode == 1
        old = set(processes_mentioning(str(state)))

        second = dev(state, "up", "--no-kubelet")
        assert second.returncode == 0, second.stderr
        assert "started a" in second.stderr
        assert dev(state, "status").returncode == 0
        # Nothing of the first environment is left next to the second one.
        assert old.isdisjoint(processes_mentioning(str(state)))
        assert len(processes_mentioning(str(state))) == 4  # etcd, apiserver, kcm, redis
    finally:
        dev(state, "down")
        for pid in processes_mentioning(str(state)):
            os.kill(pid, signal.SIGKILL)
    assert processes_mentioning(str(state)) == []
