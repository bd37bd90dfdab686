"""Metrics in the chart: the worker pods' port and NetworkPolicy, the PodMonitor and the
operator's ServiceMonitor when the Prometheus Operator is there (or forced), and the Grafana
dashboard ConfigMap."""

from __future__ import annotations

import json

import pytest
from chart_helpers import CHART, NAMESPACE, RELEASE, operator_environ, render, workload_defaults

from kubetasks.controller.workloads import deployment

PROMETHEUS_API = ["--api-versions", "monitoring.coreos.com/v1/PodMonitor",
                  "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"]  # fmt: skip


def test_by_default_worker_pods_serve_metrics_and_admit_only_prometheus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = render()
    assert r.kinds("PodMonitor", "ServiceMonitor") == []  # no Prometheus Operator API
    assert [d for d in r.kinds("ConfigMap") if "dashboard" in d["metadata"]["name"]] == []
    policy = r.one("NetworkPolicy", f"{RELEASE}-kubetasks-workers")
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "kubetasks-worker"}}
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [
        {
            "ports": [{"port": "metrics", "protocol": "TCP"}],
            "from": [
                {
                    "namespaceSelector": {},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                }
            ],
        }
    ]
    # What the operator, with the chart's env, gives the default pool's Deployment.
    environ = operator_environ(r)
    assert environ["KUBETASKS_WORKER_METRICS_PORT"] == "9090"
    pool = r.one("WorkerPool")
    pool = pool | {"metadata": pool["metadata"] | {"uid": "u1"}}
    worker = deployment(pool, 1, workload_defaults(environ, monkeypatch))
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    assert container["args"][container["args"].index("--metrics-port") + 1] == "9090"


def test_a_policy_in_every_worker_namespace_and_none_when_turned_off() -> None:
    r = render(sets=["operator.watch.namespaces={team-a,team-b}", "workerPool.create=false"])
    policies = [d for d in r.kinds("NetworkPolicy") if d["metadata"]["name"].endswith("-workers")]
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["team-a", "team-b"]
    r = render(sets=["worker.metrics.networkPolicy.enabled=false"])
    assert f"{RELEASE}-kubetasks-workers" not in r.names("NetworkPolicy")
    # Metrics off: the workers admit nothing at all.
    r = render(sets=["worker.metrics.port=0"])
    assert r.one("NetworkPolicy", f"{RELEASE}-kubetasks-workers")["spec"]["ingress"] == []


def test_podmonitor_and_servicemonitor_when_the_prometheus_operator_is_there() -> None:
    r = render(extra=PROMETHEUS_API)
    monitor = r.one("PodMonitor", f"{RELEASE}-kubetasks-workers")
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"]["app.kubernetes.io/name"] == "kubetasks-worker"
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["relabelings"][0]["targetLabel"] == "pool"
    service_monitor = r.one("ServiceMonitor", f"{RELEASE}-kubetasks-operator")
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
    # Every namespace watched: every namespace scraped.
    r = render(sets=["operator.watch.allNamespaces=true"], extra=PROMETHEUS_API)
    assert r.one("PodMonitor")["spec"]["namespaceSelector"] == {"any": True}


def test_monitors_can_be_forced_on_or_off() -> None:
    forced = ["worker.metrics.podMonitor.enabled=true",
              "operator.metrics.serviceMonitor.enabled=true"]  # fmt: skip
    r = render(sets=forced)
    assert len(r.kinds("PodMonitor")) == 1 and len(r.kinds("ServiceMonitor")) == 1
    off = ["worker.metrics.podMonitor.enabled=false",
           "operator.metrics.serviceMonitor.enabled=false"]  # fmt: skip
    assert render(sets=off, extra=PROMETHEUS_API).kinds("PodMonitor", "ServiceMonitor") == []
    # No worker metrics port, nothing to scrape.
    assert render(sets=["worker.metrics.port=0"], extra=PROMETHEUS_API).kinds("PodMonitor") == []


def test_the_grafana_dashboard_configmap_carries_the_shipped_json() -> None:
    r = render(sets=["grafanaDashboard.enabled=true"])
    (config_map,) = [
        d for d in r.kinds("ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == NAMESPACE
    shipped = json.loads((CHART / "dashboards" / "kubetasks.json").read_text())
    assert json.loads(config_map["data"]["kubetasks.json"]) == shipped
    assert shipped["uid"] == "kubetasks" and len(shipped["panels"]) >= 10
    r = render(sets=["grafanaDashboard.enabled=true", "grafanaDashboard.namespace=monitoring"])
    (config_map,) = [
        d for d in r.kinds("ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
    ]
    assert config_map["metadata"]["namespace"] == "monitoring"
