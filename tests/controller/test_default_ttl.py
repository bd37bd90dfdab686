"""The operator-wide default ``ttlSecondsAfterFinished`` (chart value
``operator.defaultTtlSecondsAfterFinished``): a finished Task that sets no TTL is deleted
after it, one that sets its own keeps its own. Real control plane, operator and worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.controlplane import ControlPlane
from fixtures.operator import Operator, StartWorkers, Tasks, kube_env


@pytest.fixture
def ttl_operator(
    control_plane: ControlPlane, redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[Operator]:
    env = kube_env(control_plane, redis_url) | {"KUBETASKS_DEFAULT_TTL_SECONDS_AFTER_FINISHED": "1"}
    op = Operator(env, tmp_path / "operator.log", namespace)
    yield op
    op.stop()


def test_finished_tasks_without_a_ttl_are_deleted_after_the_default(
    ttl_operator: Operator, task_workers: StartWorkers, tasks: Tasks
) -> None:
    task_workers(1)
    tasks.create("default-ttl", "test.add", args=[1, 2])
    tasks.create("failed-default-ttl", "no.such.handler")
    tasks.create("own-ttl", "test.add", args=[2, 2], ttlSecondsAfterFinished=3600)
    assert tasks.wait_phase("own-ttl", "Succeeded")["result"] == 4
    deadline = time.monotonic() + 15
    while tasks.get("default-ttl") or tasks.get("failed-default-ttl"):
        assert time.monotonic() < deadline, [t["metadata"]["name"] for t in tasks.list()]
        time.sleep(0.2)
    assert tasks.get("own-ttl") is not None
