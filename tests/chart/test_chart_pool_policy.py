"""The chart's ``poolPolicy`` values reach the operator as the policy it checks pools with:
rendered, handed to the operator's settings as its environment, and held to what a platform
team wrote. The chart's own default WorkerPool passes the default policy."""

from __future__ import annotations

from typing import Any

import pytest
from chart_helpers import Rendered, helm, render, template_args

from kubetasks import settings
from kubetasks.controller.poolpolicy import PoolPolicy, check
from kubetasks.controller.workloads import WorkloadDefaults


def operator_policy(r: Rendered, monkeypatch: pytest.MonkeyPatch) -> PoolPolicy:
    """The policy an operator started with the rendered environment builds."""
    for name in settings.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    for e in r.operator_container["env"]:
        if "value" in e:
            monkeypatch.setenv(e["name"], e["value"])
    return WorkloadDefaults().policy()


def pool(image: str | None = None, **template: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"queues": [{"name": "default"}], "podTemplate": template}
    return spec | ({"image": image} if image else {})


def test_the_default_policy_admits_the_charts_own_pool_and_little_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = render()
    policy = operator_policy(r, monkeypatch)
    (own,) = r.kinds("WorkerPool")
    assert check(own["spec"], policy, {}) == []
    assert str(policy.service_account_selector) == "kubetasks.dev/worker=true"
    token = [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "any", "key": "t"}}}]
    refused = pool(
        "docker.io/library/python:3",
        priorityClassName="system-node-critical",
        tolerations=[{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}],
        env=token,
    )
    assert [v.field for v in check(refused, policy, {})] == [
        "spec.image",
        "spec.podTemplate.priorityClassName",
        "spec.podTemplate.env[0].valueFrom.secretKeyRef.name",
        "spec.podTemplate.tolerations[0].key",
    ]


def test_the_operator_may_read_service_accounts_but_never_secrets_or_config_maps() -> None:
    """Env sources are allowed by name: nothing is read. (The one Secret right, creating a
    pool's Redis credentials, is create only: ``test_chart_render``.)"""
    for r in (render(), render(sets=["operator.watch.allNamespaces=true"])):
        rules = [rule for doc in r.kinds("Role", "ClusterRole") for rule in doc["rules"]
                 if doc["metadata"]["name"].endswith("-operator")]  # fmt: skip
        core = {(res, verb) for rule in rules if "" in rule["apiGroups"]
                for res in rule["resources"] for verb in rule["verbs"]}  # fmt: skip
        assert ("serviceaccounts", "get") in core
        assert {verb for res, verb in core if res == "secrets"} <= {"create"}
        assert {res for res, _ in core} & {"configmaps"} == set()
        assert {verb for res, verb in core if res == "serviceaccounts"} == {"get"}


def test_policy_values_widen_and_narrow_what_pools_may_ask_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sets = [
        "poolPolicy.images={registry.corp/team/*,docker.io/library/python}",
        "poolPolicy.priorityClasses={batch-low}",
        "poolPolicy.serviceAccounts={batch-*}",
        "poolPolicy.envSecrets={shared-token}",
        "poolPolicy.deniedAnnotations={sidecar.istio.io/*}",
        "poolPolicy.allowedNodeTaints={node.kubernetes.io/unreachable}",
        "poolPolicy.serviceAccountSelector=team=batch",
    ]
    policy = operator_policy(render(sets=sets), monkeypatch)
    token = [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "shared-token", "key": "t"}}}]
    admitted = pool(
        "registry.corp/team/worker:2",
        priorityClassName="batch-low",
        serviceAccountName="batch-7",
        env=token,
        tolerations=[{"key": "node.kubernetes.io/unreachable", "operator": "Exists"}],
    )
    assert check(admitted, policy, {}) == []
    assert check(pool("docker.io/library/python:3.12"), policy, {}) == []
    refused = pool(annotations={"sidecar.istio.io/inject": "false"})
    assert [v.field for v in check(refused, policy, {})] == [
        "spec.podTemplate.annotations['sidecar.istio.io/inject']"
    ]
    assert str(policy.service_account_selector) == "team=batch"


def test_a_selector_that_is_not_an_equality_selector_is_refused_by_the_schema() -> None:
    result = helm(*template_args(sets=["poolPolicy.serviceAccountSelector=a!=b"]))
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert "/poolPolicy/serviceAccountSelector" in result.stderr
