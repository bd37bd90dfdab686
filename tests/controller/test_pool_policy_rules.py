"""The WorkerPool policy, rule by rule: what a pool may ask for of its pods, and the field each
refusal names (pure: the labels a check needs are given, as the operator reads them)."""

from __future__ import annotations

from typing import Any

import pytest

from kubetasks.controller.poolpolicy import (
    Found,
    LookupFailed,
    PoolPolicy,
    Selector,
    check,
    image_allowed,
    references,
    repository,
)
from kubetasks.controller.workloads import WorkloadDefaults
from kubetasks.errors import ConfigurationError

POLICY = PoolPolicy(
    worker_image="ghcr.io/kubetasks/worker:0.1.0",
    worker_service_account="kubetasks-worker",
    service_account_selector=Selector.parse("kubetasks.dev/worker=true", "test"),
)
WORKER = {"kubetasks.dev/worker": "true"}


def spec(image: str | None = None, **template: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"queues": [{"name": "default"}], "podTemplate": template}
    if image is not None:
        body["image"] = image
    return body


def refusals(
    pool: dict[str, Any], policy: PoolPolicy = POLICY, found: Found | None = None
) -> list[str]:
    return [str(v) for v in check(pool, policy, found or {})]


def secret_env(name: str, kind: str = "secretKeyRef") -> list[dict[str, Any]]:
    return [{"name": "TOKEN", "valueFrom": {kind: {"name": name, "key": "token"}}}]


def test_a_pool_that_asks_for_nothing_is_admitted_and_needs_no_lookup() -> None:
    plain = spec(env=[{"name": "MODE", "value": "fast"}], resources={"requests": {"cpu": "1"}})
    assert references(plain, POLICY) == set()
    assert refusals(plain) == []


# -- images --------------------------------------------------------------------------------


def test_the_worker_images_repository_is_allowed_with_any_tag_and_nothing_else() -> None:
    assert refusals(spec("ghcr.io/kubetasks/worker:0.2.0")) == []
    assert refusals(spec("ghcr.io/kubetasks/worker@sha256:" + "a" * 64)) == []
    assert refusals(spec("ghcr.io/kubetasks/worker-evil:1")) == [
        "spec.image: 'ghcr.io/kubetasks/worker-evil:1' is not an allowed worker image"
        " (allowed: ghcr.io/kubetasks/worker)"
    ]
    assert refusals(spec("evil.example/miner:latest"))[0].startswith("spec.image: ")


def test_image_patterns_allow_a_repository_or_a_prefix() -> None:
    policy = PoolPolicy(worker_image="w:1", images=("registry.corp/team/*", "docker.io/app"))
    assert refusals(spec("registry.corp/team/a/b:2"), policy) == []
    assert refusals(spec("docker.io/app:3"), policy) == []
    assert refusals(spec("docker.io/app-other:3"), policy) != []
    assert refusals(spec("registry.corp/other:1"), policy) != []
    assert image_allowed("*", "anything:1")


def test_repository_strips_the_tag_or_digest_but_not_a_registry_port() -> None:
    assert repository("host:5000/a/b:1") == "host:5000/a/b"
    assert repository("host:5000/a/b") == "host:5000/a/b"
    assert repository("a/b@sha256:abc") == "a/b"
    assert repository("kubetasks/worker:dev") == "kubetasks/worker"


# -- service accounts ----------------------------------------------------------------------


def test_the_worker_service_account_is_allowed_by_name_without_a_lookup() -> None:
    pool = spec(serviceAccountName="kubetasks-worker")
    assert references(pool, POLICY) == set()
    assert refusals(pool) == []


def test_a_service_account_is_allowed_by_its_worker_label() -> None:
    pool = spec(serviceAccountName="search-workers")
    assert references(pool, POLICY) == {"search-workers"}
    assert refusals(pool, found={"search-workers": WORKER | {"team": "search"}}) == []


