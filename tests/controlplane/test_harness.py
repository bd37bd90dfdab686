"""The local control plane behaves like a cluster where it matters to kubetasks.

These tests pin down what the rest of the suite relies on: the API server serves with RBAC,
kube-controller-manager turns Deployments into pods, the process kubelet runs exactly the
labelled pods as local processes and stops them with SIGTERM when they are scaled away.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

import devenv.controlplane as controlplane_module
from devenv.binaries import KUBERNETES_VERSION, find_kubectl
from devenv.controlplane import ControlPlane
from devenv.kubelet import PID_ANNOTATION, PROCESS_KUBELET_LABEL, ProcessKubelet
from devenv.processes import is_running
from devenv.redis_server import free_port
from fixtures.controlplane import Impersonate, Kubectl
from fixtures.kube import meta, pod_status, present

pytestmark = pytest.mark.controlplane

# A stand-in worker: runs until SIGTERM, then records that it was told to stop and exits 0.
WORKER = """
import os, signal, sys, time
marker = os.path.join(sys.argv[1], os.environ["POD_NAME"])
def stop(signum, frame):
    with open(marker + ".sigterm", "w") as f:
        f.write(str(os.getpid()))
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
with open(marker + ".started", "w") as f:
    f.write(os.environ["POD_NAMESPACE"] + " " + os.environ["GREETING"])
while True:
    time.sleep(0.1)
"""


def eventually(check: Callable[[], object], timeout: float = 30.0, interval: float = 0.1) -> object:
    """Poll ``check`` until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value:
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)
        value = check()
    return value


def deployment(
    name: str, *, labelled: bool, argv: list[str], replicas: int = 0
) -> k8s.V1Deployment:
    labels = {"app": name}
    if labelled:
        labels[PROCESS_KUBELET_LABEL] = "true"
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas,
            selector=k8s.V1LabelSelector(match_labels={"app": name}),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(
                    termination_grace_period_seconds=10,
                    containers=[
                        k8s.V1Container(
                            name="worker",
                            image="kubetasks-worker:dev",
                            command=argv[:1],
                            args=argv[1:],
                            env=[k8s.V1EnvVar(name="GREETING", value="hello")],
                        )
                    ],
                ),
            ),
        ),
    )


