"""The reaper's sweep of finished Tasks after a restart: the operator no longer reads the
finished Tasks when it starts (only the unfinished ones), so what history needs from it comes
from a paged sweep a while after start-up: a Task whose TTL ran out while no operator ran is
deleted, one deleted while no operator ran (held by the operator's finalizer) goes, and one
without a TTL stays. Real control plane and operator; no workers needed."""

from __future__ import annotations

import time
from pathlib import Path

from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from fixtures.operator import Operator, Tasks, kube_env
from kubetasks.status_patches import finished_patch
from kubetasks.vocabulary import GROUP, TASK_FINALIZER, VERSION

SWEEP_SECONDS = 2.0


def finish(kube_api: k8s.ApiClient, namespace: str, name: str, ago: float) -> None:
    patch = finished_patch("succeeded", 1, time.time() - ago, result=1)
    k8s.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "tasks", name, patch
    )


def test_a_restarted_operator_sweeps_the_history_it_did_not_read(
    control_plane: ControlPlane,
    redis_url: str,
    kube_api: k8s.ApiClient,
    tasks: Tasks,
    namespace: str,
    tmp_path: Path,
) -> None:
    # What a stopped operator left: history written while none ran.
    tasks.create("expired", "h", ttlSecondsAfterFinished=5)
    finish(kube_api, namespace, "expired", ago=60)
    tasks.create("kept", "h")
    finish(kube_api, namespace, "kept", ago=60)
    tasks.create_body({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Task",
        "metadata": {"name": "deleted", "finalizers": [TASK_FINALIZER]},
        "spec": {"handler": "h"},
    })  # fmt: skip
    finish(kube_api, namespace, "deleted", ago=60)
    tasks.delete("deleted")
    assert tasks.get("deleted") is not None, "held by the finalizer while no operator runs"

    env = kube_env(control_plane, redis_url) | {
        "KUBETASKS_HISTORY_SWEEP_SECONDS": str(SWEEP_SECONDS)
    }
    operator = Operator(env, tmp_path / "operator.log", namespace)
    try:
        started = time.monotonic()
        deadline = started + SWEEP_SECONDS + 15
        while tasks.get("expired") is not None or tasks.get("deleted") is not None:
            assert time.monotonic() < deadline, [t["metadata"]["name"] for t in tasks.list()]
            time.sleep(0.2)
        print(f"\nhistory swept {time.monotonic() - started:.1f} s after the operator started")
        assert tasks.get("kept") is not None
    finally:
        operator.stop()
