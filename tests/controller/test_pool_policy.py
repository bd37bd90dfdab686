"""The pool policy on the real control plane: a WorkerPool asking for more than the operator
allows gets a PolicyViolation condition and event naming the field, and no Deployment; a
compliant one gets its Deployment, whose pods pass Pod Security "restricted"; a refused pool
that is fixed gets its Deployment without a restart. The operator runs with the chart's
default policy (no ``KUBETASKS_POOL_*`` set: the settings' defaults) but for one Secret its
env may read."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from fixtures.kube import obj
from fixtures.operator import Operator, kube_env
from fixtures.podsecurity import pod_refusal, restrict
from fixtures.waiting import wait_for as wait
from kubetasks.vocabulary import API_VERSION, GROUP, VERSION, WORKER_POOLS

TESTS = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@pytest.fixture
def policy_operator(
    control_plane: ControlPlane, redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[Operator]:
    """The operator with the default policy, and the one Secret a platform team allows."""
    env = kube_env(control_plane, redis_url)
    for name in [n for n in env if n.startswith("KUBETASKS_POOL_")]:
        del env[name]
    env["KUBETASKS_POOL_ENV_SECRETS"] = "api-token"
    op = Operator(env, tmp_path / "operator.log", namespace)
    yield op
    op.stop()


class Cluster:
    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.apps = k8s.AppsV1Api(api)
        self.core = k8s.CoreV1Api(api)
        self.namespace = namespace

    def pool(self, name: str, image: str | None = None, **template: Any) -> None:
        env = [
            {"name": "PYTHONPATH", "value": os.pathsep.join([str(TESTS / "worker"), str(TESTS)])}
        ]
        template["env"] = env + template.get("env", [])
        spec: dict[str, Any] = {"queues": [{"name": f"q-{name}"}], "podTemplate": template}
        if image:
            spec["image"] = image
        body = {"apiVersion": API_VERSION, "kind": "WorkerPool", "metadata": {"name": name},
                "spec": spec}  # fmt: skip
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, WORKER_POOLS, body
        )

    def patch_pool(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, WORKER_POOLS, name, {"spec": spec}
        )

    def ready(self, name: str) -> dict[str, Any] | None:
        pool = obj(
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, WORKER_POOLS, name
            )
        )
        conditions = (pool.get("status") or {}).get("conditions") or []
        return next((dict(c) for c in conditions if c["type"] == "Ready"), None)

    def refusal(self, name: str) -> dict[str, Any] | None:
        ready = self.ready(name)
        return ready if ready is not None and ready["reason"] == "PolicyViolation" else None

    def warnings(self, name: str, reason: str) -> list[str]:
        found = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        )
        return [e.message or "" for e in found.items if e.reason == reason and e.type == "Warning"]

    def deployment(self, name: str) -> Any:
        try:
            return self.apps.read_namespaced_deployment(name, self.namespace)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def account(self, name: str, labels: dict[str, str]) -> None:
        meta = k8s.V1ObjectMeta(name=name, labels=labels)
        self.core.create_namespaced_service_account(
            self.namespace, k8s.V1ServiceAccount(metadata=meta)
        )

    def secret(self, name: str, labels: dict[str, str]) -> None:
        meta = k8s.V1ObjectMeta(name=name, labels=labels)
        self.core.create_namespaced_secret(
            self.namespace, k8s.V1Secret(metadata=meta, string_data={"token": "s3cret"})
        )

    def restricted(self) -> None:
        """Pod Security "restricted" enforced in the namespace."""
        restrict(self.core.api_client, self.namespace)

    def admits_pod(self, template: Any) -> str | None:
        """None if the API server (Pod Security included) would create a pod of this
        template, else its refusal (a server-side dry run: nothing is created)."""
        return pod_refusal(self.core.api_client, self.namespace, template)


@pytest.fixture
def cluster(kube_api: k8s.ApiClient, namespace: str) -> Cluster:
    return Cluster(kube_api, namespace)


WORKER = {"kubetasks.dev/worker": "true"}
APPARMOR = "container.apparmor.security.beta.kubernetes.io/worker"


def token_from(secret: str) -> list[dict[str, Any]]:
    return [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}]


@pytest.mark.timeout(120)
def test_pools_asking_for_too_much_are_refused_naming_the_field_and_get_no_deployment(
    policy_operator: Operator, cluster: Cluster
) -> None:
    cluster.restricted()
    cluster.account("admin", {"team": "ops"})
    cluster.account("search-workers", WORKER)
    cluster.secret("db-admin", {})
    cluster.secret("api-token", {})

    refused: dict[str, tuple[str, dict[str, Any]]] = {
        "account": ("spec.podTemplate.serviceAccountName", {"serviceAccountName": "admin"}),
        "image": ("spec.image", {}),
        "priority": (
            "spec.podTemplate.priorityClassName",
            {"priorityClassName": "system-node-critical"},
        ),
        "apparmor": (
            f"spec.podTemplate.annotations[{APPARMOR!r}]",
            {"annotations": {APPARMOR: "unconfined"}},
        ),
        "secret": (
            "spec.podTemplate.env[1].valueFrom.secretKeyRef.name",
            {"env": token_from("db-admin")},
        ),
        "tolerant": ("spec.podTemplate.tolerations[0]", {"tolerations": [{"operator": "Exists"}]}),
    }
    for name, (_, template) in refused.items():
        cluster.pool(name, "evil.example/miner:1" if name == "image" else None, **template)
    # Compliant: a labelled service account, env from the allowed Secret, the worker image's
    # repository with another tag, an ordinary toleration.
    cluster.pool(
        "fine",
        "ghcr.io/kubetasks/worker:custom",
        serviceAccountName="search-workers",
        env=token_from("api-token"),
        tolerations=[{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
        annotations={"example.com/owner": "search"},
    )

    found = wait("the compliant pool's Deployment", lambda: cluster.deployment("fine"))
    template = found.spec.template
    assert template.spec.service_account_name == "search-workers"
    assert template.spec.containers[0].image == "ghcr.io/kubetasks/worker:custom"
    assert cluster.admits_pod(template) is None, "its pods pass Pod Security restricted"

    for name, (field, _) in refused.items():
        condition = wait(f"the refusal of {name}", functools.partial(cluster.refusal, name))
        assert condition["status"] == "False"
        assert condition["message"].startswith(f"{field}: "), condition["message"]
        events = functools.partial(cluster.warnings, name, "PolicyViolation")
        (event,) = wait(f"the event of {name}", events)
        assert event.startswith(f"{field}: "), event
        assert cluster.deployment(name) is None, f"{name}: nothing is created"
    account, secret = cluster.refusal("account"), cluster.refusal("secret")
    assert account is not None and "not labelled kubetasks.dev/worker=true" in account["message"]
    assert secret is not None and "(allowed: api-token)" in secret["message"]

    # What the policy refuses is what Pod Security would have refused on every pod.
    template.metadata.annotations = {APPARMOR: "unconfined"}
    assert "forbidden" in (cluster.admits_pod(template) or "")

    # The user fixes the pool: it gets its Deployment, no restart needed, and a Normal event.
    cluster.patch_pool("account", {"podTemplate": {"serviceAccountName": "search-workers"}})
    fixed = wait("the fixed pool's Deployment", lambda: cluster.deployment("account"))
    assert fixed.spec.template.spec.service_account_name == "search-workers"
    wait("the refusal cleared", lambda: cluster.refusal("account") is None or None)
    assert policy_operator.proc is not None and policy_operator.proc.poll() is None
