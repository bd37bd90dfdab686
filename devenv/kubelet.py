"""The process kubelet: runs labelled pods as local processes of this machine.

The local control plane has no scheduler and no kubelet, and this machine has no container
runtime. Worker pods still have to run for the product to work end to end, so this module
plays scheduler and kubelet for the pods that opt in with the label
``kubetasks.dev/process-kubelet: "true"`` (the WorkerPool controller puts it on worker pod
templates). Every other pod stays Pending, exactly as it would on a cluster without nodes.

For each labelled pod it

* binds the pod to its node (``pods/binding``, what the scheduler does);
* starts the first container's command as a local process (see :mod:`devenv.podspec`),
  with ``KUBECONFIG`` pointing at a token of the pod's service account, so the process has
  exactly the pod's RBAC permissions, as it would in a cluster;
* reports ``Running``/``Ready`` with the process id in the ``kubetasks.dev/pid`` annotation
  (tests ``kill -9`` it to simulate a crashed worker);
* restarts an exited process per ``restartPolicy`` with a short backoff, or reports the pod
  ``Succeeded``/``Failed``;
* on deletion, sends SIGTERM, waits up to the pod's grace period, SIGKILLs the process group
  and deletes the pod with grace 0 so it disappears, as a kubelet does.

It registers a Node (default ``kubetasks-local``) and refreshes its ``Ready`` condition. The
local control plane runs without the node lifecycle controller, so the node stays usable while
no kubelet runs. The loop is a sync ``tick()`` over a label-selected pod list every 0.2 s, run
in a thread (``start``/``stop``) for tests or in the foreground by ``kubetasks dev kubelet``.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from devenv.binaries import KUBERNETES_VERSION
from devenv.kubeapi import STRATEGIC_MERGE_PATCH, ApiError, JsonApi, JsonObject
from devenv.podspec import ContainerConfigError, command_line, container_env, local_ports
from devenv.processes import kill_group
from devenv.redis_server import free_port

PROCESS_KUBELET_LABEL = "kubetasks.dev/process-kubelet"
"""Pods labelled with this key and value ``"true"`` run as local processes."""
PID_ANNOTATION = "kubetasks.dev/pid"
"""Annotation holding the OS pid of the pod's current process."""
DEFAULT_NODE_NAME = "kubetasks-local"
KUBELET_ENV = "KUBETASKS_PROCESS_KUBELET"
"""Set in every pod process to the kubelet's work directory, so leftovers can be found."""

