# ruff: noqa: E501  (the corpus reads best one case per line)
"""A corpus of schema-valid but harmful inputs: each ends refused by the API server, or
Failed (or with a condition) with a reason that names the problem, and after each a healthy
Task still succeeds promptly.

One operator and one worker (without ``--allow-http``) serve the whole corpus in one
namespace, as they would serve a cluster's users one after another: what one input leaves
behind must not stop the next. Real control plane, real Redis, the processes as in
production.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from devenv.redis_server import RedisServer
from fixtures.kube import obj
from fixtures.operator import Operator, Process, Tasks, kube_env
from kubetasks.queue.message import MAX_MESSAGE_BYTES
from kubetasks.vocabulary import API_VERSION, FINAL_PHASES, GROUP, VERSION

ECHO = "kubetasks.echo"


@dataclass
class Harm:
    """Objects to create and what must become of them."""

    objects: list[dict[str, Any]]
    tasks: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Task name -> (final phase, error type) each must end with."""
    refused: str = ""
    """Part of the API server's message refusing the (only) object."""
    condition: tuple[str, str, str, str] | None = None
    """(plural, name, condition type, reason) an object must show with status False."""
    message: str = ""
    """Part of the first Task's error message (or the condition's)."""


def task(name: str, handler: str = ECHO, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Task", "metadata": {"name": name},
            "spec": {"handler": handler, **spec}}  # fmt: skip


def periodic(name: str, template: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "PeriodicTask", "metadata": {"name": name},
            "spec": {"schedule": "*/1 * * * *", "taskTemplate": {"spec": template}, **spec}}  # fmt: skip


def pool(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "WorkerPool", "metadata": {"name": name},
            "spec": {"queues": [{"name": f"{name}-q"}], "minReplicas": 1, **spec}}  # fmt: skip


FAST_RETRY = {"baseSeconds": 0.01, "maxSeconds": 0.01, "jitter": False}

CORPUS: dict[str, Harm] = {
    "self-dependency": Harm([task("selfish", dependsOn=["selfish"])], {"selfish": ("Failed", "DependencyCycle")}, message="selfish -> selfish"),
    "two-cycle": Harm([task("ping", dependsOn=["pong"]), task("pong", dependsOn=["ping"])], {"ping": ("Failed", "DependencyCycle"), "pong": ("Failed", "DependencyCycle")}, message="ping -> pong -> ping"),
    "three-cycle": Harm([task("c1", dependsOn=["c2"]), task("c2", dependsOn=["c3"]), task("c3", dependsOn=["c1"])], {f"c{i}": ("Failed", "DependencyCycle") for i in (1, 2, 3)}, message="c1 -> c2 -> c3 -> c1"),
    "missing-dependency": Harm([task("orphan", dependsOn=["never-created"], dependencyTimeoutSeconds=1)], {"orphan": ("Failed", "DependencyTimeout")}, message="never-created (not found)"),
    "deadline-while-waiting": Harm([task("stuck-dep", queue="served-by-nobody"), task("impatient", dependsOn=["stuck-dep"], activeDeadlineSeconds=1)], {"impatient": ("DeadlineExceeded", "DeadlineExceeded")}, message="while waiting for stuck-dep"),
    "dependency-failed": Harm([task("doomed", "no.such.handler"), task("after-doomed", dependsOn=["doomed"])], {"after-doomed": ("Failed", "DependencyFailed")}, message="dependency doomed ended Failed"),
    "args-near-the-object-limit": Harm([task("bulky", args=["x" * 1_200_000])], {"bulky": ("Failed", "MessageTooLarge")}, message=f"limit of {MAX_MESSAGE_BYTES} bytes"),
    "huge-result": Harm([task("chatty", args=["y" * 100_000])], {"chatty": ("Failed", "ResultTooLargeError")}),
    "http-not-enabled": Harm([task("fetch", "kubetasks.http", args=["http://169.254.169.254/latest/meta-data"])], {"fetch": ("Failed", "HandlerNotFoundError")}, message="--allow-http"),
    "unknown-handler": Harm([task("nobody-home", "no.such.handler")], {"nobody-home": ("Failed", "HandlerNotFoundError")}),
    "args-not-matching": Harm([task("bad-args", "test.add", args=[1, 2, 3, 4])], {"bad-args": ("Failed", "InvalidArgumentsError")}),
    "retries-at-the-maximum": Harm([task("hopeless", "kubetasks.fail", maxRetries=100, retryBackoff=FAST_RETRY)], {"hopeless": ("Failed", "RuntimeError")}),
    "never-returns": Harm([task("forever", "kubetasks.sleep", args=[3600], timeoutSeconds=1, maxRetries=0)], {"forever": ("Failed", "TaskTimeoutError")}),
    "deadline-in-a-queue-nobody-serves": Harm([task("unserved", queue="served-by-nobody", activeDeadlineSeconds=1)], {"unserved": ("DeadlineExceeded", "DeadlineExceeded")}, message="before an attempt could start"),
    "deadline-already-past": Harm([task("too-late", deadline="2000-01-01T00:00:00Z")], {"too-late": ("DeadlineExceeded", "DeadlineExceeded")}),
    "duplicate-unique-key": Harm([task("first-of-two", "kubetasks.sleep", args=[2], uniqueKey="k", uniqueForSeconds=60), task("second-of-two", uniqueKey="k", uniqueForSeconds=60)], {"second-of-two": ("Failed", "DuplicateTask")}, message="uniqueKey 'k' is held"),
    "periodic-never-fires": Harm([periodic("feb-30", {"handler": ECHO}, schedule="0 0 30 2 *")], condition=("periodictasks", "feb-30", "ScheduleValid", "InvalidSchedule")),
    "periodic-depends-on-itself": Harm([periodic("loop", {"handler": ECHO, "dependsOn": ["loop"]})], refused="taskTemplate.spec.dependsOn is not supported"),
    "pool-image-not-allowed": Harm([pool("elsewhere", image="registry.invalid/not-a-worker:1")], condition=("workerpools", "elsewhere", "Ready", "PolicyViolation"), message="spec.image"),
    "pool-node-critical": Harm([pool("vip", podTemplate={"priorityClassName": "system-node-critical"})], condition=("workerpools", "vip", "Ready", "PolicyViolation"), message="priorityClassName"),
    "pool-deployment-refused": Harm([pool("greedy", podTemplate={"resources": {"limits": {"cpu": "lots"}}})], condition=("workerpools", "greedy", "Ready", "DeploymentRejected")),
}  # fmt: skip


