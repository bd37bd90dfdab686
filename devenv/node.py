"""A real Kubernetes node on this machine: containerd, kubelet, kube-proxy, kube-scheduler and
CoreDNS, beside the local control plane, so pods run as real containers from real images.

The process kubelet (:mod:`devenv.kubelet`) is fast and needs nothing but Python, but it runs
pods as local processes with the admin's network and hides what only containers show: a
missing passwd entry in an image, a token that never reaches the API server, a Service name
that does not resolve. This node runs the same binaries as a cluster's:

* containerd and runc from Debian packages, with private root, state and sockets under the
  state directory (``node/containerd``), the cgroupfs driver, and the settings this kind of VM
  needs (``restrict_oom_score_adj``: root here lacks CAP_SYS_RESOURCE; runc, not crun);
* kubelet, kube-proxy (iptables mode) and kube-scheduler from the pinned ``k8s.io/kubernetes``
  module, CoreDNS answering cluster names only (``tests/node/build.sh``, ``make node``);
* the pause image built from the Kubernetes sources, loaded as containerd's sandbox image;
* the bridge network and its egress firewall of :mod:`devenv.network`.

Every identity is a client certificate from the cluster's CA (:meth:`devenv.pki.Pki.ensure_node`):
the kubelet is ``system:node:<name>`` in ``system:nodes`` (the Node authorizer's subject),
kube-proxy and the scheduler their bootstrap users, CoreDNS a user with a read-only role.

:meth:`RealNode.start` returns once the node is Ready, kube-proxy has programmed the Services
and DNS answers; :meth:`RealNode.stop` (and :func:`cleanup`, which needs no running process)
leaves no process, mount, cgroup, network namespace, rule or bridge behind.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devenv import network
from devenv.binaries import bin_dir
from devenv.controlplane import ClusterAccess, ControlPlane
from devenv.kubeapi import ApiError, JsonApi
from devenv.pki import ClientCert
from devenv.processes import ManagedProcess, is_running, read_pidfile, rss_kib, terminate
from devenv.redis_server import free_port
from kubetasks.errors import ConfigurationError

NODE_NAME = "kubetasks-node"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
"""The sandbox image; ``tests/node/build.sh`` loads the pause it builds under this name."""
PROBE_IMAGE = "docker.io/kubetasks/node-probe:dev"
"""The tests' probe (``tests/node/probe``), loaded into every real node."""
COMPONENTS = ("containerd", "kubelet", "kube-proxy", "kube-scheduler", "coredns")
NODE_BINARIES = ("kubelet", "kube-proxy", "kube-scheduler", "coredns")
_COMMANDS = {
    "containerd": "containerd (Debian package containerd)",
    "containerd-shim-runc-v2": "containerd-shim-runc-v2 (Debian package containerd)",
    "ctr": "ctr (Debian package containerd)",
    "runc": "runc (Debian package runc)",
    "ip": "ip (Debian package iproute2)",
    "nft": "nft (Debian package nftables)",
    "iptables": "iptables (Debian package iptables)",
    "mount": "mount (Debian package mount)",
}
_CNI_BIN = Path("/usr/lib/cni")
_CNI_PLUGINS = ("bridge", "host-local", "loopback")
_SHIM_SOCKET_DIR = Path("/run/containerd/s")
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL
_RUNC_STATE = Path("/run/containerd/runc/k8s.io")
_CNI_RESULTS = Path("/var/lib/cni/results")
_DEVICE_PLUGIN_SOCKET = Path("/var/lib/kubelet/device-plugins/kubelet.sock")
_CONTAINER_LOG_LINKS = Path("/var/log/containers")
_CGROUP_ROOT = Path("/sys/fs/cgroup")


class NodeUnavailableError(ConfigurationError):
    """This machine cannot run a real node; the message says exactly why and what to do."""


class NodeStartError(ConfigurationError):
    """A node component did not start or become ready; the message quotes its log."""