def test_a_service_account_without_the_label_is_refused_naming_the_field() -> None:
    pool = spec(serviceAccountName="admin")
    assert refusals(pool, found={"admin": {"team": "ops"}}) == [
        "spec.podTemplate.serviceAccountName: 'admin' is not a worker service account: it is"
        " not labelled kubetasks.dev/worker=true (allowed: kubetasks-worker, labelled"
        " kubetasks.dev/worker=true)"
    ]
    (missing,) = refusals(pool, found={"admin": None})
    assert "it does not exist" in missing
    (unread,) = refusals(pool, found={"admin": LookupFailed("forbidden")})
    assert "its labels could not be read (forbidden)" in unread
    (not_looked_up,) = refusals(pool)
    assert not_looked_up.startswith("spec.podTemplate.serviceAccountName: ")


def test_service_accounts_listed_by_name_or_pattern_need_no_label() -> None:
    policy = PoolPolicy(service_accounts=("batch-*",), worker_service_account="w")
    assert references(spec(serviceAccountName="batch-1"), policy) == set()
    assert refusals(spec(serviceAccountName="batch-1"), policy) == []
    assert refusals(spec(serviceAccountName="default"), policy) == [
        "spec.podTemplate.serviceAccountName: 'default' is not a worker service account:"
        " not listed by name (allowed: w, batch-*)"
    ]


# -- priority classes ----------------------------------------------------------------------


def test_no_priority_class_is_allowed_by_default() -> None:
    assert refusals(spec(priorityClassName="system-node-critical")) == [
        "spec.podTemplate.priorityClassName: 'system-node-critical' is not an allowed priority"
        " class (allowed: none)"
    ]
    allowed = PoolPolicy(priority_classes=("batch-low",))
    assert refusals(spec(priorityClassName="batch-low"), allowed) == []
    assert refusals(spec(priorityClassName="system-cluster-critical"), allowed) != []


# -- env sources ---------------------------------------------------------------------------


def test_env_from_a_secret_or_config_map_is_refused_by_default_naming_the_entry() -> None:
    pool = spec(env=[{"name": "A", "value": "1"}, *secret_env("db-admin")])
    assert references(pool, POLICY) == set(), "no lookup: env sources go by name"
    assert refusals(pool) == [
        "spec.podTemplate.env[1].valueFrom.secretKeyRef.name: Secret 'db-admin' is not a worker"
        " env source (allowed: none)"
    ]
    (refused,) = refusals(spec(env=secret_env("settings", "configMapKeyRef")))
    assert refused.startswith("spec.podTemplate.env[0].valueFrom.configMapKeyRef.name: ")


def test_env_sources_listed_by_name_are_allowed_per_kind() -> None:
    policy = PoolPolicy(env_secrets=("shared-*",), env_config_maps=("settings",))
    assert refusals(spec(env=secret_env("shared-token")), policy) == []
    assert refusals(spec(env=secret_env("settings", "configMapKeyRef")), policy) == []
    assert refusals(spec(env=secret_env("settings")), policy) == [
        "spec.podTemplate.env[0].valueFrom.secretKeyRef.name: Secret 'settings' is not a"
        " worker env source (allowed: shared-*)"
    ]