def running_pods(core: k8s.CoreV1Api, namespace: str, app: str) -> list[k8s.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [p for p in pods if p.status and p.status.phase == "Running"]


def test_api_server_is_ready_and_reports_the_pinned_version(control_plane: ControlPlane) -> None:
    status, body = control_plane.admin.get("/readyz")
    assert (status, body) == (200, "ok")
    status, body = control_plane.admin.get("/version")
    assert status == 200
    assert yaml.safe_load(body)["gitVersion"] == KUBERNETES_VERSION


def test_binary_version_matches_the_go_module() -> None:
    go_mod = (Path(__file__).parent / "go.mod").read_text()
    assert re.search(rf"^require k8s\.io/kubernetes {re.escape(KUBERNETES_VERSION)}$", go_mod, re.M)


def test_deployment_scale_runs_and_stops_local_processes(
    kube_api: k8s.ApiClient, namespace: str, process_kubelet: ProcessKubelet, tmp_path: Path
) -> None:
    apps, core = k8s.AppsV1Api(kube_api), k8s.CoreV1Api(kube_api)
    argv = [sys.executable, "-c", WORKER, str(tmp_path)]
    apps.create_namespaced_deployment(namespace, deployment("workers", labelled=True, argv=argv))

    apps.patch_namespaced_deployment_scale("workers", namespace, {"spec": {"replicas": 3}})
    eventually(lambda: len(running_pods(core, namespace, "workers")) == 3)
    pids = process_kubelet.pids(namespace)
    assert len(pids) == 3
    for name, pid in pids.items():
        assert is_running(pid)
        pod = core.read_namespaced_pod(name, namespace)
        assert present(meta(pod).annotations)[PID_ANNOTATION] == str(pid)
        assert present(pod.spec).node_name == process_kubelet.node_name
        assert pod_status(pod).pod_ip == "127.0.0.1"
        conditions = present(pod_status(pod).conditions)
        assert {c.type: c.status for c in conditions}["Ready"] == "True"
        marker = tmp_path / f"{name}.started"
        started = eventually(marker.exists)
        assert started
        assert (tmp_path / f"{name}.started").read_text() == f"{namespace} hello"
    eventually(
        lambda: (
            present(apps.read_namespaced_deployment("workers", namespace).status).ready_replicas
            == 3
        )
    )

    apps.patch_namespaced_deployment_scale("workers", namespace, {"spec": {"replicas": 1}})
    eventually(
        lambda: len(core.list_namespaced_pod(namespace, label_selector="app=workers").items) == 1
    )
    remaining = process_kubelet.pids(namespace)
    assert len(remaining) == 1
    stopped = set(pids) - set(remaining)
    assert len(stopped) == 2
    for name in stopped:
        # The SIGTERM handler ran in the very process the pod had.
        assert (tmp_path / f"{name}.sigterm").read_text() == str(pids[name])
        assert not is_running(pids[name])
    (survivor,) = remaining
    assert not (tmp_path / f"{survivor}.sigterm").exists()

    # Deleting the Deployment leaves its ReplicaSet and pod to the garbage collector.
    apps.delete_namespaced_deployment("workers", namespace, propagation_policy="Background")
    eventually(lambda: not core.list_namespaced_pod(namespace, label_selector="app=workers").items)
    assert not apps.list_namespaced_replica_set(namespace).items
    assert (tmp_path / f"{survivor}.sigterm").read_text() == str(remaining[survivor])
    assert process_kubelet.pids(namespace) == {}


def test_unlabelled_pods_stay_pending(
    kube_api: k8s.ApiClient, namespace: str, process_kubelet: ProcessKubelet, tmp_path: Path
) -> None:
    apps, core = k8s.AppsV1Api(kube_api), k8s.CoreV1Api(kube_api)
    argv = [sys.executable, "-c", WORKER, str(tmp_path)]
    apps.create_namespaced_deployment(
        namespace, deployment("plain", labelled=False, argv=argv, replicas=1)
    )
    apps.create_namespaced_deployment(
        namespace, deployment("labelled", labelled=True, argv=argv, replicas=1)
    )
    # The labelled one running proves the kubelet has looked at both.
    eventually(lambda: running_pods(core, namespace, "labelled"))
    time.sleep(1)
    (pod,) = core.list_namespaced_pod(namespace, label_selector="app=plain").items
    assert pod_status(pod).phase == "Pending"
    assert present(pod.spec).node_name is None
    assert list(process_kubelet.pids(namespace)) == [
        meta(p).name for p in running_pods(core, namespace, "labelled")
    ]


def test_killed_process_is_restarted_with_a_new_pid(
    kube_api: k8s.ApiClient, namespace: str, process_kubelet: ProcessKubelet, tmp_path: Path
) -> None:
    apps, core = k8s.AppsV1Api(kube_api), k8s.CoreV1Api(kube_api)
    argv = [sys.executable, "-c", WORKER, str(tmp_path)]
    apps.create_namespaced_deployment(
        namespace, deployment("crashy", labelled=True, argv=argv, replicas=1)
    )
    pids = eventually(lambda: process_kubelet.pids(namespace))
    assert isinstance(pids, dict)
    ((name, pid),) = pids.items()
    os.kill(pid, 9)

    def restarted() -> k8s.V1ContainerStatus | None:
        pod = core.read_namespaced_pod(name, namespace)
        statuses = pod_status(pod).container_statuses or []
        ok = statuses and statuses[0].restart_count == 1 and statuses[0].ready
        return statuses[0] if ok else None

    status = eventually(restarted)
    assert isinstance(status, k8s.V1ContainerStatus)
    assert present(present(status.last_state).terminated).exit_code == 137
    new_pid = process_kubelet.pids(namespace)[name]
    assert new_pid != pid
    pod = core.read_namespaced_pod(name, namespace)
    assert present(meta(pod).annotations)[PID_ANNOTATION] == str(new_pid)


def test_pod_process_acts_as_its_service_account(
    kube_api: k8s.ApiClient, namespace: str, process_kubelet: ProcessKubelet, tmp_path: Path
) -> None:
    """KUBECONFIG in a pod process carries a token of the pod's service account: the
    process is refused what the account may not do, as in a real pod."""
    core = k8s.CoreV1Api(kube_api)
    script = textwrap.dedent(
        """
        import subprocess, sys
        kubectl, out = sys.argv[1:]
        who = [kubectl, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]
        user = subprocess.run(who, capture_output=True, text=True).stdout
        secrets = subprocess.run([kubectl, "get", "secrets"], capture_output=True).returncode
        open(out, "w").write(f"{user}\\n{secrets}")
        """
    )
    out = tmp_path / "whoami"
    core.create_namespaced_pod(
        namespace,
        k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name="whoami", labels={PROCESS_KUBELET_LABEL: "true"}),
            spec=k8s.V1PodSpec(
                restart_policy="Never",
                containers=[
                    k8s.V1Container(
                        name="main",
                        image="x",
                        command=[sys.executable, "-c", script, str(find_kubectl()), str(out)],
                    )
                ],
            ),
        ),
    )
    eventually(
        lambda: pod_status(core.read_namespaced_pod("whoami", namespace)).phase == "Succeeded"
    )
    user, secrets_rc = out.read_text().split("\n")
    assert user == f"system:serviceaccount:{namespace}:default"
    assert secrets_rc == "1"


