"""``make demo``: the whole product on this machine, no Docker, no cluster needed.

It starts (or reuses) the local environment of ``kubetasks dev up``: etcd, kube-apiserver and
kube-controller-manager built from the Kubernetes modules, and a node. Where the machine can
run one (root, ``make node`` built), that is the real node (containerd, kubelet, kube-proxy,
scheduler, CoreDNS): the images ``make images`` built from the Dockerfiles are loaded into its
containerd and the chart is installed with ``helm install`` as a user installs it, so the
operator, the bundled Redis and every worker run as containers. Elsewhere it is the process
kubelet (worker pods as local ``kubetasks worker`` processes) with the operator as a local
process; the demo says which, and why. Then it applies ``examples/`` (a WorkerPool at zero, a
Task, a Task that fails twice then succeeds, a dependency chain, a PeriodicTask, a burst of 40
Tasks) and shows what ``kubectl get`` shows while it happens, until everything has finished
and the pool is back at zero. It is complete only if the operator's repair wrote no outcome:
every status comes from the workers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devenv.binaries import find_binary, find_kubectl
from devenv.env import DevEnvironment, default_state_dir
from devenv.node import NodeUnavailableError, check_machine
from kubetasks.errors import ConfigurationError
from kubetasks.vocabulary import PARENT_LABEL, POOL_LABEL

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "kubetasks-demo"
RELEASE = "kubetasks"
CHART = REPO / "charts" / "kubetasks"
#: The chart on the local real node: the built images, the CRDs ``dev up`` applied, no volume.
LOCAL_VALUES = CHART / "ci" / "local-node-values.yaml"
REPAIRED = "kubetasks_operator_repaired_outcomes_total"
WORKER_ACCOUNT = "kubetasks-worker"
#: What the chart gives worker pods (templates/worker/rbac.yaml): read Tasks, patch their
#: status, nothing else. Without it the workers' status writes are refused (403).
WORKER_RBAC = f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {WORKER_ACCOUNT}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {WORKER_ACCOUNT}}}
rules:
  - {{apiGroups: [kubetasks.dev], resources: [tasks], verbs: [get, list, watch]}}
  - {{apiGroups: [kubetasks.dev], resources: [tasks/status], verbs: [get, patch]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {WORKER_ACCOUNT}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {WORKER_ACCOUNT}}}
subjects: [{{kind: ServiceAccount, name: {WORKER_ACCOUNT}}}]
"""


@dataclass
class Progress:
    """What the demo waits for, read from the resources."""

    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasksets: dict[str, dict[str, Any]] = field(default_factory=dict)
    periodic: dict[str, Any] = field(default_factory=dict)
    pool: dict[str, Any] = field(default_factory=dict)
    peak_replicas: int = 0
    scaled_down: bool = False

    def phase(self, name: str) -> str:
        return str(self.tasks.get(name, {}).get("status", {}).get("phase", "-"))

    def burst(self) -> Counter[str]:
        return Counter(
            str(t.get("status", {}).get("phase", "Pending"))
            for name, t in self.tasks.items()
            if name.startswith("burst-")
        )

    def periodic_runs(self) -> int:
        return sum(
            1
            for t in self.tasks.values()
            if t["metadata"].get("labels", {}).get(PARENT_LABEL) == "heartbeat"
            and t.get("status", {}).get("phase") == "Succeeded"
        )

    def missing(self) -> list[str]:
        """What has not happened yet; empty when the demo is complete."""
        wanted = []
        for name in ("hello", "flaky", "fetch-name", "greet", "album"):
            if self.phase(name) != "Succeeded":
                wanted.append(f"{name} Succeeded (now {self.phase(name)})")
        resize = self.tasksets.get("resize", {}).get("status", {}).get("phase", "-")
        if resize != "Succeeded":
            wanted.append(f"TaskSet resize Succeeded (now {resize})")
        burst = self.burst()
        if burst["Succeeded"] != 40:
            wanted.append(f"40 burst Tasks Succeeded (now {burst['Succeeded']})")
        if self.periodic_runs() < 2 and not self.periodic.get("status", {}).get(
            "lastSuccessfulTime"
        ):
            wanted.append("two heartbeat runs")
        if self.peak_replicas < 2:
            wanted.append(f"the pool scaled up (peak so far {self.peak_replicas})")
        elif not self.scaled_down:
            wanted.append("the pool back at zero")
        return wanted