def check_machine(state_dir: Path | None = None) -> None:
    """Raise :class:`NodeUnavailableError` unless this machine can run a real node (for
    ``state_dir``: its own network lock does not count as another node's)."""
    problems = []
    if os.geteuid() != 0:
        problems.append(
            "it must run as root (it creates a bridge, firewall rules, network namespaces,"
            " cgroups and mounts); use `kubetasks dev up --kubelet process` otherwise"
        )
    missing = [what for name, what in _COMMANDS.items() if not _which(name)]
    missing += [
        f"the CNI plugin {_CNI_BIN / name} (Debian package containernetworking-plugins)"
        for name in _CNI_PLUGINS
        if not (_CNI_BIN / name).exists()
    ]
    if missing:
        problems.append("missing " + ", ".join(missing) + ": `make node` installs them")
    unbuilt = [name for name in NODE_BINARIES if not os.access(bin_dir() / name, os.X_OK)]
    if not (bin_dir() / "pause.oci.tar").is_file():
        unbuilt.append("pause.oci.tar")
    if unbuilt:
        problems.append(f"not built in {bin_dir()}: {', '.join(unbuilt)}; run `make node`")
    if not _cgroups_usable():
        problems.append(
            f"no writable cgroup hierarchy with the memory controller under {_CGROUP_ROOT}"
            " (the kubelet needs cgroups to run pods)"
        )
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        problems.append(
            "the kernel has no bridge netfilter (br_netfilter): Services between pods on one"
            " bridge would not work"
        )
    if state_dir is not None:
        # The kubelet's longest unix socket: <state>/node/kl/pod-resources/<10 digits>.
        length = len(os.fsencode(Path(state_dir).absolute()))
        allowed = _UNIX_PATH_MAX - len("/node/kl/pod-resources/") - 10
        if length > allowed:
            problems.append(
                f"the state directory {state_dir} is too long ({length} bytes): the kubelet's"
                f" sockets below it would pass the {_UNIX_PATH_MAX}-byte limit of unix socket"
                f" paths; choose one of at most {allowed} bytes"
            )
    holder = network.owner()
    if holder is not None and holder.exists() and holder != state_dir:
        problems.append(
            f"another real node runs on this machine (state directory {holder}); stop it with"
            f" `kubetasks dev down --state-dir {holder}`"
        )
    if problems:
        raise NodeUnavailableError("this machine cannot run a real node: " + "; ".join(problems))


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _cgroups_usable() -> bool:
    v1 = _CGROUP_ROOT / "memory"
    if v1.is_dir():
        return os.access(v1, os.W_OK)
    controllers = _CGROUP_ROOT / "cgroup.controllers"
    return (
        controllers.exists()
        and "memory" in controllers.read_text().split()
        and os.access(_CGROUP_ROOT, os.W_OK)
    )


