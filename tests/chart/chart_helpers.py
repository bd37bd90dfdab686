"""Rendering the chart with the real helm binary, and the checks every rendering must pass.

helm is the one ``make controlplane`` builds from the pinned Go module (found through
``devenv.binaries``); a missing binary is an error that says how to build it, not a skip.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.binaries import KUBERNETES_VERSION, find_binary
from kubetasks import settings
from kubetasks.controller.workloads import WorkloadDefaults

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetasks"
CI_VALUES = CHART / "ci"
NAMESPACE = "kubetasks"
RELEASE = "kt"

# Documented variants: chart-testing style values files under charts/kubetasks/ci/.
VARIANTS: dict[str, tuple[Path, ...]] = {"default": ()} | {
    p.name.removesuffix("-values.yaml"): (p,) for p in sorted(CI_VALUES.glob("*-values.yaml"))
}

POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
RBAC_KINDS = {"Role", "ClusterRole"}


def helm_binary() -> Path:
    return find_binary("helm")


def helm(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run helm with its caches in the environment's defaults; never raises on exit status."""
    env = dict(os.environ)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, env=env, timeout=90
    )


def template_args(
    values_files: Iterable[Path] = (),
    sets: Sequence[str] = (),
    namespace: str = NAMESPACE,
    release: str = RELEASE,
    extra: Sequence[str] = (),
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace, *extra]
    args += ["--kube-version", KUBERNETES_VERSION]
    for path in values_files:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    return args


@dataclass
class Rendered:
    """The documents of one `helm template`, parsed."""

    docs: list[dict[str, Any]]
    text: str

    def kinds(self, *kinds: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] in kinds]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.kinds(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"want one {kind} {name or ''}, rendered {len(found)}"
        return found[0]

    def names(self, kind: str) -> list[str]:
        return sorted(d["metadata"]["name"] for d in self.kinds(kind))

    @property
    def operator(self) -> dict[str, Any]:
        return self.one("Deployment", f"{RELEASE}-kubetasks-operator")

    @property
    def operator_container(self) -> dict[str, Any]:
        containers = self.operator["spec"]["template"]["spec"]["containers"]
        assert [c["name"] for c in containers] == ["operator"]
        return dict(containers[0])


def render(
    values_files: Iterable[Path] = (),
    sets: Sequence[str] = (),
    namespace: str = NAMESPACE,
    release: str = RELEASE,
    extra: Sequence[str] = (),
) -> Rendered:
    result = helm(*template_args(values_files, sets, namespace, release, extra))
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return Rendered(docs, result.stdout)


def operator_environ(r: Rendered) -> dict[str, str]:
    """The operator container's environment as the pod would see it: references to Secrets
    and fields become a stand-in value (what they hold does not reach the worker manifest)."""
    return {
        e["name"]: e["value"] if "value" in e else f"<{e['name']} from a reference>"
        for e in r.operator_container["env"]
    }


def workload_defaults(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> WorkloadDefaults:
    """What the operator, started with exactly ``environ`` (no other kubetasks variable),
    gives the worker Deployment of every WorkerPool."""
    for name in settings.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return WorkloadDefaults()


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """A container's env as name -> value, or name -> valueFrom for references."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def pod_security_problems(doc: dict[str, Any]) -> list[str]:
    """How a workload's pod template falls short of the restricted Pod Security Standard."""
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    pod = doc["spec"]["template"]["spec"]
    psc = pod.get("securityContext") or {}
    problems = []
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile is not RuntimeDefault")
    for c in pod.get("initContainers", []) + pod["containers"]:
        csc = c.get("securityContext") or {}
        name = f"{where} container {c['name']}"
        if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not true")
        if csc.get("runAsUser", psc.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as uid 0")
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem is not true")
        if (csc.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities do not drop ALL")
        if (csc.get("capabilities") or {}).get("add"):
            problems.append(f"{name}: adds capabilities {csc['capabilities']['add']}")
        if csc.get("privileged"):
            problems.append(f"{name}: privileged")
        seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"{name}: seccompProfile is {seccomp!r}")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{where}: {key}")
    for volume in pod.get("volumes", []):
        if "hostPath" in volume:
            problems.append(f"{where}: hostPath volume {volume['name']}")
    return problems


def rbac_wildcards(doc: dict[str, Any]) -> list[str]:
    """Every wildcard or non-resource URL in a Role or ClusterRole."""
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    found = []
    for i, rule in enumerate(doc.get("rules") or []):
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            for item in rule.get(field) or []:
                if "*" in item:
                    found.append(f"{where} rule {i}: {field} contains {item!r}")
        if rule.get("nonResourceURLs"):
            found.append(f"{where} rule {i}: nonResourceURLs {rule['nonResourceURLs']}")
    return found


def grants(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples a Role or ClusterRole grants."""
    return {
        (group, resource, verb)
        for rule in doc.get("rules") or []
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
    }


def load_yaml_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]