def choose_kubelet(requested: str, state_dir: Path) -> tuple[str, str]:
    """``(kubelet, why)``: the real node where this machine can run one, else the process
    kubelet; ``requested`` is ``auto``, ``real`` or ``process``."""
    if requested == "process":
        return "process", "asked for with --kubelet process"
    try:
        check_machine(state_dir)
    except NodeUnavailableError as exc:
        if requested == "real":
            raise
        return "process", str(exc)
    return "real", "this machine can run one"


class Demo:
    def __init__(self, env: DevEnvironment, timeout: float, kubelet: str) -> None:
        self.env = env
        self.timeout = timeout
        self.kubelet = kubelet
        self.kubectl_bin = str(find_kubectl())
        self.kubeconfig = str(env.status().kubeconfig)
        self.progress = Progress()

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        done = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def step(self, text: str) -> None:
        print(f"\n==> {text}", flush=True)

    def apply(self, path: Path) -> None:
        print(f"$ kubectl apply -n {NAMESPACE} -f {path.relative_to(REPO)}")
        out = self.kubectl("apply", "-n", NAMESPACE, "-f", str(path))
        lines = out.splitlines()
        shown = lines if len(lines) <= 6 else [*lines[:3], f"... ({len(lines)} objects)"]
        print("\n".join(f"  {line}" for line in shown), flush=True)

    def read(self) -> None:
        def items(plural: str) -> list[dict[str, Any]]:
            out = self.kubectl("get", plural, "-n", NAMESPACE, "-o", "json")
            return list(json.loads(out)["items"])

        self.progress.tasks = {t["metadata"]["name"]: t for t in items("tasks")}
        self.progress.tasksets = {t["metadata"]["name"]: t for t in items("tasksets")}
        self.progress.periodic = next(iter(items("periodictasks")), {})
        self.progress.pool = next(iter(items("workerpools")), {})
        replicas = int(self.progress.pool.get("status", {}).get("replicas") or 0)
        self.progress.peak_replicas = max(self.progress.peak_replicas, replicas)
        if self.progress.peak_replicas >= 2 and replicas == 0:
            self.progress.scaled_down = True

    def screen(self) -> str:
        """What a user watching ``kubectl get`` would see, burst Tasks summarized."""
        ns = ("-n", NAMESPACE)
        parts = [
            self.kubectl("get", "workerpools", *ns).rstrip(),
            self.kubectl("get", "periodictasks", *ns).rstrip(),
            self.kubectl("get", "tasksets", *ns).rstrip(),
            self.kubectl("get", "tasks", *ns, "-l", "batch!=burst").rstrip(),
        ]
        burst = self.progress.burst()
        summary = ", ".join(f"{n} {phase}" for phase, n in sorted(burst.items()))
        parts.append(f"burst (40 Tasks, label batch=burst): {summary or 'not created yet'}")
        pods = self.kubectl("get", "pods", *ns, "-l", POOL_LABEL, check=False)
        running = sum(1 for line in pods.splitlines()[1:] if " Running " in line)
        where = "containers on the real node" if self.kubelet == "real" else "local processes"
        parts.append(f"worker pods running ({where}): {running}")
        return "\n\n".join(parts)

    def watch(self) -> bool:
        start = time.monotonic()
        last = ""
        while True:
            self.read()
            shown = self.screen()
            if shown != last:
                elapsed = time.monotonic() - start
                print(f"\n--- t+{elapsed:5.1f}s {'-' * 60}\n{shown}", flush=True)
                last = shown
            if not self.progress.missing():
                return True
            if time.monotonic() - start > self.timeout:
                print("\nstill waiting for: " + "; ".join(self.progress.missing()))
                return False
            time.sleep(2)

    def run(self) -> bool:
        if self.kubelet == "real":
            self.install_chart()
        else:
            self.start_local_operator()
        self.step(
            "examples/: a WorkerPool at zero, Tasks, a chain, a PeriodicTask, a burst, a TaskSet"
            " and a chord"
        )
        for path in sorted((REPO / "examples").glob("*.yaml")):
            self.apply(path)
        self.step("watching (kubectl get workerpools / periodictasks / tasks, every 2 s)")
        ok = self.watch()
        print("\n" + "=" * 78)
        for name in ("hello", "flaky", "greet"):
            status = self.progress.tasks.get(name, {}).get("status", {})
            print(
                f"{name}: {status.get('phase')} after {status.get('attempts')} attempt(s),"
                f" result {json.dumps(status.get('result'))}"
            )
        print(f"heartbeat: {self.progress.periodic_runs()} successful run(s) kept")
        print(f"pool default: scaled 0 -> {self.progress.peak_replicas} -> 0 replicas")
        repaired = self.repaired_outcomes()
        print(
            f"outcomes the operator's repair had to write: {repaired} (the workers wrote the rest)"
        )
        print("=" * 78)
        return ok and repaired == 0

    def install_chart(self) -> None:
        """The release as a user installs it: the operator, Redis and workers as pods."""
        from devenv.images import build_images, load_images

        self.step("images from the Dockerfiles (make images: buildah, cached), into containerd")
        address = self.env.containerd_address
        assert address is not None
        load_images(address, build_images())
        self.step(f"helm install {RELEASE} charts/kubetasks -n {NAMESPACE} (operator, Redis)")
        argv = [str(find_binary("helm")), "upgrade", "--install", RELEASE, str(CHART),
                "--namespace", NAMESPACE, "--create-namespace", "--kubeconfig", self.kubeconfig,
                "--values", str(LOCAL_VALUES), "--wait", "--timeout", "5m"]  # fmt: skip
        print(f"$ helm upgrade --install {RELEASE} charts/kubetasks --namespace {NAMESPACE}"
              f" --values {LOCAL_VALUES.relative_to(REPO)} --wait")  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"helm install failed:\n{done.stderr}")
        print(self.kubectl("get", "pods", "-n", NAMESPACE).rstrip())

    def start_local_operator(self) -> None:
        self.step(f"namespace {NAMESPACE}")
        self.kubectl("create", "namespace", NAMESPACE, check=False)
        self.step(f"worker service account {WORKER_ACCOUNT}: read Tasks, patch their status")
        self.kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=WORKER_RBAC)
        self.step("the operator (kubetasks operator), watching the demo namespace")
        operator = self.env.start_operator(
            [NAMESPACE],
            # The production resync (60 s): the demo must not lean on repair to finish.
            {"KUBETASKS_WORKER_SERVICE_ACCOUNT": WORKER_ACCOUNT},
        )
        print(f"  pid {operator.pid}, log {operator.log_file}")
        print(f"  metrics: http://127.0.0.1:{self.env.operator_metrics_port}/metrics")

    def repaired_outcomes(self) -> int:
        """The operator's count of outcomes it copied from Redis because no worker wrote them."""
        if self.kubelet == "real":  # the operator pod's metrics, through the API server
            where = (f"/api/v1/namespaces/{NAMESPACE}/services/{RELEASE}-operator-metrics:"
                     "metrics/proxy/metrics")  # fmt: skip
            text = self.kubectl("get", "--raw", where)
        else:
            where = f"http://127.0.0.1:{self.env.operator_metrics_port}/metrics"
            with urllib.request.urlopen(where, timeout=5) as response:
                text = response.read().decode()
        for line in text.splitlines():
            if line.startswith(f"{REPAIRED} "):
                return int(float(line.split()[1]))
        raise LookupError(f"{where} has no {REPAIRED}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    parser.add_argument(
        "--state-dir", type=Path, default=default_state_dir().parent / "demo",
        help="where the environment lives (default ~/.cache/kubetasks/demo)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the end")
    parser.add_argument(
        "--kubelet", choices=("auto", "real", "process"), default="auto",
        help="auto (default): the real node where this machine can run one, else the process"
        " kubelet",
    )  # fmt: skip
    args = parser.parse_args(argv)

    env = DevEnvironment(args.state_dir)
    try:
        kubelet, why = choose_kubelet(args.kubelet, env.state_dir)
    except NodeUnavailableError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    if kubelet == "real":
        print("==> kubelet: the real node (containerd, kubelet, kube-proxy, scheduler, CoreDNS):"
              f" {why}")  # fmt: skip
    else:
        print(f"==> kubelet: the process kubelet (worker pods as local processes), because {why}")
    print(f"==> local control plane, Redis and the node (kubetasks dev up --kubelet {kubelet})")
    started = time.monotonic()
    try:
        status = env.up(kubelet=kubelet, crds=REPO / "crds")
    except ConfigurationError as exc:
        print(f"cannot start the local environment: {exc}", file=sys.stderr)
        return 1
    how = "reused" if status.reused else f"started in {time.monotonic() - started:.1f}s"
    print(f"  {how}; state in {args.state_dir}")
    ok = False
    try:
        ok = Demo(env, args.timeout, kubelet).run()
    finally:
        if args.keep:
            print("\nEverything is still running. To use it:")
            print(env.status().exports())
            print(f"  kubectl get tasks,periodictasks,workerpools -n {NAMESPACE}")
            print(f"When done: kubetasks dev down --state-dir {args.state_dir}")
        else:
            env.down()
            print("\nStopped everything (run with --keep, i.e. `make demo ARGS=--keep`, to stay).")
    print(f"demo ({kubelet} kubelet): " + ("complete" if ok else "INCOMPLETE"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