@dataclass
class RealNode:
    """The node's processes and files under ``state_dir / "node"``; pidfiles in ``run_dir``,
    logs in ``log_dir`` (the environment's), every command line naming ``state_dir``."""

    state_dir: Path
    run_dir: Path
    log_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds from the start of ``start()`` to each milestone."""

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).absolute()
        self.dir = self.state_dir / "node"
        self._processes: dict[str, ManagedProcess] = {}

    # --- where things are ---------------------------------------------------------------------
    @property
    def containerd_address(self) -> Path:
        """containerd's socket: ``ctr --address <it> -n k8s.io images import <archive>``."""
        return self.dir / "containerd" / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        """Short on purpose: the kubelet binds unix sockets below it (108 bytes at most)."""
        return self.dir / "kl"

    @property
    def marker(self) -> str:
        return str(self.state_dir)

    def pids(self) -> dict[str, int | None]:
        found: dict[str, int | None] = {}
        for name in COMPONENTS:
            pid = read_pidfile(self.run_dir / f"{name}.pid")
            found[name] = pid if pid is not None and is_running(pid, self.marker) else None
        return found

    def memory_kib(self) -> dict[str, int]:
        """Resident memory of each component, and of all the pods' shims together."""
        usage = {name: rss_kib(pid) for name, pid in self.pids().items() if pid}
        usage["containerd-shims"] = sum(rss_kib(pid) for pid in self._shim_pids())
        return usage

    # --- life cycle ------------------------------------------------------------------------------
    def start(self, plane: ControlPlane, *, timeout: float = 120.0) -> RealNode:
        """Start every component against ``plane`` (started with ``node_ip=NODE_IP``) and
        wait until the node is Ready, Services are programmed and DNS answers."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        check_machine(self.state_dir)
        pki = plane.pki.ensure_node(NODE_NAME, network.NODE_IP)
        ports = {name: free_port() for name in ("kubelet", "kubelet-healthz", "proxy-healthz",
                                                 "proxy-metrics", "scheduler", "dns-health",
                                                 "dns-ready")}  # fmt: skip
        (self.dir / "ports.json").parent.mkdir(parents=True, exist_ok=True)
        (self.dir / "ports.json").write_text(json.dumps(ports, indent=2))
        binaries = bin_dir()

        def kubeconfig(name: str, user: str, creds: ClientCert) -> Path:
            return ClusterAccess(plane.server, pki.ca_cert, creds).write_kubeconfig(
                self.dir / name / "kubeconfig", user=user
            )

        with plane.api_client() as api:
            _apply_coredns_rbac(JsonApi(api))

        # containerd, with the pause image loaded before the kubelet asks for a sandbox.
        self._write_cni_config()
        config = self._write_containerd_config()
        self._spawn("containerd", [_which_or_fail("containerd"), "--config", str(config)])
        self._wait("containerd", deadline, self._containerd_ready)
        # The pause image, and the probe the real-node tests run in pods (a few MB).
        for archive in [binaries / "pause.oci.tar", *sorted(binaries.glob("probe-*.oci.tar"))]:
            self.ctr("images", "import", str(archive))
        self.timings["containerd"] = time.monotonic() - t0

        kubelet_kubeconfig = kubeconfig("kubelet", f"system:node:{NODE_NAME}", pki.node(NODE_NAME))
        kubelet_config = self._write_kubelet_config(pki.ca_cert, pki.kubelet_serving(NODE_NAME),
                                                    ports)  # fmt: skip
        self._spawn("kubelet", [
            str(binaries / "kubelet"),
            f"--config={kubelet_config}",
            f"--kubeconfig={kubelet_kubeconfig}",
            f"--root-dir={self.kubelet_root}",
            f"--cert-dir={self.dir / 'kubelet' / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={network.NODE_IP}",
            "--v=0",
        ])  # fmt: skip

        proxy_config = self._write_proxy_config(
            kubeconfig("kube-proxy", "system:kube-proxy", pki.proxy), ports
        )
        self._spawn("kube-proxy", [str(binaries / "kube-proxy"), f"--config={proxy_config}",
                                   "--v=0"])  # fmt: skip
        scheduler_kubeconfig = kubeconfig("kube-scheduler", "system:kube-scheduler", pki.scheduler)
        self._spawn("kube-scheduler", [
            str(binaries / "kube-scheduler"),
            f"--kubeconfig={scheduler_kubeconfig}",
            f"--authentication-kubeconfig={scheduler_kubeconfig}",
            f"--authorization-kubeconfig={scheduler_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            f"--cert-dir={self.dir / 'kube-scheduler' / 'certs'}",
            "--leader-elect=false",
            "--v=0",
        ])  # fmt: skip
        corefile = self._write_corefile(kubeconfig("coredns", "kubetasks:coredns", pki.coredns),
                                        ports)  # fmt: skip
        self._spawn("coredns", [str(binaries / "coredns"), "-conf", str(corefile)])

        with plane.api_client() as api:
            json_api = JsonApi(api)
            self._wait("kubelet", deadline, lambda: _node_ready(json_api))
            self.timings["node_ready"] = time.monotonic() - t0
            probes = {
                "kube-proxy": f"http://127.0.0.1:{ports['proxy-healthz']}/healthz",
                "kube-scheduler": f"https://127.0.0.1:{ports['scheduler']}/healthz",
                "coredns": f"http://127.0.0.1:{ports['dns-ready']}/ready",
            }
            for name, url in probes.items():
                self._wait(name, deadline, functools.partial(_http_ok, url))
            self._wait("kube-proxy", deadline, lambda: _kubernetes_service_programmed(json_api))
        self.timings["ready"] = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop every component and remove what the node left on the host (see module doc)."""
        for name in ("kube-scheduler", "coredns", "kubelet", "kube-proxy"):
            self._stop(name)
        self._stop_containers()
        self._stop("containerd")
        self._remove_host_state()

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``ctr`` against this node's containerd in the CRI's namespace ``k8s.io``."""
        result = subprocess.run(
            [_which_or_fail("ctr"), "--address", str(self.containerd_address), "-n", "k8s.io",
             *args], capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if result.returncode != 0:
            raise NodeStartError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    # --- configuration files -------------------------------------------------------------------
    def _write_cni_config(self) -> None:
        conf_dir = self.dir / "cni" / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": network.CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": network.BRIDGE,
                    "isGateway": True,
                    # No masquerade: nothing from the pod network is meant to leave.
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [
                            [{"subnet": network.POD_SUBNET, "gateway": network.POD_GATEWAY}]
                        ],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "cni" / "ipam"),
                    },
                },
            ],
        }
        (conf_dir / "10-kubetasks.conflist").write_text(json.dumps(conflist, indent=2))

    def _write_containerd_config(self) -> Path:
        base = self.dir / "containerd"
        for sub in ("root", "state", "opt"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        text = f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.containerd_address}"

[ttrpc]
  address = "{self.containerd_address}.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root on this kind of VM lacks CAP_SYS_RESOURCE: no process may lower its oom_score_adj,
  # and without this every sandbox fails in runc with "can't get final child's PID".
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{_which_or_fail("runc")}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{_CNI_BIN}"
  conf_dir = "{self.dir / "cni" / "net.d"}"
  max_conf_num = 1
"""
        path = base / "config.toml"
        path.write_text(text)
        return path

    def _write_kubelet_config(
        self, ca_cert: Path, serving: ClientCert, ports: dict[str, int]
    ) -> Path:
        directory = self.dir / "kubelet"
        (directory / "pod-logs").mkdir(parents=True, exist_ok=True)
        resolv = directory / "resolv.conf"
        # Pods with dnsPolicy Default get this, not the host's resolvers: no query leaves.
        resolv.write_text(f"nameserver {network.NODE_IP}\n")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": network.NODE_IP,
            "port": ports["kubelet"],
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": ports["kubelet-healthz"],
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "containerRuntimeEndpoint": f"unix://{self.containerd_address}",
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "failCgroupV1": False,
            "oomScoreAdj": 0,
            "podLogsDir": str(directory / "pod-logs"),
            "clusterDNS": [network.NODE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(resolv),
            "rotateCertificates": False,
            "serializeImagePulls": False,
            "makeIPTablesUtilChains": False,
            "registerNode": True,
            # A developer's disk may be fuller than a CI machine's: evict only when nearly full.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
                "nodefs.inodesFree": "2%",
            },
            "imageGCHighThresholdPercent": 99,
            "imageGCLowThresholdPercent": 98,
            "nodeStatusReportFrequency": "10s",
            "shutdownGracePeriod": "0s",
        }
        path = directory / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _write_proxy_config(self, kubeconfig: Path, ports: dict[str, int]) -> Path:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": network.POD_SUBNET,
            "detectLocalMode": "ClusterCIDR",
            "healthzBindAddress": f"127.0.0.1:{ports['proxy-healthz']}",
            "metricsBindAddress": f"127.0.0.1:{ports['proxy-metrics']}",
            # NodePorts on the node address only, never on the machine's outward interface;
            # no route_localnet sysctl for localhost NodePorts.
            "nodePortAddresses": [f"{network.NODE_IP}/32"],
            "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
            # Leave the host's conntrack sysctls as they are (0 = do not set).
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.dir / "kube-proxy" / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _write_corefile(self, kubeconfig: Path, ports: dict[str, int]) -> Path:
        # No `forward`: cluster names only. Names outside the cluster domain get REFUSED
        # instead of being sent to a resolver outside this machine.
        text = f""".:53 {{
    bind {network.NODE_IP}
    errors
    health 127.0.0.1:{ports["dns-health"]}
    ready 127.0.0.1:{ports["dns-ready"]}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} kubetasks-dev
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loadbalance
}}
"""
        path = self.dir / "coredns" / "Corefile"
        path.write_text(text)
        return path

    # --- processes ---------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        process = ManagedProcess(
            name, argv, run_dir=self.run_dir, log_dir=self.log_dir, marker=self.marker,
            env=os.environ | {"PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"},
        )  # fmt: skip
        self._processes[name] = process
        process.start()

    def _wait(self, name: str, deadline: float, ready: Callable[[], bool]) -> None:
        process = self._processes[name]
        while time.monotonic() < deadline:
            if not process.running():
                raise NodeStartError(
                    f"{name} exited during start-up; log {process.log_file}:\n{process.log_tail()}"
                )
            try:
                if ready():
                    return
            except (OSError, ApiError):
                pass
            time.sleep(0.2)
        raise NodeStartError(
            f"{name} was not ready in time; log {process.log_file}:\n{process.log_tail(40)}"
        )

    def _stop(self, name: str) -> None:
        process = self._processes.pop(name, None) or ManagedProcess(
            name, [], run_dir=self.run_dir, log_dir=self.log_dir, marker=self.marker
        )
        process.stop(timeout=15)

    def _containerd_ready(self) -> bool:
        if not self.containerd_address.exists():
            return False
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1)
            sock.connect(str(self.containerd_address))
        return True

    def _shim_pids(self) -> list[int]:
        """The containerd shims of this node (their command lines name our socket)."""
        needle = str(self.containerd_address)
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if "containerd-shim" in cmdline and needle in cmdline:
                    found.append(int(entry.name))
        return found

    def _stop_containers(self) -> None:
        """Kill every container and shim of this node: through containerd while it runs,
        then whatever is left in the pods' cgroups, then the shims themselves."""
        task_ids, shim_sockets = self._task_ids(), self._shim_sockets()
        pid = read_pidfile(self.run_dir / "containerd.pid")
        if pid is not None and is_running(pid, self.marker) and self.containerd_address.exists():
            try:
                tasks = self.ctr("tasks", "ls", "-q", timeout=20).stdout.split()
                for task in tasks:
                    subprocess.run(
                        [_which_or_fail("ctr"), "--address", str(self.containerd_address),
                         "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", task],
                        capture_output=True, timeout=20,
                    )  # fmt: skip
            except (NodeStartError, subprocess.TimeoutExpired):
                pass
        for pod_pid in _kubepods_pids():
            terminate(pod_pid, timeout=2)
        for shim in self._shim_pids():
            terminate(shim, timeout=5)
        for shim_socket in shim_sockets:
            shim_socket.unlink(missing_ok=True)
        # What the shims and CNI keep outside our state directory, per container id: runc's
        # state (/run/containerd/runc/k8s.io/<id>), the CNI results of the sandboxes
        # (the `cni-loopback` network go-cni adds, and ours).
        for task_id in task_ids:
            shutil.rmtree(_RUNC_STATE / task_id, ignore_errors=True)
            for results in _CNI_RESULTS.glob(f"*-{task_id}-*"):
                results.unlink(missing_ok=True)
        # The kubelet's device-plugin socket sits at a fixed path, whatever --root-dir says.
        if _DEVICE_PLUGIN_SOCKET.exists() and not _listening(_DEVICE_PLUGIN_SOCKET):
            _DEVICE_PLUGIN_SOCKET.unlink(missing_ok=True)
            for directory in (_DEVICE_PLUGIN_SOCKET.parent, _DEVICE_PLUGIN_SOCKET.parent.parent):
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only when empty

    def _task_dirs(self) -> list[Path]:
        tasks = self.dir / "containerd" / "state" / "io.containerd.runtime.v2.task"
        return sorted(tasks.glob("*/*")) if tasks.is_dir() else []

    def _task_ids(self) -> list[str]:
        return [task.name for task in self._task_dirs()]

    def _shim_sockets(self) -> list[Path]:
        """The shims' sockets in /run/containerd/s, named by a hash of our address, the
        namespace and each task id (containerd 1.6's ``shim.SocketAddress``)."""
        found = []
        for task in self._task_dirs():
            key = os.path.join(str(self.containerd_address), task.parent.name, task.name)
            found.append(_SHIM_SOCKET_DIR / hashlib.sha256(key.encode()).hexdigest())
        return found

    def _remove_host_state(self) -> None:
        """Mounts under the state directory, the pods' cgroups, log links, then the files."""
        for mountpoint in _mounts_under(self.dir):
            subprocess.run(["umount", "-l", mountpoint], capture_output=True, timeout=30)
        _remove_kubepods_cgroups()
        if _CONTAINER_LOG_LINKS.is_dir():
            for link in _CONTAINER_LOG_LINKS.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(str(self.dir)):
                    link.unlink()
            with contextlib.suppress(OSError):
                _CONTAINER_LOG_LINKS.rmdir()  # the kubelet made it; only when empty
        shutil.rmtree(self.dir, ignore_errors=True)


