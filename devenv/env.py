"""``kubetasks dev up|down|status``: one local environment that outlives the command.

``up`` starts the control plane, a Redis and a kubelet as background processes and returns;
every file they use is under one state directory (``$KUBETASKS_DEV_DIR``, default
``~/.cache/kubetasks/dev``), so ``down`` or ``status`` from any other shell finds them through
the pidfiles. The kubelet is one of three (``--kubelet``): ``process`` (the default, fast:
worker pods as local processes, :mod:`devenv.kubelet`), ``real`` (containerd, kubelet,
kube-proxy, kube-scheduler and CoreDNS on a bridge network, :mod:`devenv.node`) or ``none``.
A second ``up`` reuses a healthy environment and replaces a broken or stale one
(processes gone after a reboot, say) instead of starting a second copy next to it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from devenv import network
from devenv.binaries import cache_dir
from devenv.controlplane import ControlPlane, ControlPlaneError
from devenv.crds import apply_crds
from devenv.kubeapi import ApiError, JsonApi
from devenv.kubelet import DEFAULT_NODE_NAME, KUBELET_ENV, PROCESS_KUBELET_LABEL
from devenv.node import COMPONENTS as NODE_COMPONENTS
from devenv.node import RealNode, check_machine
from devenv.processes import ManagedProcess, is_running, read_pidfile, terminate
from devenv.redis_server import RedisServer, free_port

_ENV_FILE = "env.json"
KUBELETS = ("process", "real", "none")


def default_state_dir() -> Path:
    """``$KUBETASKS_DEV_DIR``, else ``~/.cache/kubetasks/dev``."""
    explicit = os.environ.get("KUBETASKS_DEV_DIR")
    return Path(explicit) if explicit else cache_dir() / "dev"


@dataclass
class DevStatus:
    """What ``status`` reports; ``healthy`` only when every component serves."""

    state_dir: Path
    kubeconfig: Path
    redis_url: str | None
    components: dict[str, int | None] = field(default_factory=dict)
    """Component name -> pid when running, None when not."""
    healthy: bool = False
    reused: bool = False
    kubelet: str = "none"
    """Which kubelet the environment runs: ``process``, ``real`` or ``none``."""
    containerd_address: Path | None = None
    """The real node's containerd socket (``kubelet == "real"``), else None."""

    def exports(self) -> str:
        """Shell lines to point kubectl, helm and kubetasks at this environment."""
        lines = [f"export KUBECONFIG={self.kubeconfig}"]
        if self.redis_url:
            lines.append(f"export KUBETASKS_REDIS_URL={self.redis_url}")
        if self.containerd_address:
            lines.append(f"export KUBETASKS_CONTAINERD_ADDRESS={self.containerd_address}")
        return "\n".join(lines)


