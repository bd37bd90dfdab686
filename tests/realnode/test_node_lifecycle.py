"""``kubetasks dev up --kubelet real`` and ``down``, run as a user runs them: what ``up``
prints and records, that the containerd socket it reports takes ``ctr -n k8s.io`` image
imports, and that ``down`` leaves no process, mount, cgroup, network namespace, firewall
rule, iptables chain or bridge behind, even with a pod running. Also: a machine that cannot
run a node (here: nothing built) gets the exact reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devenv import network
from devenv.binaries import find_kubectl
from devenv.env import DevEnvironment
from devenv.node import PAUSE_IMAGE, PROBE_IMAGE, leftovers
from fixtures.realnode import require_real_node

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.realnode


def dev(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "devenv.commands", *map(str, args)]
    return subprocess.run(
        argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | (env or {}),
    )


def our_processes(marker: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(marker) in cmdline and "pytest" not in cmdline:
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found


# Where containerd's shims, runc, CNI and the kubelet keep files outside the state directory.
HOST_PATHS = (
    "/run/containerd/s", "/run/containerd/runc/k8s.io", "/var/lib/cni/results",
    "/var/lib/cni/networks", "/var/lib/kubelet", "/var/log/containers", "/var/log/pods",
    "/var/run/netns",
)  # fmt: skip


def host_files() -> set[str]:
    found: set[str] = set()
    for top in map(Path, HOST_PATHS):
        if top.exists():  # the directories themselves are shared; what is in them counts
            found.update(str(p) for p in top.rglob("*"))
    return found


def test_up_then_down_leaves_nothing(tmp_path: Path, pytestconfig: pytest.Config) -> None:
    if pytestconfig.getoption("--realnode-state-dir"):
        pytest.skip("--realnode-state-dir: another real node holds this machine")
    require_real_node()
    state = tmp_path / "env"
    forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    files_before = host_files()
    try:
        up_and_down(state, forward_before, files_before)
    finally:
        DevEnvironment(state).down()  # if an assertion stopped it half-way: no stray node


def up_and_down(state: Path, forward_before: str, files_before: set[str]) -> None:

    t0 = time.monotonic()
    up = dev("up", "--kubelet", "real", "--state-dir", state)
    started = time.monotonic() - t0
    assert up.returncode == 0, up.stderr
    socket = state / "node" / "containerd" / "containerd.sock"
    assert f"export KUBETASKS_CONTAINERD_ADDRESS={socket}" in up.stdout
    assert f"export KUBECONFIG={state / 'controlplane' / 'kubeconfig'}" in up.stdout
    assert "kubelet: real" in up.stderr
    assert json.loads((state / "env.json").read_text())["containerd_address"] == str(socket)
    print(f"dev up --kubelet real took {started:.1f}s")

    status = dev("status", "--state-dir", state)
    assert status.returncode == 0, status.stdout
    for name in ("kube-apiserver", "containerd", "kubelet", "kube-proxy", "kube-scheduler",
                 "coredns"):  # fmt: skip
        assert any(line.startswith(name) and "running" in line
                   for line in status.stdout.splitlines()), status.stdout  # fmt: skip
    assert f"containerd address       {socket}" in status.stdout

    # The path other tiers load images by: ctr in the CRI's namespace on that socket.
    images = subprocess.run(
        ["ctr", "--address", str(socket), "-n", "k8s.io", "images", "ls", "-q"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()  # fmt: skip
    assert PAUSE_IMAGE in images and PROBE_IMAGE in images

    # A running pod gives down something to clean: containers, mounts, a netns, cgroups.
    kubectl = [str(find_kubectl()), "--kubeconfig", str(state / "controlplane" / "kubeconfig")]
    run = subprocess.run(
        [*kubectl, "run", "probe", f"--image={PROBE_IMAGE}", "--image-pull-policy=Never",
         "--restart=Never", "--command", "--", "/probe", "sleep"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    ready = subprocess.run(
        [*kubectl, "wait", "--for=condition=Ready", "pod/probe", "--timeout=90s"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ready.returncode == 0, ready.stderr
    assert network.pod_network_namespaces(), "the pod's network namespace"
    assert leftovers(state), "a running node has processes, mounts and a network"

    down = dev("down", "--state-dir", state)
    assert down.returncode == 0, down.stderr
    assert leftovers(state) == []
    assert our_processes(state) == []
    assert not Path(f"/sys/class/net/{network.BRIDGE}").exists()
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forward_before
    assert not (state / "node").exists()
    assert host_files() - files_before == set()


def test_a_machine_without_the_node_build_is_told_why(tmp_path: Path) -> None:
    """With nothing built (an empty cache) ``up --kubelet real`` names what is missing and
    the command that builds it, and starts nothing."""
    result = dev("up", "--kubelet", "real", "--state-dir", tmp_path / "env",
                 env={"KUBETASKS_CACHE": str(tmp_path / "empty-cache")})  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("kubetasks: this machine cannot run a real node:")
    assert "kubelet, kube-proxy, kube-scheduler, coredns, pause.oci.tar; run `make node`" in (
        result.stderr
    )
    assert not (tmp_path / "env").exists(), "nothing was started or written"