def cleanup(state_dir: Path, run_dir: Path, log_dir: Path) -> None:
    """Stop and remove a real node left under ``state_dir``, whatever state it is in (the
    network goes with :func:`devenv.network.teardown`, after the API server that listens on
    it). Safe to call when there is none."""
    state_dir = Path(state_dir).absolute()
    node = RealNode(state_dir, run_dir, log_dir)
    if node.dir.exists() or any(node.pids().values()):
        node.stop()


def leftovers(state_dir: Path) -> list[str]:
    """What a real node left behind on this machine: processes, mounts, cgroups, network."""
    state_dir = Path(state_dir).absolute()
    node = RealNode(state_dir, state_dir / "run", state_dir / "logs")
    found = [f"process {name} (pid {pid})" for name, pid in node.pids().items() if pid]
    found += [f"containerd shim pid {pid}" for pid in node._shim_pids()]
    found += [f"pod process pid {pid}" for pid in _kubepods_pids()]
    found += [f"mount {m}" for m in _mounts_under(state_dir)]
    found += [f"cgroup {c}" for c in _kubepods_cgroups()]
    found += network.leftovers()
    return found


# --- host helpers ---------------------------------------------------------------------------------
def _which_or_fail(name: str) -> str:
    found = _which(name)
    if not found:
        raise NodeUnavailableError(f"{_COMMANDS.get(name, name)} is not installed: run `make node`")
    return found


