"""The bundled Redis as the chart renders it: who may connect, and a password that holds.

The NetworkPolicy admits the operator and the worker pods the operator creates (matched by
the labels ``controller/workloads.py`` really puts on them) and nobody else. The password is
generated once and kept by ``helm upgrade``; ``helm template`` cannot read it back, so under
GitOps the documented way is ``redis.auth.existingSecret``, and the default install says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, NAMESPACE, RELEASE, Rendered, helm, render, template_args

from kubetasks.controller.workloads import WorkloadDefaults, deployment

FULL = f"{RELEASE}-kubetasks"
EXISTING = ["redis.auth.existingSecret=redis-auth"]


def redis_peers(r: Rendered) -> list[dict[str, Any]]:
    policy = r.one("NetworkPolicy", f"{FULL}-redis")
    assert (
        policy["spec"]["podSelector"]["matchLabels"]
        == (r.one("StatefulSet", f"{FULL}-redis")["spec"]["selector"]["matchLabels"])
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    return list(rule["from"])


def admits(peer: dict[str, Any], namespace: str, labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy peer admits a pod with these labels in that namespace (the
    policy's own namespace is the release's)."""
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        in_namespace = namespace == NAMESPACE
    else:
        wanted = ns_selector.get("matchLabels") or {}
        in_namespace = all(labels_of_namespace(namespace).get(k) == v for k, v in wanted.items())
    pod_labels = (peer.get("podSelector") or {}).get("matchLabels") or {}
    return in_namespace and all(labels.get(k) == v for k, v in pod_labels.items())


def labels_of_namespace(name: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name}


def worker_pod_labels(namespace: str) -> dict[str, str]:
    """The labels of a worker pod the operator creates for a WorkerPool in ``namespace``."""
    pool = {
        "apiVersion": "kubetasks.dev/v1alpha1", "kind": "WorkerPool",
        "metadata": {"name": "workers", "namespace": namespace, "uid": "u-1"},
        "spec": {"queues": [{"name": "default"}]},
    }  # fmt: skip
    d = deployment(pool, 1, WorkloadDefaults(redis_url="redis://r"))
    return dict(d["spec"]["template"]["metadata"]["labels"])


def test_the_redis_network_policy_is_on_by_default_and_admits_operator_and_workers() -> None:
    r = render()
    peers = redis_peers(r)
    operator_labels = r.operator["spec"]["template"]["metadata"]["labels"]
    assert any(admits(p, NAMESPACE, operator_labels) for p in peers)
    assert any(admits(p, NAMESPACE, worker_pod_labels(NAMESPACE)) for p in peers)
    # Any other pod of the release namespace (a Task's user, a debugging shell) is refused.
    assert not any(admits(p, NAMESPACE, {"app": "shell"}) for p in peers)


def test_the_policy_admits_workers_of_the_watched_namespaces_only() -> None:
    r = render(sets=["operator.watch.namespaces={kubetasks,team-a}"])
    peers = redis_peers(r)
    for namespace in ("kubetasks", "team-a"):
        assert any(admits(p, namespace, worker_pod_labels(namespace)) for p in peers)
    assert not any(admits(p, "team-b", worker_pod_labels("team-b")) for p in peers)
    operator_labels = r.operator["spec"]["template"]["metadata"]["labels"]
    assert not any(admits(p, "team-a", operator_labels) for p in peers), (
        "the operator's labels admit it from the release namespace only"
    )


def test_extra_sources_and_turning_it_off() -> None:
    r = render(sets=["redis.networkPolicy.extraFrom[0].podSelector.matchLabels.app=debug"])
    assert any(admits(p, NAMESPACE, {"app": "debug"}) for p in redis_peers(r))
    assert f"{FULL}-redis" not in render(sets=["redis.networkPolicy.enabled=false"]).names(
        "NetworkPolicy"
    )


def test_with_an_existing_secret_two_renders_are_the_same() -> None:
    first, second = render(sets=EXISTING), render(sets=EXISTING)
    assert first.text == second.text
    assert not [s for s in first.kinds("Secret") if s["metadata"]["name"] == f"{FULL}-redis"]
    redis = first.one("StatefulSet", f"{FULL}-redis")["spec"]["template"]["spec"]
    refs = [e["valueFrom"]["secretKeyRef"] for e in redis["containers"][0]["env"]]
    assert refs == [{"name": "redis-auth", "key": "password"}] * 2
    env = {e["name"]: e for e in first.operator_container["env"]}
    assert env["KUBETASKS_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "redis-auth"
    shared = {e["name"]: e for e in render(sets=[*EXISTING, "redis.poolUsers.enabled=false"])
              .operator_container["env"]}  # fmt: skip
    assert shared["KUBETASKS_REDIS_SECRET"]["value"] == "redis-auth"


def test_without_one_each_template_render_makes_a_new_password() -> None:
    """Why the default install warns: what GitOps would apply changes on every render."""

    def password(r: Rendered) -> str:
        return str(r.one("Secret", f"{FULL}-redis")["data"]["password"])

    assert password(render()) != password(render())


def notes(tmp_path: Path, sets: list[str]) -> str:
    """NOTES.txt as ``helm install`` would print it. ``helm template`` renders no notes and
    ``helm install --dry-run`` needs a cluster, so a copy of the chart carries one more
    template that includes the notes in a ConfigMap."""
    chart = tmp_path / "kubetasks"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-probe\ndata:\n"
        '  notes: {{ include (print $.Template.BasePath "/NOTES.txt") . | toJson }}\n'
    )
    args = template_args(sets=sets, extra=["--show-only", "templates/notes-probe.yaml"])
    args[args.index(str(CHART))] = str(chart)
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    (doc,) = [d for d in yaml.safe_load_all(result.stdout) if d]
    return str(doc["data"]["notes"])


@pytest.mark.parametrize(
    ("sets", "warns"),
    [
        ([], True),
        (EXISTING, False),
        (
            [
                "redis.enabled=false",
                "redis.external.url=redis://r:6379/0",
                "redis.poolUsers.enabled=false",
            ],
            False,
        ),
    ],
)
def test_the_default_install_warns_about_helm_template(
    tmp_path: Path, sets: list[str], warns: bool
) -> None:
    text = notes(tmp_path, sets)
    assert ("redis.auth.existingSecret" in text) is warns, text
    assert ("`helm template`" in text) is warns
