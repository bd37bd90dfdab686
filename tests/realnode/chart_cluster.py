"""The chart installed on the real node once for the tier, as a user installs it.

``cluster`` (a package fixture, see conftest.py) loads the images ``make images`` builds into
the node's containerd and runs ``helm install`` of ``charts/kubetasks`` with the local-node
values; the tier's modules share the release, so it is installed once. Besides the release
namespace, two tenant namespaces get the worker ServiceAccount and Role (the chart's
``worker.extraNamespaces``), for WorkerPools there. They get no copy of the Redis password:
each pool logs in as its own Redis user (``redis.poolUsers``, on by default).

Every namespace of the tier enforces Pod Security "restricted" (the node's default is
"baseline"): the operator, Redis and every worker pod must pass it to run at all.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from devenv.binaries import find_binary
from fixtures.realnode import RealNodeHandle
from fixtures.waiting import wait_for
from kubetasks.vocabulary import POOL_LABEL

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetasks"
EXAMPLES = REPO / "examples"
NAMESPACE = "kubetasks"
RELEASE = "kubetasks"
OTHER_NAMESPACE = "kubetasks-other"
#: Namespaces of the tenancy tests: each gets the worker account.
TENANTS = ("team-a", "team-b")
OPERATOR_METRICS = (
    f"/api/v1/namespaces/{NAMESPACE}/services/{RELEASE}-operator-metrics:metrics/proxy/metrics"
)
LEASE_SECONDS = 30  # the worker's default lease: what a restarted container must beat

# What the README has a user run on the local node (the built images, the CRDs that
# `kubetasks dev up` applied, no storage provisioner, the examples' own WorkerPool)...
LOCAL_VALUES = CHART / "ci" / "local-node-values.yaml"
# ...and a resync far beyond the tier's length, so that an outcome only the operator's repair
# loop would write fails the tier instead of being copied over after a minute.
HELM_SETS = [
    "--set", "operator.extraEnv[0].name=KUBETASKS_RESYNC_SECONDS",
    "--set-string", "operator.extraEnv[0].value=86400",
    "--set", f"worker.extraNamespaces={{{','.join(TENANTS)}}}",
    # The operator serves the release namespace and the tenants (the chart's default is the
    # release namespace only); OTHER_NAMESPACE stays unwatched.
    "--set", f"operator.watch.namespaces={{{','.join((NAMESPACE, *TENANTS))}}}",
]  # fmt: skip

T = TypeVar("T")

__all__ = ["EXAMPLES", "Cluster", "installed_release", "wait_for"]


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

    def create_restricted_namespace(self, name: str) -> None:
        """A namespace that enforces Pod Security "restricted"."""
        labels = {f"pod-security.kubernetes.io/{mode}": "restricted"
                  for mode in ("enforce", "warn", "audit")}  # fmt: skip
        namespace = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": name, "labels": labels}}  # fmt: skip
        self.run("apply", "-f", "-", input=json.dumps(namespace))

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
                "logs", "-n", NAMESPACE, f"deploy/{RELEASE}-operator", "--tail=200"
            ).stdout
        )
        return "\n".join(out)


@contextmanager
def installed_release(real_node: RealNodeHandle) -> Iterator[Cluster]:
    """The built images loaded into the node's containerd, the chart installed; uninstalled
    at the end."""
    from devenv.images import build_images, load_images

    started = time.monotonic()
    load_images(real_node.containerd_address, build_images())
    images = time.monotonic()
    c = Cluster(real_node)
    for namespace in (NAMESPACE, OTHER_NAMESPACE, *TENANTS):
        c.create_restricted_namespace(namespace)
    c.helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "--values", str(LOCAL_VALUES), *HELM_SETS, "--wait", "--timeout", "5m",
    )  # fmt: skip
    installed = time.monotonic()
    print(
        f"\nimages built and loaded in {images - started:.0f}s,"
        f" helm install --wait in {installed - images:.0f}s"
    )
    try:
        yield c
    finally:
        c.run("delete", "-n", NAMESPACE, "--ignore-not-found", "--wait=false", "-f", str(EXAMPLES))
        c.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "2m")
        for namespace in (OTHER_NAMESPACE, *TENANTS):
            c.run("delete", "namespace", namespace, "--wait=false")
