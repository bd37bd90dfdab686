"""Every pod the chart creates, and every worker pod the operator creates, passes Pod Security
"restricted" as the real kube-apiserver's built-in PodSecurity admission judges it (not the
static ``chart_helpers.pod_security_problems``, which only knows the rules it was taught).

The test namespace is labelled restricted (enforce, warn and audit, version latest). The API
server enforces the level on Pods only, so each pod template is dry-run created as a Pod there
(``fixtures.podsecurity``); the workloads themselves are dry-run applied with kubectl, which
prints the API server's "would violate PodSecurity" warnings for them. Nothing is installed
but the chart's ServiceAccounts, since a pod's account is looked up before Pod Security runs.

- every documented values variant (the default values, ``ci/hardened-values.yaml`` and the
  other ``ci/*-values.yaml``): each rendered workload's pods are admitted, and applying the
  workloads draws no warning;
- the worker Deployment ``controller/workloads.py`` builds, with that variant's operator
  environment, for the chart's WorkerPool, for ``examples/01-workerpool.yaml`` and for a pool
  whose ``podTemplate`` sets labels, annotations, env and resources: the same two checks;
- the checks can fail: a rendered pod template given one thing restricted forbids is refused
  with the API server's message naming it, and its Deployment draws the warning.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from chart_helpers import (
    POD_KINDS,
    REPO,
    VARIANTS,
    Rendered,
    operator_environ,
    render,
    workload_defaults,
)
from kubernetes import client as k8s

# The chart tests' own server-side dry-run and variant helpers (test_chart_cluster.py),
# imported rather than copied.
from test_chart_cluster import dry_run, variant_sets

from fixtures.controlplane import Kubectl
from fixtures.podsecurity import pod_refusal, restrict
from kubetasks.controller.workloads import WorkloadDefaults, deployment
from kubetasks.vocabulary import API_VERSION

#: Kinds whose objects make pods: the chart's workloads, and Pods and CronJobs should the chart
#: ever render one (a Helm test pod, a periodic job), so a new one cannot escape the check.
POD_MAKERS = POD_KINDS | {"Pod", "CronJob"}
EXAMPLE_POOL = REPO / "examples" / "01-workerpool.yaml"
POOL_UID = "6b3e7c1e-0000-4000-8000-000000000002"
#: A pool whose podTemplate adds to the worker pod's metadata and container: labels,
#: annotations, env (a value and a Secret reference) and resources.
TUNED_POOL: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": "WorkerPool",
    "metadata": {"name": "reports"},
    "spec": {
        "queues": [{"name": "reports", "weight": 2}, {"name": "default"}],
        "podTemplate": {
            "labels": {"team": "reports"},
            "annotations": {"example.com/owner": "reports"},
            "env": [
                {"name": "REPORTS_BUCKET", "value": "s3://reports"},
                {"name": "API_TOKEN",
                 "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "token"}}},
            ],
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                          "limits": {"memory": "512Mi"}},
        },
    },
}  # fmt: skip


@pytest.fixture
def restricted(kube_api: k8s.ApiClient, namespace: str) -> str:
    """The test's namespace, Pod Security "restricted" enforced, warned and audited."""
    restrict(kube_api, namespace)
    return namespace


def render_into(variant: str, namespace: str) -> Rendered:
    # The namespaced and all-namespaces variants name a second namespace; it is only named:
    # everything that makes pods is rendered into the release namespace.
    other = f"{namespace[:50]}-b"
    return render(
        VARIANTS[variant], sets=variant_sets(variant, namespace, other), namespace=namespace
    )


def create_accounts(api: k8s.ApiClient, rendered: Rendered, namespace: str) -> None:
    """The chart's ServiceAccounts of ``namespace``, for real: a pod whose account does not
    exist is refused for that before Pod Security looks at it."""
    core = k8s.CoreV1Api(api)
    for doc in rendered.kinds("ServiceAccount"):
        if doc["metadata"]["namespace"] == namespace:
            meta = k8s.V1ObjectMeta(name=doc["metadata"]["name"])
            core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=meta))


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    """The template ``workload``'s controller makes its pods of; a StatefulSet's pods also
    get one volume per claim template, as the StatefulSet controller adds them."""
    kind, spec = workload["kind"], workload["spec"]
    if kind == "Pod":
        return {"metadata": workload["metadata"], "spec": spec}
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: dict[str, Any] = copy.deepcopy(spec["template"])
    for claim in spec.get("volumeClaimTemplates") or []:
        name = claim["metadata"]["name"]
        template["spec"].setdefault("volumes", []).append(
            {"name": name, "persistentVolumeClaim": {
                "claimName": f"{name}-{workload['metadata']['name']}-0"}}
        )  # fmt: skip
    return template