def test_service_account_gets_only_what_its_role_grants(
    kube_api: k8s.ApiClient, namespace: str, impersonate: Impersonate, kubectl: Kubectl
) -> None:
    core, rbac = k8s.CoreV1Api(kube_api), k8s.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="reader"))
    )
    rbac.create_namespaced_role(
        namespace,
        k8s.V1Role(
            metadata=k8s.V1ObjectMeta(name="configmap-reader"),
            rules=[
                k8s.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="reader"),
            role_ref=k8s.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"
            ),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        ),
    )
    core.create_namespaced_config_map(
        namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="settings"), data={"a": "1"})
    )
    as_reader = k8s.CoreV1Api(impersonate(namespace, "reader"))

    assert as_reader.read_namespaced_config_map("settings", namespace).data == {"a": "1"}
    names = {meta(c).name for c in as_reader.list_namespaced_config_map(namespace).items}
    assert "settings" in names
    with pytest.raises(k8s.ApiException) as refused:
        as_reader.list_namespaced_secret(namespace)
    assert refused.value.status == 403
    with pytest.raises(k8s.ApiException) as refused:
        as_reader.create_namespaced_pod(
            namespace,
            k8s.V1Pod(
                metadata=k8s.V1ObjectMeta(name="nope"),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="c", image="x")]),
            ),
        )
    assert refused.value.status == 403
    with pytest.raises(k8s.ApiException) as refused:
        as_reader.list_namespaced_config_map("default")
    assert refused.value.status == 403

    as_sa = f"--as=system:serviceaccount:{namespace}:reader"
    for verb, resource, expected in (
        ("list", "configmaps", "yes"),
        ("get", "secrets", "no"),
        ("create", "pods", "no"),
        ("delete", "configmaps", "no"),
    ):
        result = kubectl("auth", "can-i", verb, resource, "-n", namespace, as_sa)
        assert result.stdout.strip() == expected, (verb, resource, result.stderr)


def test_start_retries_when_a_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Free ports are picked before the processes bind them; losing that race is retried."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        ports = iter([taken_port])
        monkeypatch.setattr(
            controlplane_module, "free_port", lambda: next(ports, None) or free_port()
        )
        plane = ControlPlane(tmp_path / "plane")
        try:
            plane.start()
            pids = plane.pids()
            assert plane.admin.get("/readyz") == (200, "ok")
            assert plane.etcd_url != f"http://127.0.0.1:{taken_port}"
            assert "address already in use" in (plane.log_dir / "etcd.log").read_text()
        finally:
            plane.stop()
    assert len(pids) == 3
    assert not any(is_running(pid) for pid in pids.values())
