"""The chart on a real node, installed as a user installs it, driving the examples.

`helm install` of `charts/kubetasks` with the images `make images` builds from the project's
own Dockerfiles: the operator runs as a pod under its own service account with in-cluster
configuration, the bundled Redis as a pod, and the WorkerPool of `examples/` makes real worker
pods (containerd, runc). Then, as a user would:

- `kubectl apply -f examples/` and every Task ends as the example says (the retries example
  after its failures, the chain with the result passed along, the periodic's children, the
  burst), every status written by the workers;
- `kubectl logs` of a worker pod shows the tasks it ran;
- from inside a worker pod, with its own service-account token, it may patch Task status
  and may not read Secrets or another namespace's Tasks;
- a worker container killed mid-task restarts in the same pod and takes its task back at
  once (not after the 30 s lease), and a worker pod deleted mid-task hands its task back:
  every Task still succeeds, with the attempts at-least-once promises;
- nothing came through the operator's repair loop (its resync is set far beyond the tier,
  and its repaired-outcomes counter stays 0), so no safety net hid a broken primary path.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from devenv.binaries import find_binary
from fixtures.realnode import RealNodeHandle

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetasks"
EXAMPLES = REPO / "examples"
NAMESPACE = "kubetasks"
RELEASE = "kubetasks"
OTHER_NAMESPACE = "kubetasks-other"
OPERATOR_METRICS = (
    f"/api/v1/namespaces/{NAMESPACE}/services/{RELEASE}-operator-metrics:metrics/proxy/metrics"
)
POOL_LABEL = "kubetasks.dev/worker-pool"
LEASE_SECONDS = 30  # the worker's default lease: what a restarted container must beat

# What the README has a user run on the local node (the built images, the CRDs that
# `kubetasks dev up` applied, no storage provisioner, the examples' own WorkerPool)...
LOCAL_VALUES = CHART / "ci" / "local-node-values.yaml"
# ...and a resync far beyond the tier's length, so that an outcome only the operator's repair
# loop would write fails the tier instead of being copied over after a minute.
HELM_SETS = [
    "--set", "operator.extraEnv[0].name=KUBETASKS_RESYNC_SECONDS",
    "--set-string", "operator.extraEnv[0].value=86400",
]  # fmt: skip

T = TypeVar("T")

pytestmark = [pytest.mark.timeout(900), pytest.mark.images]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.5) -> T:
    """Poll ``probe`` until it returns something truthy; fail saying what was awaited."""
    end = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {timeout:g}s (last seen: {last!r})")
        time.sleep(every)


class Cluster:
    """kubectl and helm against the real node, failing loudly with their stderr."""

    def __init__(self, node: RealNodeHandle) -> None:
        self.node = node

    def run(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        result = self.node.kubectl(*args, input=input, timeout=timeout)
        assert result.returncode == 0, f"kubectl {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))

    def tasks(self) -> dict[str, dict[str, Any]]:
        items = self.json("get", "tasks", "-n", NAMESPACE)["items"]
        return {t["metadata"]["name"]: t for t in items}

    def task(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("get", "task", name, "-n", NAMESPACE)
        return result

    def worker_pods(self) -> list[dict[str, Any]]:
        items = self.json("get", "pods", "-n", NAMESPACE, "-l", POOL_LABEL)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def helm(self, *args: str, timeout: float = 600) -> str:
        env_args = ["--kubeconfig", str(self.node.kubeconfig)]
        result = subprocess.run(
            [str(find_binary("helm")), *args, *env_args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    def metrics(self) -> dict[str, float]:
        text = self.run("get", "--raw", OPERATOR_METRICS)
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def diagnose(self) -> str:
        """What a user would look at when the tier fails: pods, events, operator log."""
        out = [
            self.node.kubectl("get", "pods,tasks,workerpools", "-n", NAMESPACE, "-o", "wide").stdout
        ]
        out.append(
            self.node.kubectl("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp").stdout[
                -6000:
            ]
        )
        out.append(
            self.node.kubectl(
                "logs", "-n", NAMESPACE, f"deploy/{RELEASE}-operator", "--tail=80"
            ).stdout
        )
        return "\n".join(out)


def example_tasks() -> dict[str, dict[str, Any]]:
    """The Task manifests in examples/, by name."""
    docs = [
        d for p in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d
    ]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Task"}


def phase(task: dict[str, Any]) -> str | None:
    return (task.get("status") or {}).get("phase")


def container_of(pod: dict[str, Any]) -> dict[str, Any]:
    (status,) = [c for c in pod["status"].get("containerStatuses", []) if c["name"] == "worker"]
    return dict(status)


@pytest.fixture(scope="module")
def cluster(real_node: RealNodeHandle) -> Iterator[Cluster]:
    """The built images loaded into the node's containerd, the chart installed, the examples
    applied; uninstalled at the end."""
    from devenv.images import build_images, load_images

    started = time.monotonic()
    load_images(real_node.containerd_address, build_images())
    images = time.monotonic()
    c = Cluster(real_node)
    c.helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "--values", str(LOCAL_VALUES), *HELM_SETS, "--wait", "--timeout", "5m",
    )  # fmt: skip
    installed = time.monotonic()
    c.run("create", "namespace", OTHER_NAMESPACE)
    print(
        f"\nimages built and loaded in {images - started:.0f}s,"
        f" helm install --wait in {installed - images:.0f}s"
    )
    try:
        yield c
    finally:
        c.run("delete", "-n", NAMESPACE, "--ignore-not-found", "--wait=false", "-f", str(EXAMPLES))
        c.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "2m")
        c.run("delete", "namespace", OTHER_NAMESPACE, "--wait=false")


@pytest.fixture(autouse=True)
def _diagnose_failures(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed test: the pods, events and operator log, in that test's report."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed and "cluster" in request.fixturenames:
        print(request.getfixturevalue("cluster").diagnose())


def test_the_local_values_name_the_images_make_images_builds() -> None:
    from devenv.images import HELM_VALUES

    values = yaml.safe_load(LOCAL_VALUES.read_text())
    for dotted, want in HELM_VALUES.items():
        node = values
        for key in dotted.split("."):
            node = node[key]
        assert node == want, (
            f"{LOCAL_VALUES.name}: {dotted} is {node!r}, make images builds {want!r}"
        )


def test_the_release_runs_as_pods_under_its_own_accounts(cluster: Cluster) -> None:
    pods = cluster.json("get", "pods", "-n", NAMESPACE)["items"]
    by_component = {p["metadata"]["labels"].get("app.kubernetes.io/component"): p for p in pods}
    operator, redis = by_component["operator"], by_component["redis"]
    assert operator["spec"]["serviceAccountName"] == f"{RELEASE}-operator"
    for pod in (operator, redis):
        assert pod["status"]["phase"] == "Running", pod["status"]
        assert all(c["ready"] for c in pod["status"]["containerStatuses"])
    # In-cluster configuration: the operator talks to the API server as its service account.
    log = cluster.run("logs", "-n", NAMESPACE, operator["metadata"]["name"])
    assert "system:anonymous" not in log
    assert "Forbidden" not in log


def test_examples_run_to_completion_with_every_status_from_the_workers(
    cluster: Cluster,
) -> None:
    expected = example_tasks()
    applied = time.monotonic()
    cluster.run("apply", "-n", NAMESPACE, "-f", str(EXAMPLES))

    def finished() -> dict[str, dict[str, Any]] | None:
        tasks = cluster.tasks()
        done = {n: t for n, t in tasks.items() if n in expected and phase(t) in TERMINAL}
        return tasks if len(done) == len(expected) else None

    tasks = wait_for("every example Task finished", finished, timeout=240)
    took = time.monotonic() - applied
    phases = {n: phase(tasks[n]) for n in expected}
    assert set(phases.values()) == {"Succeeded"}, phases

    status = {n: tasks[n]["status"] for n in expected}
    assert status["hello"]["result"] == {"args": ["hello", "kubetasks"], "kwargs": {}}
    assert status["flaky"]["attempts"] == 3  # two failures, then the third attempt succeeds
    assert status["fetch-name"]["result"] == "Ada"
    assert status["greet"]["result"]["args"] == ["Ada", "says hello"]
    burst = [n for n in expected if n.startswith("burst-")]
    assert len(burst) == 40
    assert all(status[n]["attempts"] == 1 for n in burst)
    # Every status was written by a worker pod that exists(ed): a real pod name of the pool.
    workers = {status[n]["worker"] for n in expected}
    assert all(w.startswith("default-") for w in workers), workers
    print(
        f"\nexamples: all {len(expected)} Tasks Succeeded {took:.1f}s after kubectl apply,"
        f" on {len(workers)} worker pods"
    )

    # kubectl logs of a worker pod shows the tasks it ran (pods stay for the 15 s window).
    pods = cluster.worker_pods()
    assert pods, "the pool scaled to zero before its logs could be read"
    pod = pods[0]["metadata"]["name"]
    log = cluster.run("logs", "-n", NAMESPACE, pod)
    ran = set(re.findall(rf"task {NAMESPACE}/(\S+) \(\S+\) \S+ attempt \d+ succeeded", log))
    assert ran, log[-3000:]
    assert ran <= set(expected) | set(tasks)
    assert all(
        status[n]["worker"] == pod for n in ran if n in status and status[n]["attempts"] == 1
    )

    # The periodic's children: one Task per slot, owned by the PeriodicTask, succeeding.
    def periodic_children() -> list[dict[str, Any]] | None:
        children = [
            t
            for t in cluster.tasks().values()
            if any(o["kind"] == "PeriodicTask" for o in t["metadata"].get("ownerReferences", []))
            and phase(t) == "Succeeded"
        ]
        return children if len(children) >= 2 else None

    children = wait_for("two periodic runs Succeeded", periodic_children, timeout=40)
    assert all(c["status"]["attempts"] == 1 for c in children)
    periodic = cluster.json("get", "periodictask", "heartbeat", "-n", NAMESPACE)
    assert periodic["status"].get("lastSuccessfulTime")


def test_a_worker_pod_may_write_task_status_and_nothing_else(cluster: Cluster) -> None:
    """From inside a worker pod, with the token mounted for its own service account."""
    hold = hold_task(cluster, "rbac-probe", seconds=20)
    pod = hold["status"]["worker"]
    script = PROBE_SCRIPT.format(
        status=f"/apis/kubetasks.dev/v1alpha1/namespaces/{NAMESPACE}/tasks/rbac-probe/status",
        own=f"/apis/kubetasks.dev/v1alpha1/namespaces/{NAMESPACE}/tasks",
        secrets=f"/api/v1/namespaces/{NAMESPACE}/secrets",
        other=f"/apis/kubetasks.dev/v1alpha1/namespaces/{OTHER_NAMESPACE}/tasks",
        pods=f"/api/v1/namespaces/{NAMESPACE}/pods",
    )
    out = cluster.run("exec", "-n", NAMESPACE, pod, "-c", "worker", "--", "python", "-c", script)
    answers = json.loads(out)
    assert answers == {
        "whoami": f"system:serviceaccount:{NAMESPACE}:{RELEASE}-worker",
        "patch own Task status": 200,
        "list own namespace's Tasks": 200,
        "list Secrets": 403,
        "list another namespace's Tasks": 403,
        "list Pods": 403,
    }, answers
    wait_phase(cluster, "rbac-probe", "Succeeded", timeout=60)


PROBE_SCRIPT = """
import json, ssl, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
token = open(sa + "token").read().strip()
tls = ssl.create_default_context(cafile=sa + "ca.crt")
def call(method, path, body=None, kind="application/merge-patch+json"):
    req = urllib.request.Request("https://kubernetes.default.svc" + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={{"Authorization": "Bearer " + token, "Content-Type": kind}})
    try:
        with urllib.request.urlopen(req, context=tls, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None
review = {{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}}
_, me = call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", review,
             "application/json")