def refusals(
    api: k8s.ApiClient, namespace: str, workloads: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """For each of ``workloads`` (by label) whose pods the API server refuses: its message."""
    found = {}
    for label, workload in workloads.items():
        refusal = pod_refusal(api, namespace, pod_template(workload))
        if refusal is not None:
            found[label] = refusal
    return found


def pod_security_warnings(kubectl: Kubectl, docs: list[dict[str, Any]]) -> list[str]:
    """The Pod Security warnings a server-side dry-run apply of ``docs`` prints (dry_run()
    asserts that the API server accepts every object)."""
    runs: list[subprocess.CompletedProcess[str]] = []

    def recording(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        runs.append(kubectl(*args, input=input))
        return runs[-1]

    dry_run(recording, docs)
    lines = [line for run in runs for line in run.stderr.splitlines()]
    return [line for line in lines if "would violate PodSecurity" in line]


def label(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def worker_deployment(pool: dict[str, Any], defaults: WorkloadDefaults) -> dict[str, Any]:
    """The worker Deployment the operator applies for ``pool``. This module's one call of
    ``workloads.deployment()``: a change of its signature is made here."""
    return deployment(pool, replicas=1, defaults=defaults)


def in_namespace(pool: dict[str, Any], namespace: str) -> dict[str, Any]:
    """``pool`` as the API server would hand it to the operator: namespaced, with a uid."""
    return pool | {"metadata": pool["metadata"] | {"namespace": namespace, "uid": POOL_UID}}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_of_the_chart_passes_restricted(
    variant: str, kube_api: k8s.ApiClient, kubectl: Kubectl, restricted: str
) -> None:
    rendered = render_into(variant, restricted)
    create_accounts(kube_api, rendered, restricted)
    workloads = {label(d): d for d in rendered.kinds(*POD_MAKERS)}
    assert label(rendered.operator) in workloads
    assert all(d["metadata"]["namespace"] == restricted for d in workloads.values())
    print(f"{variant}: {', '.join(workloads)}")

    assert refusals(kube_api, restricted, workloads) == {}
    assert pod_security_warnings(kubectl, list(workloads.values())) == []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_worker_pod_the_operator_creates_passes_restricted(
    variant: str,
    kube_api: k8s.ApiClient,
    kubectl: Kubectl,
    restricted: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered = render_into(variant, restricted)
    create_accounts(kube_api, rendered, restricted)
    defaults = workload_defaults(operator_environ(rendered), monkeypatch)
    pools = {
        "examples/01-workerpool.yaml": yaml.safe_load(EXAMPLE_POOL.read_text()),
        "a pool with a pod template": TUNED_POOL,
    } | {f"the chart's {label(p)}": p for p in rendered.kinds("WorkerPool")}
    workers = {
        name: worker_deployment(in_namespace(pool, restricted), defaults)
        for name, pool in pools.items()
    }
    # The pool's pod template reached the pod: the check below covers what it sets.
    tuned = workers["a pool with a pod template"]["spec"]["template"]
    (container,) = tuned["spec"]["containers"]
    assert tuned["metadata"]["labels"]["team"] == "reports"
    assert tuned["metadata"]["annotations"] == {"example.com/owner": "reports"}
    assert {"REPORTS_BUCKET", "API_TOKEN"} <= {e["name"] for e in container["env"]}
    assert container["resources"] == TUNED_POOL["spec"]["podTemplate"]["resources"]

    assert refusals(kube_api, restricted, workers) == {}
    assert pod_security_warnings(kubectl, list(workers.values())) == []


def _no_seccomp(pod: dict[str, Any]) -> None:
    del pod["securityContext"]["seccompProfile"]
    for c in pod["containers"]:
        c["securityContext"].pop("seccompProfile", None)


def _privileged(pod: dict[str, Any]) -> None:
    # Privileged and no privilege escalation together are invalid before admission is asked.
    pod["containers"][0]["securityContext"] |= {"privileged": True,
                                                "allowPrivilegeEscalation": True}  # fmt: skip


def _host_path(pod: dict[str, Any]) -> None:
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/var/run"}})


FORBIDDEN: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "no seccomp profile": (
        _no_seccomp,
        'seccompProfile (pod or container "operator" must set'
        ' securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")',
    ),
    "host network": (
        lambda pod: pod.update(hostNetwork=True),
        "host namespaces (hostNetwork=true)",
    ),
    "privileged": (
        _privileged,
        'privileged (container "operator" must not set securityContext.privileged=true)',
    ),
    "hostPath volume": (
        _host_path,
        'restricted volume types (volume "host" uses restricted volume type "hostPath")',
    ),
}


@pytest.mark.parametrize("case", list(FORBIDDEN))
def test_a_rendered_pod_given_what_restricted_forbids_is_refused_naming_it(
    case: str, kube_api: k8s.ApiClient, kubectl: Kubectl, restricted: str
) -> None:
    rendered = render_into("default", restricted)
    create_accounts(kube_api, rendered, restricted)
    operator = copy.deepcopy(rendered.operator)
    assert refusals(kube_api, restricted, {"as rendered": operator}) == {}
    change, violation = FORBIDDEN[case]
    change(operator["spec"]["template"]["spec"])

    refused = refusals(kube_api, restricted, {label(operator): operator})
    assert list(refused) == [label(operator)]
    assert 'violates PodSecurity "restricted:latest"' in refused[label(operator)]
    assert violation in refused[label(operator)], refused
    # The Deployment itself is stored (dry run), with the same violation as a warning.
    (warning,) = pod_security_warnings(kubectl, [operator])
    assert violation in warning, warning
