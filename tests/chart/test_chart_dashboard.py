"""The optional dashboard component: off by default; when on, a Deployment running
``kubetasks dashboard`` with its own ServiceAccount whose rights are exactly the reviews and
the reads it shows (plus patching Queues, for pause and resume), and the bundled Redis lets
it in. The values schema refuses what the templates could not render."""

from __future__ import annotations

import pytest
from chart_helpers import RELEASE, grants, helm, render, template_args

FULL = f"{RELEASE}-kubetasks"
ON = ["dashboard.enabled=true"]


def test_off_by_default() -> None:
    default = render()
    assert not [d for d in default.docs if "dashboard" in d["metadata"]["name"]]


def test_on_it_serves_with_its_own_least_privilege_account() -> None:
    r = render(sets=ON)
    deployment = r.one("Deployment", f"{FULL}-dashboard")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"{FULL}-dashboard"
    (container,) = pod["containers"]
    assert container["args"][:2] == ["dashboard", "--listen=0.0.0.0:8080"]
    assert {e["name"] for e in container["env"]} >= {
        "KUBETASKS_REDIS_URL",
        "KUBETASKS_REDIS_PASSWORD",
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert r.one("ServiceAccount", f"{FULL}-dashboard")
    service = r.one("Service", f"{FULL}-dashboard")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http",
                                         "protocol": "TCP"}]  # fmt: skip

    role = r.one("ClusterRole", f"{FULL}-dashboard")
    assert grants(role) == {
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
        *{("kubetasks.dev", res, verb) for res in ("tasks", "workerpools", "periodictasks",
                                                    "queues") for verb in ("get", "list")},
        ("kubetasks.dev", "queues", "patch"),
        ("", "pods", "list"),
    }  # fmt: skip
    binding = r.one("ClusterRoleBinding", f"{FULL}-dashboard")
    assert binding["roleRef"]["name"] == f"{FULL}-dashboard"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{FULL}-dashboard", "namespace": "kubetasks"}
    ]
    redis_policy = r.one("NetworkPolicy", f"{FULL}-redis")
    sources = redis_policy["spec"]["ingress"][0]["from"]
    assert any(
        s.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        == "dashboard"
        for s in sources
    ), sources


@pytest.mark.parametrize(
    ("sets", "phrase"),
    [
        (["dashboard.port=0"], "/dashboard/port"),
        (["dashboard.enabled=yes"], "/dashboard/enabled"),
        (["dashboard.replicas=0"], "/dashboard/replicas"),
        (["dashboard.listen=1"], "/dashboard"),
    ],
)
def test_schema_refuses_bad_dashboard_values(sets: list[str], phrase: str) -> None:
    result = helm(*template_args(sets=sets))
    assert result.returncode != 0, sets
    assert phrase in result.stderr, result.stderr