print(json.dumps({{
    "whoami": me["status"]["userInfo"]["username"],
    "patch own Task status": call("PATCH", "{status}", {{}})[0],
    "list own namespace's Tasks": call("GET", "{own}")[0],
    "list Secrets": call("GET", "{secrets}")[0],
    "list another namespace's Tasks": call("GET", "{other}")[0],
    "list Pods": call("GET", "{pods}")[0],
}}))
"""

TERMINAL = {"Succeeded", "Failed", "Cancelled", "DeadlineExceeded"}


def wait_phase(cluster: Cluster, name: str, want: str, timeout: float) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        task = cluster.task(name)
        return task if phase(task) == want else None

    return wait_for(f"{name} {want}", reached, timeout)


def hold_task(cluster: Cluster, name: str, seconds: float) -> dict[str, Any]:
    """Create a Task that sleeps ``seconds`` and return it once a worker pod runs it."""
    cluster.run(
        "apply", "-n", NAMESPACE, "-f", "-",
        input=json.dumps({
            "apiVersion": "kubetasks.dev/v1alpha1",
            "kind": "Task",
            "metadata": {"name": name},
            "spec": {"handler": "kubetasks.sleep", "args": [seconds], "maxRetries": 3},
        }),
    )  # fmt: skip

    def running() -> dict[str, Any] | None:
        task = cluster.task(name)
        return task if phase(task) == "Running" and task["status"].get("worker") else None

    return wait_for(f"{name} Running on a worker pod", running, timeout=90, every=0.2)


def test_a_killed_worker_container_takes_its_task_back_at_once(cluster: Cluster) -> None:
    """The container dies without a word (SIGKILL from the node, as the OOM killer does); the
    kubelet restarts it in the same pod, and the new process returns what the old one held
    before it leases anything: the task runs again within seconds, not after the lease."""
    held = hold_task(cluster, "crash-victim", seconds=8)
    pod_name = held["status"]["worker"]
    assert held["status"]["attempts"] == 1
    pod = cluster.json("get", "pod", pod_name, "-n", NAMESPACE)
    before, uid = container_of(pod), pod["metadata"]["uid"]
    container_id = before["containerID"].removeprefix("containerd://")
    killed = time.monotonic()
    ctr = subprocess.run(
        ["ctr", "--address", str(cluster.node.containerd_address), "-n", "k8s.io",
         "tasks", "kill", "--signal", "SIGKILL", container_id],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert ctr.returncode == 0, ctr.stderr

    def second_attempt() -> dict[str, Any] | None:
        task = cluster.task("crash-victim")
        return task if task["status"].get("attempts", 0) >= 2 else None

    rerun = wait_for(
        "crash-victim's second attempt", second_attempt, timeout=LEASE_SECONDS, every=0.2
    )
    taken_back_after = time.monotonic() - killed
    assert taken_back_after < LEASE_SECONDS / 2, taken_back_after
    done = wait_phase(cluster, "crash-victim", "Succeeded", timeout=60)
    assert done["status"]["attempts"] == 2  # the crashed attempt counted; it ran once more
    pod = cluster.json("get", "pod", pod_name, "-n", NAMESPACE)
    assert pod["metadata"]["uid"] == uid  # the same pod, its container restarted
    assert container_of(pod)["restartCount"] == before["restartCount"] + 1
    log = cluster.run("logs", "-n", NAMESPACE, pod_name, "-c", "worker")
    assert f"took back 1 tasks that {pod_name} held before it restarted" in log, log[-3000:]
    previous = cluster.run("logs", "-n", NAMESPACE, pod_name, "-c", "worker", "--previous")
    assert re.search(
        rf"task {NAMESPACE}/crash-victim \(\S+\) kubetasks.sleep attempt 1 started", previous
    )
    print(
        f"\nkilled container: its task ran again {taken_back_after:.1f}s after the kill"
        f" (lease {LEASE_SECONDS}s), attempt 2 on {rerun['status']['worker']}"
    )


def test_a_deleted_worker_pod_hands_its_task_back(cluster: Cluster) -> None:
    """A pod deleted mid-task gets SIGTERM: the worker lets the task run for its grace
    period, then hands it back unspent, and another pod of the pool runs it to the end."""
    held = hold_task(cluster, "delete-victim", seconds=12)
    pod_name = held["status"]["worker"]
    cluster.run("delete", "pod", pod_name, "-n", NAMESPACE, "--wait=false")
    done = wait_phase(cluster, "delete-victim", "Succeeded", timeout=90)
    assert done["status"]["worker"] != pod_name
    assert done["status"]["attempts"] == 1  # handed back without spending an attempt


def test_no_outcome_came_through_the_operators_repair(cluster: Cluster) -> None:
    metrics = cluster.metrics()
    assert metrics["kubetasks_operator_repair_sweeps_total"] >= 1  # the counter is live
    assert metrics["kubetasks_operator_repaired_outcomes_total"] == 0
    assert metrics["kubetasks_operator_restored_tasks_total"] == 0
