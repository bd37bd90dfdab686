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
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from chart_cluster import (
    EXAMPLES,
    LEASE_SECONDS,
    LOCAL_VALUES,
    NAMESPACE,
    OTHER_NAMESPACE,
    RELEASE,
    Cluster,
    wait_for,
)

from kubetasks.vocabulary import API_VERSION, FINAL_PHASES, POOL_LABEL

pytestmark = [pytest.mark.timeout(900), pytest.mark.images]


def example_tasks() -> dict[str, dict[str, Any]]:
    """The Task manifests in examples/, by name."""
    docs = [
        d for p in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d
    ]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Task"}


def phase(task: dict[str, Any]) -> str | None:
    return (task.get("status") or {}).get("phase")


def pod_of(task: dict[str, Any]) -> str:
    """The name of the pod whose worker wrote the Task's status (the worker id is
    ``namespace/pod``; a Task's worker always runs in the Task's own namespace)."""
    worker: str = task["status"]["worker"]
    namespace, _, pod = worker.partition("/")
    assert namespace == task["metadata"]["namespace"], task["status"]
    return pod


def container_of(pod: dict[str, Any]) -> dict[str, Any]:
    (status,) = [c for c in pod["status"].get("containerStatuses", []) if c["name"] == "worker"]
    return dict(status)


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
        done = {n: t for n, t in tasks.items() if n in expected and phase(t) in FINAL_PHASES}
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
    # Every status was written by a worker pod that exists(ed): a real pod of the pool, named
    # with its namespace (worker ids are unique across the cluster).
    workers = {status[n]["worker"] for n in expected}
    assert all(w.startswith(f"{NAMESPACE}/default-") for w in workers), workers
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
        status[n]["worker"] == f"{NAMESPACE}/{pod}"
        for n in ran
        if n in status and status[n]["attempts"] == 1
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
    pod = pod_of(hold)
    script = PROBE_SCRIPT.format(
        status=f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/tasks/rbac-probe/status",
        own=f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/tasks",
        secrets=f"/api/v1/namespaces/{NAMESPACE}/secrets",
        other=f"/apis/{API_VERSION}/namespaces/{OTHER_NAMESPACE}/tasks",
        pods=f"/api/v1/namespaces/{NAMESPACE}/pods",
    )
    out = cluster.run("exec", "-n", NAMESPACE, pod, "-c", "worker", "--", "python", "-c", script)
    answers = json.loads(out)
    assert answers == {
        "whoami": f"system:serviceaccount:{NAMESPACE}:{RELEASE}-worker",
        "patch own Task status": 200,
        "list own namespace's Tasks": 403,  # its work comes from Redis, not from the API
        "list Secrets": 403,
        "list another namespace's Tasks": 403,
        "list Pods": 403,
    }, answers
    wait_phase(cluster, "rbac-probe", "Succeeded", timeout=60)


def test_each_pool_logs_in_to_redis_as_its_own_user(cluster: Cluster) -> None:
    """The worker pod holds its pool's Redis credentials, from a Secret the operator made,
    never the operator's password; with them it reaches its own namespace's keys only, and
    without a user name the bundled Redis answers nobody."""
    hold = hold_task(cluster, "redis-user-probe", seconds=20)
    pod_name = pod_of(hold)
    pod = cluster.json("get", "pod", pod_name, "-n", NAMESPACE)
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    pool = pod["metadata"]["labels"][POOL_LABEL]
    assert env["KUBETASKS_REDIS_USERNAME"]["value"] == f"kubetasks:pool:{NAMESPACE}/{pool}"
    ref = env["KUBETASKS_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["name"].startswith(f"{pool}-redis-"), ref
    secret = cluster.json("get", "secret", ref["name"], "-n", NAMESPACE)
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "WorkerPool"
    (chart_secret,) = cluster.json(
        "get", "secrets", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=redis"
    )["items"]
    assert ref["name"] != chart_secret["metadata"]["name"]
    script = REDIS_PROBE_SCRIPT.format(other=OTHER_NAMESPACE, own=NAMESPACE)
    out = cluster.run("exec", "-n", NAMESPACE, pod_name, "-c", "worker", "--", "python", "-c",
                      script)  # fmt: skip
    assert json.loads(out) == {
        "logged in": "ok",
        "own load report": "ok",
        "another namespace's queue": "NoPermissionError",
        "every key": "NoPermissionError",
        "ACL SETUSER": "NoPermissionError",
        "without a user name": "AuthenticationError",
    }, out
    wait_phase(cluster, "redis-user-probe", "Succeeded", timeout=60)


REDIS_PROBE_SCRIPT = """
import json, redis
from kubetasks import settings
url = settings.redis_url()
r = redis.Redis.from_url(url)
def attempt(call):
    try:
        call()
        return "ok"
    except redis.RedisError as exc:
        return type(exc).__name__
answers = {{"logged in": attempt(r.ping)}}
answers["own load report"] = attempt(lambda: r.hset("kubetasks:worker:{own}/probe", "a", 1))
answers["another namespace's queue"] = attempt(
    lambda: r.zrange("kubetasks:{{{other}/default}}:pending", 0, -1))
answers["every key"] = attempt(lambda: r.keys("*"))
answers["ACL SETUSER"] = attempt(
    lambda: r.execute_command("ACL", "SETUSER", "intruder", "on", "~*", "+@all"))
anonymous = redis.Redis.from_url(url.split("@")[0].split("//")[0] + "//" + url.split("@")[1])
answers["without a user name"] = attempt(lambda: anonymous.zrange("kubetasks:queues", 0, -1))
print(json.dumps(answers))
"""


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
            "apiVersion": API_VERSION,
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
    pod_name = pod_of(held)
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
    worker = f"{NAMESPACE}/{pod_name}"
    assert f"took back 1 tasks that {worker} held before it restarted" in log, log[-3000:]
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
    pod_name = pod_of(held)
    cluster.run("delete", "pod", pod_name, "-n", NAMESPACE, "--wait=false")
    done = wait_phase(cluster, "delete-victim", "Succeeded", timeout=90)
    assert pod_of(done) != pod_name
    assert done["status"]["attempts"] == 1  # handed back without spending an attempt


def test_no_outcome_came_through_the_operators_repair(cluster: Cluster) -> None:
    metrics = cluster.metrics()
    assert metrics["kubetasks_operator_repair_sweeps_total"] >= 1  # the counter is live
    assert metrics["kubetasks_operator_repaired_outcomes_total"] == 0
    assert metrics["kubetasks_operator_restored_tasks_total"] == 0
    # Nothing failed quietly on the way: a skipped item of a loop logs a traceback, and the
    # operator's own account is refused nothing it asks (its RBAC is what the chart renders).
    log = cluster.run("logs", "-n", NAMESPACE, f"deploy/{RELEASE}-operator")
    bad = [line for line in log.splitlines() if "Traceback" in line or "Forbidden" in line]
    assert not bad, log[-6000:]