@dataclass
class DevEnvironment:
    """The environment under ``state_dir``; see the module docstring."""

    state_dir: Path = field(default_factory=default_state_dir)
    operator_metrics_port: int = field(default=0, init=False)
    """Where the operator of ``start_operator`` serves /metrics."""
    _plane: ControlPlane | None = field(default=None, init=False, repr=False)
    _redis: RedisServer | None = field(default=None, init=False, repr=False)
    """What this object's ``up`` started, kept (with their Popen handles) until ``down``
    stops and reaps them: dropped while they ran, they were a ResourceWarning each."""

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir or default_state_dir()).absolute()

    @property
    def control_plane_dir(self) -> Path:
        return self.state_dir / "controlplane"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def kubelet_dir(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def containerd_address(self) -> Path:
        """The real node's containerd socket (there only while ``up(kubelet="real")`` runs)."""
        return self.node.containerd_address

    @functools.cached_property
    def node(self) -> RealNode:
        """The real node of this environment (its processes run only with ``kubelet="real"``).

        One object per environment: the one that started the node's processes keeps their
        Popen handles until ``down``; a fresh one per access dropped them while the processes
        ran (a ResourceWarning, an error under the tests' ``filterwarnings = error``)."""
        return RealNode(self.state_dir, self.run_dir, self.log_dir)

    @property
    def marker(self) -> str:
        """Every process we start mentions this in its command line (see processes.py)."""
        return str(self.state_dir)

    # --- the three commands --------------------------------------------------------------
    def status(self) -> DevStatus:
        saved = self._saved()
        redis_port = saved.get("redis_port")
        result = DevStatus(
            state_dir=self.state_dir,
            kubeconfig=self.control_plane_dir / "kubeconfig",
            redis_url=f"redis://127.0.0.1:{redis_port}/0" if redis_port else None,
        )
        plane_ok = False
        result.components = dict.fromkeys(("etcd", "kube-apiserver", "kube-controller-manager"))
        if (self.control_plane_dir / "controlplane.json").exists():
            plane = ControlPlane.attach(self.control_plane_dir)
            for name, plane_pid in plane.pids().items():
                running = is_running(plane_pid, self.marker)
                result.components[name] = plane_pid if running else None
            plane_ok = plane.healthy()
        result.kubelet = _kubelet_mode(saved.get("kubelet", "none"))
        names = ["redis", *(NODE_COMPONENTS if result.kubelet == "real" else ["kubelet"])]
        for name in names:
            pid = read_pidfile(self.run_dir / f"{name}.pid")
            result.components[name] = (
                pid if pid is not None and is_running(pid, self.marker) else None
            )
        expected = {"etcd", "kube-apiserver", "kube-controller-manager", "redis"}
        if result.kubelet == "process":
            expected.add("kubelet")
        elif result.kubelet == "real":
            expected.update(NODE_COMPONENTS)
            result.containerd_address = self.containerd_address
        result.healthy = plane_ok and all(result.components.get(name) for name in expected)
        return result

    def up(
        self,
        *,
        kubelet: str | bool = "process",
        crds: Path | None = None,
        timeout: float = 120.0,
    ) -> DevStatus:
        """Reuse a healthy environment with the same kubelet, else clean up what is left and
        start a fresh one. ``kubelet``: ``process``, ``real`` or ``none`` (True and False
        mean ``process`` and ``none``, as before there were three)."""
        mode = _kubelet_mode(kubelet)
        if mode == "real":
            check_machine(self.state_dir)  # before touching anything: say exactly why not
        current = self.status()
        if current.healthy and current.kubelet == mode:
            current.reused = True
            return current
        self.down()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.log_dir, ignore_errors=True)
        try:
            (self.state_dir / _ENV_FILE).write_text(json.dumps({"kubelet": mode}, indent=2))
            if mode == "real":
                network.setup(self.state_dir)  # the API server listens on the node address
            plane = ControlPlane(
                self.control_plane_dir, node_ip=network.NODE_IP if mode == "real" else None
            ).start(timeout=timeout)
            self._plane = plane
            redis = self._redis = RedisServer(data_dir=self.state_dir / "redis").start()
            assert redis.process is not None
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "redis.pid").write_text(f"{redis.process.pid}\n")
            # The server outlives this command; drop our end of its stderr pipe.
            if redis.process.stderr:
                redis.process.stderr.close()
            (self.state_dir / _ENV_FILE).write_text(
                json.dumps(
                    {
                        "redis_port": redis.port,
                        "kubelet": mode,
                        "containerd_address": (
                            str(self.containerd_address) if mode == "real" else None
                        ),
                    },
                    indent=2,
                )
            )
            if crds is not None and crds.is_dir():
                with plane.api_client() as api:
                    apply_crds(JsonApi(api), crds)
            if mode == "process":
                self._start_kubelet(plane, deadline=time.monotonic() + 30)
            elif mode == "real":
                self.node.start(plane, timeout=timeout)
        except BaseException:
            self.down()
            raise
        return self.status()

    def start_operator(self, namespaces: list[str], extra_env: dict[str, str]) -> ManagedProcess:
        """``kubetasks operator`` for ``namespaces``, against this environment, in the
        background (``down`` stops it). Worker pods of its pools are marked for the process
        kubelet, so WorkerPools run here as local processes."""
        status = self.status()
        env = (
            os.environ
            | extra_env
            | {
                "KUBECONFIG": str(status.kubeconfig),
                "KUBETASKS_REDIS_URL": status.redis_url or "",
                "KUBETASKS_WORKER_POD_LABELS": f"{PROCESS_KUBELET_LABEL}=true",
            }
        )
        self.operator_metrics_port = free_port()
        argv = [sys.executable, "-m", "kubetasks.cli", "operator", "--standalone",
                "--health-port", str(free_port()),
                "--metrics-port", str(self.operator_metrics_port)]  # fmt: skip
        for namespace in namespaces:
            argv += ["--namespace", namespace]
        workdir = self.run_dir / "operator"
        workdir.mkdir(parents=True, exist_ok=True)
        process = ManagedProcess(
            "operator", argv, run_dir=self.run_dir, log_dir=self.log_dir, marker=self.marker,
            env=env, cwd=workdir,
        )  # fmt: skip
        process.start()
        return process

    def down(self) -> None:
        """Stop every process of the environment and remove its data (logs are kept)."""
        operator_pid = read_pidfile(self.run_dir / "operator.pid")
        if operator_pid is not None:
            terminate(operator_pid, self.marker, timeout=20)
        node = self.node  # the object that started the node holds (and reaps) its processes
        real = _kubelet_mode(self._saved().get("kubelet", "none")) == "real"
        if real or node.dir.exists() or any(node.pids().values()):
            node.stop()
        kubelet_pid = read_pidfile(self.run_dir / "kubelet.pid")
        if kubelet_pid is not None:
            terminate(kubelet_pid, self.marker, timeout=20)  # it stops its pods' processes
        self._stop_leftover_pods()
        if self._plane is not None:
            self._plane.stop()
            self._plane = None
        elif (self.control_plane_dir / "controlplane.json").exists():
            ControlPlane.attach(self.control_plane_dir).stop()
        else:
            ControlPlane(self.control_plane_dir).stop()
        if self._redis is not None:
            self._redis.stop(keep_data=True)  # its directory goes with the rest below
            self._redis = None
        redis_pid = read_pidfile(self.run_dir / "redis.pid")
        if redis_pid is not None:
            terminate(redis_pid, self.marker)
        network.teardown(self.state_dir)  # after the API server: it listened on the bridge
        for name in ("controlplane", "redis", "run", "kubelet", "node", _ENV_FILE):
            path = self.state_dir / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    # --- helpers ------------------------------------------------------------------------------
    def _saved(self) -> dict[str, object]:
        try:
            data: dict[str, object] = json.loads((self.state_dir / _ENV_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data

    def _start_kubelet(self, plane: ControlPlane, *, deadline: float) -> None:
        process = ManagedProcess(
            "kubelet",
            [sys.executable, "-m", "devenv.commands", "kubelet", "--state-dir", self.marker],
            run_dir=self.run_dir,
            log_dir=self.log_dir,
            marker=self.marker,
        )
        process.start()
        with plane.api_client() as api:
            json_api = JsonApi(api)
            while True:
                if not process.running():
                    raise ControlPlaneError(f"the process kubelet exited:\n{process.log_tail()}")
                try:
                    node = json_api.get(f"/api/v1/nodes/{DEFAULT_NODE_NAME}")
                    conditions = node.get("status", {}).get("conditions") or []
                    if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                        return
                except ApiError:
                    pass
                if time.monotonic() > deadline:
                    raise ControlPlaneError(
                        f"the process kubelet did not register its node:\n{process.log_tail()}"
                    )
                time.sleep(0.2)

    def _stop_leftover_pods(self) -> None:
        """Processes of pods whose kubelet died without stopping them (kill -9 of the kubelet).

        The kubelet names its work directory in every pod process's environment
        (``KUBETASKS_PROCESS_KUBELET``), so /proc tells us which processes are ours.
        """
        needle = f"{KUBELET_ENV}={self.kubelet_dir}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                terminate(int(entry.name), timeout=5)


def _kubelet_mode(value: object) -> str:
    """``process``, ``real`` or ``none``; True/False from older callers and env.json files."""
    if value is True:
        return "process"
    if value is False or value is None:
        return "none"
    if value not in KUBELETS:
        raise ValueError(f"kubelet must be one of {', '.join(KUBELETS)}, not {value!r}")
    return str(value)
