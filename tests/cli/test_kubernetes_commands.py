"""The commands that go through the Kubernetes API, as a user runs them (a kubeconfig and a
Redis URL) against the real control plane, the operator and a worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from fixtures.kube import present
from fixtures.operator import Operator, StartWorkers, Tasks, kube_env
from kubetasks.vocabulary import RERUN_OF_LABEL


def cli(
    control_plane: ControlPlane, redis_url: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubetasks", *args],
        env=kube_env(control_plane, redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_failed_task_is_rerun_as_a_new_task_linked_by_a_label(
    operator: Operator, task_workers: StartWorkers, tasks: Tasks,
    control_plane: ControlPlane, redis_url: str, namespace: str,
) -> None:  # fmt: skip
    task_workers(1)
    tasks.create_body(
        {
            "apiVersion": "kubetasks.dev/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "broken", "labels": {"team": "a"}},
            "spec": {"handler": "test.permanent", "maxRetries": 0},
        }
    )
    tasks.create("fine", "test.add", args=[1, 2])
    tasks.wait_phase("broken", "Failed")
    tasks.wait_phase("fine", "Succeeded")

    done = cli(control_plane, redis_url, "tasks", "rerun", "broken", "-n", namespace, "-o", "json")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["rerunOf"] == "broken" and created["name"].startswith("broken-rerun-")
    new = tasks.get(created["name"])
    assert new is not None
    assert new["metadata"]["labels"] == {"team": "a", RERUN_OF_LABEL: "broken"}
    assert new["spec"]["handler"] == "test.permanent"
    status = tasks.wait_phase(created["name"], "Failed")  # it ran, as a Task of its own
    assert status["attempts"] == 1
    assert (tasks.status("broken") or {}).get("phase") == "Failed"  # the old one is kept

    not_failed = cli(control_plane, redis_url, "tasks", "rerun", "fine", "-n", namespace)
    assert not_failed.returncode == 1
    assert f"task {namespace}/fine is Succeeded: only Failed, Cancelled, DeadlineExceeded" in (
        not_failed.stderr
    )
    missing = cli(control_plane, redis_url, "tasks", "rerun", "nope", "-n", namespace)
    assert (missing.returncode, missing.stderr) == (
        3,
        f"kubetasks: task {namespace}/nope not found\n",
    )


def test_pause_and_resume_print_json_and_a_missing_namespace_is_not_found(
    control_plane: ControlPlane, redis_url: str, namespace: str
) -> None:
    paused = cli(control_plane, redis_url, "pause", "q1", "-n", namespace, "-o", "json")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout) == {"namespace": namespace, "queue": "q1", "paused": True}
    resumed = cli(control_plane, redis_url, "resume", "q1", "-n", namespace, "-o", "yaml")
    assert resumed.returncode == 0, resumed.stderr
    assert "paused: false" in resumed.stdout
    gone = cli(control_plane, redis_url, "pause", "q1", "-n", "no-such-namespace")
    assert gone.returncode == 3, gone.stderr
    assert gone.stderr.startswith("kubetasks: not found: ") and "Traceback" not in gone.stderr


def test_a_user_without_rights_is_refused_with_exit_5(
    control_plane: ControlPlane, kube_api: k8s.ApiClient, redis_url: str, namespace: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    core = k8s.CoreV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="nobody"))
    )
    request = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[]))
    issued = core.create_namespaced_service_account_token("nobody", namespace, request)
    token = present(issued.status, "status").token
    kubeconfig = tmp_path / "nobody.yaml"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": control_plane.admin.server,
                            "certificate-authority": str(control_plane.admin.ca_cert),
                        },
                    }
                ],
                "users": [{"name": "nobody", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "x",
                        "context": {"cluster": "c", "user": "nobody", "namespace": namespace},
                    }
                ],
                "current-context": "x",
            }
        )
    )
    env = kube_env(control_plane, redis_url) | {"KUBECONFIG": str(kubeconfig)}
    for args in (("tasks", "rerun", "any"), ("pause", "q1")):
        proc = subprocess.run(
            [sys.executable, "-m", "kubetasks", *args], env=env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert proc.returncode == 5, (args, proc.stderr)
        assert proc.stderr.startswith("kubetasks: forbidden by the Kubernetes API: "), proc.stderr
        assert "nobody" in proc.stderr