def test_field_references_in_env_are_not_sources() -> None:
    env = [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    assert references(spec(env=env), POLICY) == set()
    assert refusals(spec(env=env)) == []


# -- annotations ---------------------------------------------------------------------------


def test_annotations_that_weaken_pod_security_are_refused() -> None:
    template: dict[str, Any] = {
        "annotations": {
            "container.apparmor.security.beta.kubernetes.io/worker": "unconfined",
            "seccomp.security.alpha.kubernetes.io/pod": "unconfined",
            "controller.kubernetes.io/pod-deletion-cost": "-1000",
            "example.com/owner": "search",
        }
    }
    fields = [r.split(": ", 1)[0] for r in refusals(spec(**template))]
    assert fields == [
        "spec.podTemplate.annotations['container.apparmor.security.beta.kubernetes.io/worker']",
        "spec.podTemplate.annotations['seccomp.security.alpha.kubernetes.io/pod']",
        "spec.podTemplate.annotations['controller.kubernetes.io/pod-deletion-cost']",
    ]


def test_the_operator_may_deny_more_annotation_keys() -> None:
    policy = PoolPolicy(denied_annotations=("sidecar.istio.io/*",))
    assert refusals(spec(annotations={"sidecar.istio.io/inject": "false"}), policy) == [
        "spec.podTemplate.annotations['sidecar.istio.io/inject']: refused by the operator"
        " (denied: sidecar.istio.io/*)"
    ]
    assert refusals(spec(annotations={"example.com/a": "b"}), policy) == []


# -- tolerations ---------------------------------------------------------------------------


def test_tolerating_every_taint_is_refused_whatever_the_effect() -> None:
    everything = [{"operator": "Exists"}, {"operator": "Exists", "effect": "NoExecute"}]
    assert refusals(spec(tolerations=everything)) == [
        "spec.podTemplate.tolerations[0]: tolerates every taint (an empty key with operator"
        " Exists)",
        "spec.podTemplate.tolerations[1]: tolerates every taint (an empty key with operator"
        " Exists)",
    ]


def test_node_taints_are_refused_unless_allowed_and_other_taints_are_fine() -> None:
    tolerations = [
        {"key": "batch", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    ]
    assert [r.split(": ", 1)[0] for r in refusals(spec(tolerations=tolerations))] == [
        "spec.podTemplate.tolerations[1].key",
        "spec.podTemplate.tolerations[2].key",
    ]
    policy = PoolPolicy(allowed_node_taints=("node.kubernetes.io/unreachable",))
    assert [r.split(": ", 1)[0] for r in refusals(spec(tolerations=tolerations), policy)] == [
        "spec.podTemplate.tolerations[1].key"
    ]


def test_node_selectors_and_affinity_are_the_pools_own() -> None:
    affinity: dict[str, Any] = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}
    }
    assert refusals(spec(nodeSelector={"pool": "batch"}, affinity=affinity)) == []


# -- every refusal at once, and the settings -------------------------------------------------


def test_every_refusal_of_a_pool_is_reported_at_once() -> None:
    pool = spec(
        "evil.example/x:1",
        serviceAccountName="admin",
        priorityClassName="system-node-critical",
        tolerations=[{"operator": "Exists"}],
    )
    fields = [v.field for v in check(pool, POLICY, {"admin": {}})]
    assert fields == [
        "spec.image",
        "spec.podTemplate.serviceAccountName",
        "spec.podTemplate.priorityClassName",
        "spec.podTemplate.tolerations[0]",
    ]


def test_selectors_take_equality_and_presence_terms_only() -> None:
    selector = Selector.parse("a=1, b", "X")
    assert selector.matches({"a": "1", "b": ""})
    assert not selector.matches({"a": "2", "b": ""})
    assert not selector.matches({"a": "1"})
    assert not Selector.parse("", "X").matches({"a": "1"}), "empty matches nothing"
    for bad in ("a!=1", "=1", "a="):
        with pytest.raises(ConfigurationError, match="X"):
            Selector.parse(bad, "X")


def test_the_operators_environment_makes_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETASKS_WORKER_IMAGE", "registry.corp/worker:7")
    monkeypatch.setenv("KUBETASKS_WORKER_SERVICE_ACCOUNT", "workers")
    monkeypatch.setenv("KUBETASKS_POOL_IMAGES", "registry.corp/team/*, docker.io/app")
    monkeypatch.setenv("KUBETASKS_POOL_PRIORITY_CLASSES", "batch-low")
    monkeypatch.setenv("KUBETASKS_POOL_ALLOWED_NODE_TAINTS", "node.kubernetes.io/unreachable")
    monkeypatch.setenv("KUBETASKS_POOL_ENV_SECRETS", "shared-*")
    monkeypatch.delenv("KUBETASKS_POOL_SERVICE_ACCOUNT_SELECTOR", raising=False)
    policy = WorkloadDefaults().policy()
    assert policy.worker_image == "registry.corp/worker:7"
    assert policy.worker_service_account == "workers"
    assert policy.images == ("registry.corp/team/*", "docker.io/app")
    assert policy.priority_classes == ("batch-low",)
    assert policy.allowed_node_taints == ("node.kubernetes.io/unreachable",)
    assert policy.env_secrets == ("shared-*",)
    assert str(policy.service_account_selector) == "kubetasks.dev/worker=true", "the default"
    monkeypatch.setenv("KUBETASKS_POOL_SERVICE_ACCOUNT_SELECTOR", "a!=b")
    with pytest.raises(ConfigurationError, match="KUBETASKS_POOL_SERVICE_ACCOUNT_SELECTOR"):
        WorkloadDefaults().policy()