_HEARTBEAT_SECONDS = 20.0
_MAX_BACKOFF_SECONDS = 10.0
_TOKEN_SECONDS = 24 * 3600

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Run:
    """What the kubelet knows about one pod's local process."""

    namespace: str
    name: str
    uid: str
    restart_count: int = 0
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    next_start: float = 0.0
    """Monotonic time before which a crashed process is not restarted (backoff)."""
    finished: bool = False
    """The pod reached Succeeded or Failed; nothing runs any more."""
    kill_at: float | None = None
    """Set once SIGTERM was sent: monotonic time at which SIGKILL follows."""
    last_state: JsonObject | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class ProcessKubelet:
    """Run labelled pods as local processes; see the module docstring for the contract."""

    def __init__(
        self,
        api: k8s.ApiClient,
        work_dir: Path,
        *,
        node_name: str = DEFAULT_NODE_NAME,
        namespace: str | None = None,
        poll_interval: float = 0.2,
        stop_grace: float = 5.0,
    ) -> None:
        self.json = JsonApi(api)
        self.server = str(api.configuration.host)
        self.ca_cert = str(api.configuration.ssl_ca_cert or "")
        self.work_dir = Path(work_dir).absolute()
        self.node_name = node_name
        self.namespace = namespace
        self.poll_interval = poll_interval
        self.stop_grace = stop_grace
        self._runs: dict[str, _Run] = {}
        """By pod uid."""
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_heartbeat = 0.0

    # --- what tests look at -----------------------------------------------------------------
    def pids(self, namespace: str | None = None) -> dict[str, int]:
        """Pod name -> pid of its running process (optionally of one namespace)."""
        with self._lock:
            return {
                run.name: run.process.pid
                for run in self._runs.values()
                if run.process is not None
                and run.alive()
                and (namespace is None or run.namespace == namespace)
            }

    def log_path(self, namespace: str, name: str) -> Path:
        """Where the pod's process writes stdout and stderr (restarts append)."""
        return self.work_dir / "pods" / f"{namespace}_{name}" / "output.log"

    # --- running ----------------------------------------------------------------------------
    def start(self) -> ProcessKubelet:
        """Register the node, then run the loop in a daemon thread."""
        self.register_node()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run,
            args=(self._stop,),
            name=f"process-kubelet-{self.node_name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the loop, then stop every process (SIGTERM, ``stop_grace`` s, SIGKILL).

        The pods stay as they are in the API, as when a node's kubelet goes away.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            runs = list(self._runs.values())
            self._runs.clear()
        for run in runs:
            if run.alive() and run.process is not None:
                run.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for run in runs:
            if run.process is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.process.wait(max(0.0, deadline - time.monotonic()))
            kill_group(run.process.pid)
            run.process.wait()

    def __enter__(self) -> ProcessKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; a failing tick is logged and retried."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("process kubelet tick failed")
            stop.wait(self.poll_interval)

    def tick(self) -> None:
        """One pass: heartbeat, then bring every labelled pod's process in line with it."""
        if time.monotonic() - self._last_heartbeat > _HEARTBEAT_SECONDS:
            self.register_node()
        selector = f"{PROCESS_KUBELET_LABEL}=true"
        path = f"/api/v1/namespaces/{self.namespace}/pods" if self.namespace else "/api/v1/pods"
        pods = self.json.get(path, labelSelector=selector)["items"]
        seen = set()
        with self._lock:
            for pod in pods:
                seen.add(pod["metadata"]["uid"])
                try:
                    self._sync(pod)
                except Exception:
                    meta = pod["metadata"]
                    log.exception("syncing pod %s/%s failed", meta["namespace"], meta["name"])
            for uid in [uid for uid in self._runs if uid not in seen]:
                self._orphan(self._runs[uid])

    # --- the node ----------------------------------------------------------------------------
    def register_node(self) -> None:
        """Create the Node if needed and mark it Ready (also the periodic heartbeat)."""
        now = _now()
        try:
            self.json.post(
                "/api/v1/nodes",
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": self.node_name,
                        "labels": {
                            "kubernetes.io/hostname": self.node_name,
                            "kubernetes.io/os": "linux",
                            PROCESS_KUBELET_LABEL: "true",
                        },
                    },
                },
            )
        except ApiError as exc:
            if exc.status != 409:
                raise
        # Admission taints a new node not-ready until the (absent) node lifecycle controller
        # clears it; no scheduler reads it here, but `kubectl describe node` should not lie.
        self.json.patch(f"/api/v1/nodes/{self.node_name}", {"spec": {"taints": None}})
        capacity = {"cpu": str(os.cpu_count() or 1), "memory": "16Gi", "pods": "110"}
        self.json.patch(
            f"/api/v1/nodes/{self.node_name}/status",
            {
                "status": {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": self.node_name},
                    ],
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "process kubelet is running",
                            "lastHeartbeatTime": now,
                            # Strategic merge keeps the stored one on later heartbeats.
                            **({} if self._last_heartbeat else {"lastTransitionTime": now}),
                        }
                    ],
                    "nodeInfo": {
                        "kubeletVersion": KUBERNETES_VERSION,
                        "containerRuntimeVersion": "process://local",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                        "osImage": "kubetasks process kubelet",
                        "kernelVersion": os.uname().release,
                        "machineID": "",
                        "systemUUID": "",
                        "bootID": "",
                        "kubeProxyVersion": "",
                    },
                }
            },
            content_type=STRATEGIC_MERGE_PATCH,
        )
        self._last_heartbeat = time.monotonic()

    # --- one pod ---------------------------------------------------------------------------
    def _sync(self, pod: JsonObject) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        node = spec.get("nodeName")
        if not node:
            if meta.get("deletionTimestamp"):
                return
            self._bind(pod)
            spec["nodeName"] = node = self.node_name
        if node != self.node_name:
            return
        run = self._runs.get(uid)
        if meta.get("deletionTimestamp"):
            self._terminate(pod, run)
            return
        if run is None:
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return
            run = _Run(meta["namespace"], meta["name"], uid)
            for status in pod.get("status", {}).get("containerStatuses") or []:
                # A previous kubelet ran it: continue counting as a kubelet restart would.
                run.restart_count = int(status.get("restartCount", 0)) + 1
            self._runs[uid] = run
            self._start(pod, run)
            return
        if run.finished:
            return
        if run.process is not None and not run.alive():
            self._exited(pod, run)
        elif run.process is None and time.monotonic() >= run.next_start:
            self._start(pod, run)

    def _bind(self, pod: JsonObject) -> None:
        meta = pod["metadata"]
        self.json.post(
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": meta["name"], "uid": meta["uid"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
            },
        )

    def _start(self, pod: JsonObject, run: _Run) -> None:
        """Start the pod's process; when it cannot start, say why on the pod and retry later
        (a kubelet's CreateContainerConfigError / RunContainerError), never in a tight loop."""
        container = pod["spec"]["containers"][0]
        try:
            argv, env, cwd = self._prepare(pod, container, run)
        except (ContainerConfigError, ApiError) as exc:
            self._cannot_start(pod, run, "CreateContainerConfigError", str(exc))
            return
        try:
            with self.log_path(run.namespace, run.name).open("ab") as output:
                run.process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
        except OSError as exc:  # no such executable, not executable, ...
            self._cannot_start(pod, run, "RunContainerError", f"{argv[0]}: {exc}")
            return
        run.started_at = _now()
        log.info("started pod %s as pid %d: %s", run.key, run.process.pid, argv)
        self._annotate_pid(run)
        self._patch_status(pod, run, {"running": {"startedAt": run.started_at}}, phase="Running")

    def _prepare(
        self, pod: JsonObject, container: JsonObject, run: _Run
    ) -> tuple[list[str], dict[str, str], str | None]:
        """argv, environment and working directory of the pod's process."""
        declared = container_env(pod, container, self._lookup)
        argv = local_ports(command_line(container, declared), free_port)
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        env.update(declared)
        env[KUBELET_ENV] = str(self.work_dir)
        pod_dir = self.log_path(run.namespace, run.name).parent
        pod_dir.mkdir(parents=True, exist_ok=True)
        if pod["spec"].get("automountServiceAccountToken", True):
            env["KUBECONFIG"] = str(self._service_account_kubeconfig(pod, pod_dir))
        working_dir = container.get("workingDir")
        cwd = working_dir if working_dir and Path(working_dir).is_dir() else None
        return argv, env, cwd

    def _cannot_start(self, pod: JsonObject, run: _Run, reason: str, message: str) -> None:
        log.warning("pod %s cannot start: %s: %s", run.key, reason, message)
        run.next_start = time.monotonic() + _MAX_BACKOFF_SECONDS
        phase = "Running" if run.restart_count else "Pending"
        self._patch_status(
            pod, run, {"waiting": {"reason": reason, "message": message}}, phase=phase
        )

    def _exited(self, pod: JsonObject, run: _Run) -> None:
        assert run.process is not None
        code = run.process.returncode
        kill_group(run.process.pid)  # whatever the process left behind, as a container stop
        terminated: JsonObject = {
            "exitCode": 128 - code if code < 0 else code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": run.started_at,
            "finishedAt": _now(),
            "containerID": f"process://{run.process.pid}",
        }
        if code < 0:
            terminated["signal"] = -code
        run.process = None
        policy = pod["spec"].get("restartPolicy", "Always")
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            delay = min(0.5 * 2 ** min(run.restart_count, 5), _MAX_BACKOFF_SECONDS)
            run.next_start = time.monotonic() + delay
            run.last_state = {"terminated": terminated}
            run.restart_count += 1
            waiting = {"reason": "CrashLoopBackOff", "message": f"restarting in {delay:.1f}s"}
            self._patch_status(pod, run, {"waiting": waiting}, phase="Running")
            log.info("pod %s exited with %d; restarting in %.1fs", run.key, code, delay)
        else:
            run.finished = True
            phase = "Succeeded" if code == 0 else "Failed"
            self._patch_status(pod, run, {"terminated": terminated}, phase=phase)
            log.info("pod %s exited with %d: %s", run.key, code, phase)

    def _terminate(self, pod: JsonObject, run: _Run | None) -> None:
        """Graceful deletion: SIGTERM, up to the grace period, SIGKILL, then delete for good."""
        if run is not None and run.alive() and run.process is not None:
            if run.kill_at is None:
                meta = pod["metadata"]
                grace = meta.get("deletionGracePeriodSeconds")
                if grace is None:
                    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
                run.kill_at = time.monotonic() + float(grace)
                log.info("stopping pod %s (pid %d, grace %ss)", run.key, run.process.pid, grace)
                run.process.send_signal(signal.SIGTERM)
                return
            if time.monotonic() < run.kill_at:
                return
        if run is not None and run.process is not None:
            kill_group(run.process.pid)
            run.process.wait()
        meta = pod["metadata"]
        try:
            self.json.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": meta["uid"]},
                },
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise
        self._runs.pop(meta["uid"], None)

    def _orphan(self, run: _Run) -> None:
        """The pod vanished from the API (force deletion): stop its process all the same."""
        if run.alive() and run.process is not None:
            if run.kill_at is None:
                run.kill_at = time.monotonic() + self.stop_grace
                run.process.send_signal(signal.SIGTERM)
                return
            if time.monotonic() < run.kill_at:
                return
        if run.process is not None:
            kill_group(run.process.pid)
            run.process.wait()
        del self._runs[run.uid]

    # --- API writes --------------------------------------------------------------------------
    def _patch_status(self, pod: JsonObject, run: _Run, state: JsonObject, *, phase: str) -> None:
        meta = pod["metadata"]
        now = _now()
        ready = "True" if "running" in state else "False"
        container = pod["spec"]["containers"][0]
        status: JsonObject = {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "ready": ready == "True",
            "started": "running" in state,
            "restartCount": run.restart_count,
            "state": state,
        }
        if run.process is not None:
            status["containerID"] = f"process://{run.process.pid}"
        if run.last_state:
            status["lastState"] = run.last_state
        old_status = pod.get("status", {})
        body = {
            "status": {
                "phase": phase,
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "startTime": old_status.get("startTime") or now,
                "conditions": [
                    _condition("PodScheduled", "True", now, old_status),
                    _condition("Initialized", "True", now, old_status),
                    _condition("ContainersReady", ready, now, old_status),
                    _condition("Ready", ready, now, old_status),
                ],
                "containerStatuses": [status],
            }
        }
        try:
            updated = self.json.patch(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                body,
                content_type=STRATEGIC_MERGE_PATCH,
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            return
        pod["status"] = updated.get("status", {})

    def _annotate_pid(self, run: _Run) -> None:
        assert run.process is not None
        try:
            self.json.patch(
                f"/api/v1/namespaces/{run.namespace}/pods/{run.name}",
                {"metadata": {"annotations": {PID_ANNOTATION: str(run.process.pid)}}},
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    def _lookup(self, kind: str, namespace: str, name: str) -> JsonObject | None:
        plural = {"ConfigMap": "configmaps", "Secret": "secrets"}[kind]
        try:
            return self.json.get(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _service_account_kubeconfig(self, pod: JsonObject, pod_dir: Path) -> Path:
        """A kubeconfig with a token of the pod's service account, bound to the pod.

        The process then has the pod's permissions and no more: RBAC mistakes in the chart
        fail here as they would in a cluster, instead of hiding behind admin credentials.
        """
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName") or "default"
        answer = self.json.post(
            f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "expirationSeconds": _TOKEN_SECONDS,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                },
            },
        )
        path = pod_dir / "kubeconfig"
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server, "certificate-authority": self.ca_cert},
                }
            ],
            "users": [{"name": account, "user": {"token": answer["status"]["token"]}}],
            "contexts": [
                {
                    "name": "pod",
                    "context": {
                        "cluster": "local",
                        "user": account,
                        "namespace": meta["namespace"],
                    },
                }
            ],
            "current-context": "pod",
        }
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


def _condition(kind: str, status: str, now: str, old_status: JsonObject) -> JsonObject:
    """A pod condition whose lastTransitionTime moves only when its status changes."""
    for old in old_status.get("conditions") or []:
        if old.get("type") == kind and old.get("status") == status:
            return {
                "type": kind,
                "status": status,
                "lastTransitionTime": old.get("lastTransitionTime") or now,
            }
    return {"type": kind, "status": status, "lastTransitionTime": now}