@pytest.fixture(scope="module")
def corpus_namespace(kube_api: k8s.ApiClient) -> Iterator[str]:
    core = k8s.CoreV1Api(kube_api)
    name = f"harmful-{uuid.uuid4().hex[:6]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="module")
def served(
    control_plane: ControlPlane,
    redis_server: RedisServer,
    corpus_namespace: str,
    kube_api: k8s.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Tasks]:
    """One operator and one worker (no --allow-http) for the whole corpus."""
    logs = tmp_path_factory.mktemp("harmful")
    env = kube_env(control_plane, redis_server.url)
    operator = Operator(env, logs / "operator.log", corpus_namespace)
    worker_env = env | {"POD_NAME": "worker-0", "POD_NAMESPACE": corpus_namespace}
    argv = [*operator.argv[:3], "worker", "--queues", "default", "--import", "handlers_for_tests",
            "--report-status", "kubernetes", "--log-level", "info"]  # fmt: skip
    worker = Process(argv, worker_env, logs / "worker.log")
    yield Tasks(kube_api, corpus_namespace)
    worker.stop()
    operator.stop()


def create(custom: k8s.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> None:
    plural = {"Task": "tasks", "PeriodicTask": "periodictasks", "WorkerPool": "workerpools"}
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural[body["kind"]], body)


def wait_condition(
    custom: k8s.CustomObjectsApi, namespace: str, want: tuple[str, str, str, str]
) -> dict[str, Any]:
    plural, name, kind, reason = want
    deadline = time.monotonic() + 20
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        body = obj(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name))
        seen = (body.get("status") or {}).get("conditions") or []
        for condition in seen:
            if (condition["type"], condition["status"], condition["reason"]) == (
                kind,
                "False",
                reason,
            ):
                return dict(condition)
        time.sleep(0.2)
    raise AssertionError(f"{plural}/{name} shows no {kind}=False {reason}: {seen}")


@pytest.mark.parametrize("case", list(CORPUS))
def test_a_harmful_input_ends_with_a_reason_and_harms_nothing_after_it(
    served: Tasks, case: str
) -> None:
    harm = CORPUS[case]
    custom, namespace = served.custom, served.namespace
    if harm.refused:
        with pytest.raises(k8s.ApiException) as refused:
            create(custom, namespace, harm.objects[0])
        assert refused.value.status == 422
        assert harm.refused in str(refused.value.body)
    else:
        for body in harm.objects:
            create(custom, namespace, body)
    messages = []
    for name, (phase, reason) in harm.tasks.items():
        status = served.wait_phase(name, *FINAL_PHASES, timeout=30)
        error = status.get("error") or {}
        assert (status["phase"], error.get("type")) == (phase, reason), status
        messages.append(error.get("message", ""))
    if harm.condition is not None:
        messages.append(wait_condition(custom, namespace, harm.condition)["message"])
    if harm.message:
        assert harm.message in messages[0], messages
    healthy = f"healthy-after-{case}"
    served.create(healthy, "test.add", args=[20, 22])
    assert served.wait_phase(healthy, *FINAL_PHASES, timeout=10).get("result") == 42


def test_the_corpus_holds_at_least_fifteen_inputs_of_every_kind() -> None:
    kinds = {body["kind"] for harm in CORPUS.values() for body in harm.objects}
    assert len(CORPUS) >= 15 and kinds == {"Task", "PeriodicTask", "WorkerPool"}
