"""How the process kubelet turns a pod spec into a process, and reports what went wrong."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from devenv.kubelet import PROCESS_KUBELET_LABEL, ProcessKubelet
from fixtures.kube import meta, pod_status, present

pytestmark = pytest.mark.controlplane

DUMP_ENV = textwrap.dedent(
    """
    import json, os, sys
    names = ["POD_NAME", "POD_NAMESPACE", "MY_UID", "PLAIN", "FROM_CM", "FROM_SECRET",
             "CM_A", "SEC_TOKEN", "LABEL", "COMPOSED", "OPTIONAL_MISSING"]
    json.dump({"env": {n: os.environ.get(n) for n in names}, "argv": sys.argv[1:],
               "cwd": os.getcwd()}, open(os.environ["OUT"], "w"))
    """
)


def pod_phase_and_state(
    core: k8s.CoreV1Api, name: str, namespace: str
) -> tuple[str | None, object]:
    status = pod_status(core.read_namespaced_pod(name, namespace))
    statuses = status.container_statuses or []
    return status.phase, statuses[0].state if statuses else None


def wait_for(check: object, timeout: float = 30.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not met in {timeout}s")
        time.sleep(0.1)


def labelled_pod(name: str, container: k8s.V1Container, **spec: Any) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            name=name, labels={PROCESS_KUBELET_LABEL: "true", "tier": "worker"}
        ),
        spec=k8s.V1PodSpec(containers=[container], **spec),
    )


def test_environment_command_and_working_dir_follow_the_pod_spec(
    kube_api: k8s.ApiClient, namespace: str, process_kubelet: ProcessKubelet, tmp_path: Path
) -> None:
    core = k8s.CoreV1Api(kube_api)
    core.create_namespaced_config_map(
        namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="cm"), data={"A": "from-cm"})
    )
    core.create_namespaced_secret(
        namespace,
        k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="sec"), string_data={"TOKEN": "s3cret"}),
    )
    out = tmp_path / "env.json"
    var = k8s.V1EnvVar
    container = k8s.V1Container(
        name="main",
        image="ignored",
        command=[sys.executable, "-c", DUMP_ENV],
        args=["--name=$(POD_NAME)", "$$(POD_NAME)", "$(UNDEFINED)"],
        working_dir=str(tmp_path),
        env_from=[
            k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name="cm"), prefix="CM_"),
            k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name="sec"), prefix="SEC_"),
        ],
        env=[
            var(name="OUT", value=str(out)),
            var(name="PLAIN", value="literal"),
            var(
                name="MY_UID",
                value_from=k8s.V1EnvVarSource(
                    field_ref=k8s.V1ObjectFieldSelector(field_path="metadata.uid")
                ),
            ),
            var(
                name="LABEL",
                value_from=k8s.V1EnvVarSource(
                    field_ref=k8s.V1ObjectFieldSelector(field_path="metadata.labels['tier']")
                ),
            ),
            var(
                name="FROM_CM",
                value_from=k8s.V1EnvVarSource(
                    config_map_key_ref=k8s.V1ConfigMapKeySelector(name="cm", key="A")
                ),
            ),
            var(
                name="FROM_SECRET",
                value_from=k8s.V1EnvVarSource(
                    secret_key_ref=k8s.V1SecretKeySelector(name="sec", key="TOKEN")
                ),
            ),
            var(
                name="OPTIONAL_MISSING",
                value_from=k8s.V1EnvVarSource(
                    secret_key_ref=k8s.V1SecretKeySelector(name="nope", key="X", optional=True)
                ),
            ),
            var(name="COMPOSED", value="$(PLAIN)-$(FROM_CM)"),
        ],
    )
    created = core.create_namespaced_pod(
        namespace, labelled_pod("envdump", container, restart_policy="Never")
    )
    wait_for(lambda: pod_phase_and_state(core, "envdump", namespace)[0] == "Succeeded")
    dumped = json.loads(out.read_text())
    assert dumped["env"] == {
        "POD_NAME": "envdump",
        "POD_NAMESPACE": namespace,
        "MY_UID": meta(created).uid,
        "PLAIN": "literal",
        "FROM_CM": "from-cm",
        "FROM_SECRET": "s3cret",
        "CM_A": "from-cm",
        "SEC_TOKEN": "s3cret",
        "LABEL": "worker",
        "COMPOSED": "literal-from-cm",
        "OPTIONAL_MISSING": None,
    }
    assert dumped["argv"] == ["--name=envdump", "$(POD_NAME)", "$(UNDEFINED)"]
    assert dumped["cwd"] == str(tmp_path)
    statuses = present(
        pod_status(core.read_namespaced_pod("envdump", namespace)).container_statuses
    )
    terminated = present(present(statuses[0].state).terminated)
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")


def test_pods_that_cannot_start_say_why(
    kube_api: k8s.ApiClient, namespace: str, process_kubelet: ProcessKubelet
) -> None:
    core = k8s.CoreV1Api(kube_api)
    missing_binary = k8s.V1Container(name="main", image="x", command=["/nonexistent/worker"])
    missing_secret = k8s.V1Container(
        name="main",
        image="x",
        command=[sys.executable, "-c", "pass"],
        env=[
            k8s.V1EnvVar(
                name="PASSWORD",
                value_from=k8s.V1EnvVarSource(
                    secret_key_ref=k8s.V1SecretKeySelector(name="redis", key="password")
                ),
            )
        ],
    )
    core.create_namespaced_pod(namespace, labelled_pod("nobinary", missing_binary))
    core.create_namespaced_pod(namespace, labelled_pod("nosecret", missing_secret))

    def waiting_reason(name: str) -> str | None:
        phase, state = pod_phase_and_state(core, name, namespace)
        waiting = getattr(state, "waiting", None)
        return f"{phase}/{waiting.reason}: {waiting.message}" if waiting else None

    wait_for(lambda: waiting_reason("nobinary") and waiting_reason("nosecret"))
    assert waiting_reason("nobinary") == (
        "Pending/RunContainerError: /nonexistent/worker: "
        "[Errno 2] No such file or directory: '/nonexistent/worker'"
    )
    assert waiting_reason("nosecret") == (
        "Pending/CreateContainerConfigError: secret 'redis' key 'password' not found"
    )
    assert process_kubelet.pids(namespace) == {}