def _mounts_under(directory: Path) -> list[str]:
    """Mount points at or below ``directory``, deepest first."""
    prefix = str(directory)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=len, reverse=True)


def _kubepods_cgroups() -> list[Path]:
    """The kubelet's pod cgroups (``kubepods`` in every hierarchy), deepest first."""
    found: list[Path] = []
    for hierarchy in _CGROUP_ROOT.iterdir() if _CGROUP_ROOT.is_dir() else []:
        top = hierarchy / "kubepods"
        if top.is_dir():
            found += [Path(root) for root, _dirs, _files in os.walk(top)]
    if (_CGROUP_ROOT / "kubepods").is_dir():
        found += [Path(root) for root, _d, _f in os.walk(_CGROUP_ROOT / "kubepods")]
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _kubepods_pids() -> list[int]:
    pids: set[int] = set()
    for cgroup in _kubepods_cgroups():
        try:
            pids.update(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
        except OSError:
            continue
    return sorted(pids)


def _remove_kubepods_cgroups() -> None:
    for cgroup in _kubepods_cgroups():
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(1)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _http_ok(url: str) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the scheduler's self-signed healthz certificate
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return False


def _node_ready(api: JsonApi) -> bool:
    node = api.get(f"/api/v1/nodes/{NODE_NAME}")
    conditions = node.get("status", {}).get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    # The node lifecycle controller lifts the not-ready taint once it sees the node Ready;
    # pods without a toleration are not scheduled until then.
    taints = node.get("spec", {}).get("taints") or []
    return ready and not any(t.get("key") == "node.kubernetes.io/not-ready" for t in taints)


def _kubernetes_service_programmed(api: JsonApi) -> bool:
    """The API server's own endpoints exist (lease reconciler) and kube-proxy has a rule
    for them: pods can reach ``kubernetes.default``."""
    slices = api.get(
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        labelSelector="kubernetes.io/service-name=kubernetes",
    )
    addresses = [
        a for s in slices.get("items", []) for e in s.get("endpoints") or []
        for a in e.get("addresses", [])
    ]  # fmt: skip
    if network.NODE_IP not in addresses:
        return False
    rules = subprocess.run(
        ["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True, timeout=20
    ).stdout
    return f"-d {network.NODE_IP}" in rules or f"--to-destination {network.NODE_IP}:" in rules


def _apply_coredns_rbac(api: JsonApi) -> None:
    """What CoreDNS's kubernetes plugin reads, bound to its certificate's user."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "kubetasks:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
             "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
             "verbs": ["list", "watch"]},
        ],
    }  # fmt: skip
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "kubetasks:coredns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "kubetasks:coredns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": "kubetasks:coredns"}],
    }  # fmt: skip
    for path, body in (
        ("/apis/rbac.authorization.k8s.io/v1/clusterroles", role),
        ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding),
    ):
        try:
            api.post(path, body)
        except ApiError as exc:
            if exc.status != 409:
                raise
