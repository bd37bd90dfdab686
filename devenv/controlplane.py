"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

This is what envtest is for Go operators, with one more piece: kube-controller-manager runs
too, so Deployments get ReplicaSets and Pods, namespaces are finalized, service accounts get
tokens and owner references are garbage-collected, exactly as in a cluster. RBAC and the Node
authorizer are on, so permission mistakes in the chart show up here and not in production.
There is no scheduler and no kubelet here: :mod:`devenv.kubelet` plays both for worker pods,
or :mod:`devenv.node` runs real ones.

By default everything listens on loopback and the node lifecycle controller is switched off:
the process kubelet only runs while a test or ``kubetasks dev up`` wants it, and a controller
that tainted the node and evicted its pods whenever the kubelet pauses would make tests depend
on timing. With ``node_ip`` (a real node) the API server listens and advertises there instead,
so the default endpoint reconciler publishes it as the ``kubernetes`` Service's endpoint for
kube-proxy, and every controller runs, the node lifecycle one included, so the node's
``not-ready`` taint clears as in a cluster.

Everything lives under one state directory (certificates, etcd data, logs, pidfiles, the
kubeconfig, ``controlplane.json`` with the ports), so another process can attach to a running
control plane or stop it.
"""

from __future__ import annotations

import json
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubernetes import client as k8s

from devenv.binaries import KUBERNETES_VERSION, find_binary
from devenv.pki import ClientCert, Pki
from devenv.processes import ManagedProcess, is_running, read_pidfile, rss_kib
from devenv.redis_server import free_port
from kubetasks.errors import ConfigurationError

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
_STATE_FILE = "controlplane.json"

_Probe = Callable[[], bool]


class ControlPlaneError(ConfigurationError):
    """A control-plane process did not start or become ready; the message quotes its log."""


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach the API server as one certificate-authenticated user."""

    server: str
    ca_cert: Path
    credentials: ClientCert

    def configuration(self) -> k8s.Configuration:
        # Attributes, not constructor arguments: before 36 the constructor took no TLS ones,
        # and the tests also run against the lowest kubernetes client the range allows.
        conf = k8s.Configuration(host=self.server)
        conf.ssl_ca_cert = str(self.ca_cert)
        conf.cert_file = str(self.credentials.cert)
        conf.key_file = str(self.credentials.key)
        return conf

    def api_client(self, *, impersonate: str | None = None) -> k8s.ApiClient:
        """A client for this user; ``impersonate`` acts as another user (admin may).

        Impersonating ``system:serviceaccount:<ns>:<name>`` makes the API server add that
        service account's groups, so RBAC sees exactly what a pod running as it would.
        """
        api = k8s.ApiClient(self.configuration())
        if impersonate is not None:
            api.default_headers["Impersonate-User"] = impersonate
        return api

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        ctx.load_cert_chain(str(self.credentials.cert), str(self.credentials.key))
        return ctx

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """A raw GET (health endpoints); returns status and body, never raises on HTTP errors."""
        try:
            with urllib.request.urlopen(
                self.server + path, context=self.ssl_context(), timeout=timeout
            ) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode(errors="replace")

    def write_kubeconfig(self, path: Path, *, user: str = "admin") -> Path:
        """A kubeconfig for kubectl, helm and kubernetes clients, pointing at file paths."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubetasks-dev",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate": str(self.credentials.cert),
                        "client-key": str(self.credentials.key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "kubetasks-dev",
                    "context": {"cluster": "kubetasks-dev", "user": user, "namespace": "default"},
                }
            ],
            "current-context": "kubetasks-dev",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path


@dataclass(frozen=True)
class ApiserverRestart:
    """What :meth:`ControlPlane.restart_apiserver` took, in seconds."""

    stopping: float
    """From SIGTERM until the old process exited."""
    down: float
    """From its exit until the new process was started."""
    answering: float
    """From the new process's start until it first answered (``/readyz`` with any status:
    it serves requests before all its start-up hooks are done)."""
    starting: float
    """From the new process's start until ``/readyz`` said ok."""

    @property
    def unavailable(self) -> float:
        """From SIGTERM until the new server was ready: the outage its clients saw, at most."""
        return self.stopping + self.down + self.starting


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager with all state under ``state_dir``.

    ``start()`` blocks until the API server is ready and the controller manager has created
    the ``default`` service account (the sign that its controllers run), then the admin
    kubeconfig is at :attr:`kubeconfig`. ``stop()`` stops all three and leaves no process.
    """

    state_dir: Path
    node_ip: str | None = None
    """Listen and advertise on this local address (a real node's), not on loopback."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds from the start of ``start()`` to each milestone (for the reports)."""

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).absolute()
        self.pki = Pki(self.state_dir / "pki")
        self.kubeconfig = self.state_dir / "kubeconfig"
        self._ports: dict[str, int] = {}
        self._processes: dict[str, ManagedProcess] = {}

    # --- where things are -------------------------------------------------------------
    @property
    def server(self) -> str:
        return f"https://{self.node_ip or '127.0.0.1'}:{self._port('apiserver')}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self._port('etcd')}"

    @property
    def admin(self) -> ClusterAccess:
        """Admin access (group ``system:masters``)."""
        return ClusterAccess(self.server, self.pki.ca_cert, self.pki.admin)

    def api_client(self, *, impersonate: str | None = None) -> k8s.ApiClient:
        return self.admin.api_client(impersonate=impersonate)

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def pids(self) -> dict[str, int]:
        """Pid of each running component, from the pidfiles."""
        found = {}
        for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
            pid = read_pidfile(self.run_dir / f"{name}.pid")
            if pid is not None:
                found[name] = pid
        return found

    def memory_kib(self) -> dict[str, int]:
        """Resident memory (VmRSS) of each component in KiB."""
        return {name: rss_kib(pid) for name, pid in self.pids().items()}

    def _port(self, name: str) -> int:
        if name not in self._ports:
            raise ControlPlaneError("the control plane is not started (no ports yet)")
        return self._ports[name]

    # --- life cycle ---------------------------------------------------------------------
    @classmethod
    def attach(cls, state_dir: Path) -> ControlPlane:
        """The control plane a previous ``start()`` left under ``state_dir`` (may be dead)."""
        plane = cls(state_dir)
        try:
            saved = json.loads((plane.state_dir / _STATE_FILE).read_text())
        except FileNotFoundError as exc:
            raise ControlPlaneError(f"no control plane state in {plane.state_dir}") from exc
        plane._ports = {str(k): int(v) for k, v in saved["ports"].items()}
        plane.node_ip = saved.get("node_ip")
        return plane

    def healthy(self) -> bool:
        """All three processes alive and ``/readyz`` says ok."""
        marker = str(self.state_dir)
        pids = self.pids()
        if len(pids) != 3 or not all(is_running(pid, marker) for pid in pids.values()):
            return False
        try:
            status, _ = self.admin.get("/readyz", timeout=2)
        except OSError:
            return False
        return status == 200

    def start(self, timeout: float = 90.0) -> ControlPlane:
        """Start the three processes and wait until they serve; on failure stop them all.

        Ports are picked free just before the processes bind them, so another process can
        take one in between; that case (and only that one) is retried with fresh ports.
        """
        t0 = time.monotonic()
        deadline = t0 + timeout
        binaries = {
            n: find_binary(n) for n in ("etcd", "kube-apiserver", "kube-controller-manager")
        }
        self.pki.ensure()
        for attempt in range(3):
            try:
                self._start(binaries, t0, deadline)
                return self
            except ControlPlaneError as exc:
                self.stop(remove_data=True)
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _start(self, binaries: dict[str, Path], t0: float, deadline: float) -> None:
        self._ports = {"etcd": free_port(), "etcd-peer": free_port(), "apiserver": free_port()}
        (self.state_dir / _STATE_FILE).write_text(
            json.dumps(
                {"version": KUBERNETES_VERSION, "ports": self._ports, "node_ip": self.node_ip},
                indent=2,
            )
        )
        self._spawn("etcd", [str(binaries["etcd"]), *self._etcd_args()])
        self._wait("etcd", deadline, self._etcd_ready)
        self.timings["etcd"] = time.monotonic() - t0
        self._spawn("kube-apiserver", [str(binaries["kube-apiserver"]), *self._apiserver_args()])
        self._wait("kube-apiserver", deadline, self._apiserver_ready)
        self.timings["apiserver_ready"] = time.monotonic() - t0
        self.admin.write_kubeconfig(self.kubeconfig)
        kcm_kubeconfig = ClusterAccess(
            self.server, self.pki.ca_cert, self.pki.controller_manager
        ).write_kubeconfig(self.state_dir / "kcm.kubeconfig", user="kube-controller-manager")
        self._spawn(
            "kube-controller-manager",
            [str(binaries["kube-controller-manager"]), *self._kcm_args(kcm_kubeconfig)],
        )
        self._wait("kube-controller-manager", deadline, self._controllers_ready)
        self.timings["controllers_ready"] = time.monotonic() - t0

    def stop(self, *, remove_data: bool = False) -> None:
        """Stop the controller manager, the API server, then etcd; no process is left."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            process = self._processes.pop(name, None) or ManagedProcess(
                name, [], run_dir=self.run_dir, log_dir=self.log_dir, marker=str(self.state_dir)
            )
            process.stop()
        if remove_data:
            shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)

    def restart_apiserver(self, down: float = 0.0, timeout: float = 60.0) -> ApiserverRestart:
        """Stop kube-apiserver with SIGTERM, as a rollout does, keep it stopped ``down``
        seconds after it exited, then start it again with the arguments ``start()`` gave it
        (the same port, certificates and etcd, whose data survives) and wait until
        ``/readyz`` is ok. etcd and the controller manager keep running; clients reach the
        new server at the old address."""
        t0 = time.monotonic()
        old = self._processes.pop("kube-apiserver", None) or ManagedProcess(
            "kube-apiserver", [], run_dir=self.run_dir, log_dir=self.log_dir,
            marker=str(self.state_dir),
        )  # fmt: skip
        # Its graceful shutdown takes a second or two (see ``--shutdown-send-retry-after``);
        # the longer timeout keeps a slow one from being SIGKILLed.
        old.stop(timeout=30)
        exited = time.monotonic()
        time.sleep(down)
        started = time.monotonic()
        argv = [str(find_binary("kube-apiserver")), *self._apiserver_args()]
        answered: list[float] = []

        def ready() -> bool:
            try:
                status, _ = self.admin.get("/readyz", timeout=2)
            except OSError:
                return False
            if not answered:
                answered.append(time.monotonic())
            return status == 200

        self._spawn("kube-apiserver", argv)
        self._wait("kube-apiserver", started + timeout, ready)
        done = time.monotonic()
        return ApiserverRestart(
            exited - t0, started - exited, answered[0] - started, done - started
        )

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the processes --------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        process = ManagedProcess(
            name, argv, run_dir=self.run_dir, log_dir=self.log_dir, marker=str(self.state_dir)
        )
        self._processes[name] = process
        process.start()

    def _wait(self, name: str, deadline: float, ready: _Probe) -> None:
        process = self._processes[name]
        while time.monotonic() < deadline:
            if not process.running():
                raise ControlPlaneError(
                    f"{name} exited during start-up; log {process.log_file}:\n{process.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise ControlPlaneError(
            f"{name} was not ready in time; log {process.log_file}:\n{process.log_tail()}"
        )

    def _etcd_args(self) -> list[str]:
        client, peer = f"http://127.0.0.1:{self._ports['etcd']}", self._peer_url
        return [
            "--name=kubetasks",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=kubetasks={peer}",
            # A throwaway dev/test store: durability on power loss buys nothing here and
            # fsync on a shared disk is the slowest part of every write.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    @property
    def _peer_url(self) -> str:
        return f"http://127.0.0.1:{self._ports['etcd-peer']}"

    def _apiserver_args(self) -> list[str]:
        pki = self.pki
        address = self.node_ip or "127.0.0.1"
        args = [
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={address}",
            f"--advertise-address={address}",
            f"--secure-port={self._ports['apiserver']}",
            f"--cert-dir={self.state_dir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving.cert}",
            f"--tls-private-key-file={pki.serving.key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # `kubectl logs` and `exec` go through the kubelet: verify it, show it who we are.
            f"--kubelet-client-certificate={pki.kubelet_client.cert}",
            f"--kubelet-client-key={pki.kubelet_client.key}",
            f"--kubelet-certificate-authority={pki.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--allow-privileged=true",
            # On SIGTERM, drain the requests in flight (new ones get 429 and Retry-After),
            # then close the connections left, watches included, within 2 s. Without it the
            # server holds each open watch (the controller manager always has some) until its
            # 60 s shutdown timeout, as a kube-apiserver rolled with the defaults does.
            "--shutdown-send-retry-after=true",
            "--profiling=false",
            "--v=0",
        ]
        if self.node_ip is None:
            # No node runs the `kubernetes` Service's endpoints, and a loopback address is not
            # a valid endpoint: skip maintaining them instead of logging errors forever.
            args.append("--endpoint-reconciler-type=none")
        else:
            args.append(f"--admission-control-config-file={self._write_pod_security()}")
        return args

    def _write_pod_security(self) -> Path:
        """Pod Security ``baseline`` enforced in every namespace by default (a namespace label
        can still opt out). With a real node this keeps pods off the host's network: a
        ``hostNetwork`` pod's packets are the host's own, and the pod network's firewall
        (:mod:`devenv.network`) would not see them."""
        config = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "AdmissionConfiguration",
            "plugins": [
                {
                    "name": "PodSecurity",
                    "configuration": {
                        "apiVersion": "pod-security.admission.config.k8s.io/v1",
                        "kind": "PodSecurityConfiguration",
                        "defaults": {"enforce": "baseline", "enforce-version": "latest"},
                        "exemptions": {"usernames": [], "runtimeClasses": [], "namespaces": []},
                    },
                }
            ],
        }
        path = self.state_dir / "admission.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _kcm_args(self, kubeconfig: Path) -> list[str]:
        pki = self.pki
        return [
            f"--kubeconfig={kubeconfig}",
            "--secure-port=0",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--controllers=*" if self.node_ip else "--controllers=*,-node-lifecycle-controller",
            "--v=0",
        ]

    # --- readiness probes -------------------------------------------------------------------
    def _etcd_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=1) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _apiserver_ready(self) -> bool:
        try:
            status, _ = self.admin.get("/readyz", timeout=2)
        except OSError:
            return False
        return status == 200

    def _controllers_ready(self) -> bool:
        """The service account controller has made `default/default`: controllers run."""
        try:
            status, _ = self.admin.get("/api/v1/namespaces/default/serviceaccounts/default", 2)
        except OSError:
            return False
        return status == 200
