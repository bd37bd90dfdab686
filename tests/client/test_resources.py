"""The resource client and the canvas, end to end: Tasks and TaskSets created from Python
through the real API server, run by the operator and real worker processes over real Redis,
their results read back through a watch of the resource."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.controlplane import ControlPlane
from fixtures.operator import Operator, StartWorkers, Tasks, TaskSets
from kubetasks import AsyncResourceClient, ResourceClient
from kubetasks.canvas import chain, chord, group, manifests, signature, submit, submit_async
from kubetasks.errors import ConfigurationError, TaskFailedError, TaskNotFoundError
from kubetasks.k8s.api import InvalidError


@pytest.fixture
def kube_env_in_process(
    control_plane: ControlPlane, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(Path(control_plane.kubeconfig)))
    monkeypatch.setenv("KUBETASKS_REDIS_URL", redis_url)


@pytest.fixture
def client(kube_env_in_process: None, namespace: str) -> Iterator[ResourceClient]:
    with ResourceClient(namespace=namespace) as c:
        yield c


def test_a_chain_from_python_passes_each_result_to_the_next_step(
    operator: Operator, task_workers: StartWorkers, client: ResourceClient, tasks: Tasks
) -> None:
    task_workers(1)
    done = submit(
        client,
        chain(signature("test.add", 1, 2), signature("test.add", 10), signature("test.add", 100)),
        prefix="sums",
    )
    assert done.result(timeout=60) == 113
    assert [h.name for h in done.handles] == ["sums-0", "sums-1", "sums-2"]
    assert [tasks.status(f"sums-{i}")["result"] for i in range(3)] == [3, 13, 113]
    assert tasks.get("sums-2")["spec"]["dependsOn"] == ["sums-1"]  # type: ignore[index]


def test_a_failed_step_fails_the_chain_with_the_redis_clients_error(
    operator: Operator, task_workers: StartWorkers, client: ResourceClient
) -> None:
    task_workers(1)
    done = submit(client, chain(signature("test.permanent"), signature("test.add", 1)), "broken")
    with pytest.raises(TaskFailedError) as failed:
        done.handles[0].result(timeout=60)
    assert failed.value.state == "Failed"
    assert failed.value.error is not None and failed.value.error["type"] == "PermanentTaskError"
    with pytest.raises(TaskFailedError) as after:
        done.result(timeout=60)
    assert after.value.error is not None and after.value.error["type"] == "DependencyFailed"


def test_a_chord_from_python_passes_the_groups_results_to_its_callback(
    operator: Operator, task_workers: StartWorkers, client: ResourceClient, tasksets: TaskSets
) -> None:
    task_workers(1)
    header = group(*(signature("test.item", f"arg{i}") for i in range(5)))
    done = submit(client, chord(header, signature("test.sum_results", "extra")), "chord")
    assert done.result(timeout=60) == {"count": 5, "sum": 10, "nulls": 0}
    assert tasksets.status("chord-0")["succeeded"] == 5
    # The group's own handle returns the items' results by index, from Redis.
    results = done.handles[0].result(timeout=10)
    assert [(r["index"], r["args"]) for r in results] == [(i, [f"arg{i}"]) for i in range(5)]


def test_create_task_takes_the_redis_clients_options_and_the_server_checks_the_rules(
    operator: Operator, task_workers: StartWorkers, client: ResourceClient, tasks: Tasks
) -> None:
    task_workers(1)
    handle = client.create_task(
        "test.add", 2, b=3, name="opts", queue="default", priority=7, max_retries=1,
        timeout=2.5, unique_for=60, labels={"team": "a"},
    )  # fmt: skip
    assert handle.result(timeout=60) == 5
    body = tasks.get("opts")
    assert body is not None and body["metadata"]["labels"] == {"team": "a"}
    spec = body["spec"]
    assert (spec["args"], spec["kwargs"], spec["priority"], spec["maxRetries"]) == (
        [2], {"b": 3}, 7, 1,
    )  # fmt: skip
    assert spec["timeoutSeconds"] == 3 and spec["uniqueForSeconds"] == 60
    assert spec["uniqueKey"].startswith("test.add:")
    with pytest.raises(InvalidError, match="runAt and delaySeconds are exclusive"):
        client.create_task("test.add", 1, 2, delay=10, run_at=time.time() + 60)
    with pytest.raises(ConfigurationError, match="task_id"):
        client.create_task("test.add", 1, 2, task_id="x")


def test_a_handle_of_a_deleted_task_raises_not_found(
    operator: Operator, client: ResourceClient, tasks: Tasks
) -> None:
    handle = client.create_task("test.add", 1, 2, name="nobody-runs-me")
    tasks.delete("nobody-runs-me")
    with pytest.raises(TaskNotFoundError):
        handle.result(timeout=30)


def test_result_times_out_naming_the_task(operator: Operator, client: ResourceClient) -> None:
    handle = client.create_task("test.add", 1, 2, name="unserved", queue="nobody")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="unserved"):
        handle.result(timeout=1)
    assert time.monotonic() - started < 5


async def test_the_async_client_runs_a_count_set_and_a_chain(
    operator: Operator, task_workers: StartWorkers, kube_env_in_process: None, namespace: str
) -> None:
    task_workers(1)
    async with AsyncResourceClient(namespace=namespace) as aclient:
        handle = await aclient.create_taskset("test.item", count=20, parallelism=5)
        results = await handle.result(timeout=60)
        assert [r["index"] for r in results] == list(range(20))
        done = await submit_async(
            aclient, chain(signature("test.add", 1, 1), signature("test.add", 1)), "achain"
        )
        assert await done.result(timeout=60) == 3


def test_bad_canvases_are_refused_naming_the_problem() -> None:
    with pytest.raises(ConfigurationError, match="one handler"):
        group(signature("a.b"), signature("c.d"))
    with pytest.raises(ConfigurationError, match="share their options"):
        group(signature("a.b", queue="x"), signature("a.b", queue="y"))
    with pytest.raises(ConfigurationError, match="needs at least one"):
        chain()
    count = manifests(group(signature("a.b", 1, queue="q", k=2), count=3), prefix="c")
    assert count[0]["spec"]["count"] == 3
    assert count[0]["spec"]["template"]["spec"]["args"] == [1]
    assert count[0]["spec"]["template"]["spec"]["kwargs"] == {"k": 2}
