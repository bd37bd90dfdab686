"""The chart rendered by the real helm, default values and every documented variant.

Each rendering is parsed and held to what the chart promises: restricted pod security on every
pod, no wildcard in any RBAC rule, one operator replica (Recreate) unless peering says
otherwise, and the wiring a user relies on (Redis URL and password, watch scope, worker
account). Variants live in charts/kubetasks/ci/ and are described there.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chart_helpers import (
    CHART,
    NAMESPACE,
    POD_KINDS,
    RBAC_KINDS,
    RELEASE,
    VARIANTS,
    Rendered,
    env_of,
    grants,
    helm,
    pod_security_problems,
    rbac_wildcards,
    render,
    template_args,
)

from devenv.binaries import KUBERNETES_VERSION
from kubetasks.vocabulary import API_VERSION, GROUP

FULL = f"{RELEASE}-kubetasks"
OPERATOR_SA = f"{FULL}-operator"
WORKER_SA = f"{FULL}-worker"
KUBETASKS_RESOURCES = ("tasks", "periodictasks", "workerpools", "tasksets")
NAMESPACED_KINDS = {
    "ServiceAccount", "Secret", "Service", "Deployment", "StatefulSet", "Role", "RoleBinding",
    "NetworkPolicy", "PodDisruptionBudget", "ServiceMonitor", "WorkerPool", "KopfPeering",
    "PodMonitor", "ConfigMap",
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> tuple[str, Rendered]:
    name: str = request.param
    return name, render(VARIANTS[name])


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_helm_lint_strict(name: str) -> None:
    args = ["lint", str(CHART), "--strict", "--namespace", NAMESPACE]
    args += ["--kube-version", KUBERNETES_VERSION]
    for path in VARIANTS[name]:
        args += ["--values", str(path)]
    result = helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_every_pod_meets_the_restricted_standard(variant: tuple[str, Rendered]) -> None:
    name, rendered = variant
    workloads = rendered.kinds(*POD_KINDS)
    assert workloads, f"{name}: no workloads rendered"
    problems = [p for doc in workloads for p in pod_security_problems(doc)]
    assert not problems, f"{name}:\n" + "\n".join(problems)


def test_no_rbac_rule_has_a_wildcard(variant: tuple[str, Rendered]) -> None:
    name, rendered = variant
    roles = rendered.kinds(*RBAC_KINDS)
    assert roles, f"{name}: no Roles or ClusterRoles rendered"
    found = [w for doc in roles for w in rbac_wildcards(doc)]
    assert not found, f"{name}:\n" + "\n".join(found)


def test_operator_is_one_replica_recreated(variant: tuple[str, Rendered]) -> None:
    name, rendered = variant
    # The dashboard (tests/chart/test_chart_dashboard.py) is the one other Deployment.
    deployments = [
        d for d in rendered.kinds("Deployment") if d["metadata"]["name"] != f"{FULL}-dashboard"
    ]
    assert [d["metadata"]["name"] for d in deployments] == [f"{FULL}-operator"], name
    spec = rendered.operator["spec"]
    assert spec["strategy"] == {"type": "Recreate"}
    expected = 2 if name == "peering" else 1  # peering-values.yaml: one active, one frozen
    assert spec["replicas"] == expected


def test_operator_probes_use_kopf_health_endpoint(variant: tuple[str, Rendered]) -> None:
    _, rendered = variant
    c = rendered.operator_container
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9090, "health": 8080}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert "--health-port=8080" in c["args"] and "--metrics-port=9090" in c["args"]


def test_namespaced_resources_name_their_namespace(variant: tuple[str, Rendered]) -> None:
    name, rendered = variant
    missing = [
        f"{d['kind']}/{d['metadata']['name']}"
        for d in rendered.docs
        if d["kind"] in NAMESPACED_KINDS and not d["metadata"].get("namespace")
    ]
    assert not missing, f"{name}: no namespace on {missing}"
    for doc in rendered.docs:
        labels = doc["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/instance") == RELEASE, doc["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm"


# -- default values -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def default() -> Rendered:
    return render()


def _operator_role_grants_are_what_it_uses(got: set[tuple[str, str, str]]) -> None:
    """The operator's rules on namespaced resources, wherever they are granted."""
    for resource in KUBETASKS_RESOURCES:
        for verb in ("get", "list", "watch", "patch", "update"):
            assert (GROUP, resource, verb) in got
        assert (GROUP, f"{resource}/status", "patch") in got
    assert (GROUP, "tasks", "create") in got
    assert (GROUP, "tasks", "delete") in got
    assert (GROUP, "tasksets", "delete") in got
    assert {g[2] for g in got if g[:2] == (GROUP, "queues")} == {
        "get",
        "list",
        "watch",
    }, "Queues are the user's: the operator reads them and writes only their status"
    assert {g[2] for g in got if g[:2] == (GROUP, "queues/status")} == {"patch"}
    # Server-side apply and a read back; the garbage collector deletes them with the pool.
    assert {g[2] for g in got if g[:2] == ("apps", "deployments")} == {"get", "create", "patch"}
    # Watched for vanished workers; patched for the deletion cost, nothing else.
    assert {g[2] for g in got if g[:2] == ("", "pods")} == {"get", "list", "watch", "patch"}
    # Each pool's Redis credentials: created, never read, changed or deleted.
    assert {g[2] for g in got if g[1] == "secrets"} == {"create"}
    # Nothing the operator does not use.
    assert not {g for g in got if g[1] in ("configmaps", "nodes")}
    assert not {g for g in got if g[0] == "kopf.dev"}, "standalone needs no peering rights"


KOPF_CLUSTER_RULES = {
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}


def test_default_watches_only_the_release_namespace_with_a_role(default: Rendered) -> None:
    args = default.operator_container["args"]
    assert args[0] == "operator"
    assert f"--namespace={NAMESPACE}" in args and "--standalone" in args
    assert "--all-namespaces" not in args
    assert len([a for a in args if a.startswith("--namespace")]) == 1
    cluster = grants(default.one("ClusterRole", f"{FULL}-operator"))
    assert cluster == KOPF_CLUSTER_RULES, "only kopf's cluster-scoped needs are cluster-wide"
    roles = [r for r in default.kinds("Role") if r["metadata"]["name"] == f"{FULL}-operator"]
    assert [r["metadata"]["namespace"] for r in roles] == [NAMESPACE]
    _operator_role_grants_are_what_it_uses(grants(roles[0]))
    binding = default.one("RoleBinding", f"{FULL}-operator")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": NAMESPACE}
    ]


def test_all_namespaces_is_one_cluster_role() -> None:
    r = _variant("all-namespaces")
    args = r.operator_container["args"]
    assert "--all-namespaces" in args
    assert not [a for a in args if a.startswith("--namespace")]
    got = grants(r.one("ClusterRole", f"{FULL}-operator"))
    assert got >= KOPF_CLUSTER_RULES
    _operator_role_grants_are_what_it_uses(got - KOPF_CLUSTER_RULES)
    binding = r.one("ClusterRoleBinding", f"{FULL}-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": NAMESPACE}
    ]
    assert not [d for d in r.kinds("Role") if d["metadata"]["name"] == f"{FULL}-operator"]
    # Worker accounts: the release namespace and the extra ones, as the variant lists.
    worker_ns = sorted(
        d["metadata"]["namespace"]
        for d in r.kinds("ServiceAccount")
        if d["metadata"]["name"] == WORKER_SA
    )
    assert worker_ns == ["kubetasks", "team-a"]
    peering = render(VARIANTS["all-namespaces"], sets=["operator.peering.name=kt"])
    peering.one("ClusterKopfPeering", "kt")
    assert not peering.kinds("KopfPeering")
    got = grants(peering.one("ClusterRole", f"{FULL}-operator"))
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in got
    assert ("kopf.dev", "kopfpeerings", "patch") not in got


def test_default_wires_bundled_redis_with_its_password(default: Rendered) -> None:
    env = env_of(default.operator_container)
    assert env["KUBETASKS_REDIS_URL"] == f"redis://{FULL}-redis.{NAMESPACE}.svc:6379/0"
    ref = {"secretKeyRef": {"name": f"{FULL}-redis", "key": "password"}}
    assert env["KUBETASKS_REDIS_PASSWORD"] == ref
    assert env["KUBETASKS_WORKER_IMAGE"] == "kubetasks/worker:0.1.0"
    assert env["KUBETASKS_WORKER_SERVICE_ACCOUNT"] == WORKER_SA
    # The operator logs in as the bundled Redis's one full-rights user and gives each pool
    # its own user; the worker pods get no reference to the operator's password.
    assert env["KUBETASKS_REDIS_USERNAME"] == "kubetasks"
    assert env["KUBETASKS_POOL_REDIS_USERS"] == "true"
    assert "KUBETASKS_REDIS_SECRET" not in env
    secret = default.one("Secret", f"{FULL}-redis")
    assert len(secret["data"]["password"]) >= 40  # 32 random characters, base64
    sts = default.one("StatefulSet", f"{FULL}-redis")
    redis = sts["spec"]["template"]["spec"]["containers"][0]
    args = redis["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    # No default user: nobody connects without a user name and password.
    assert "--requirepass" not in args
    users = [args[i + 1 : i + 3] for i, a in enumerate(args) if a == "--user"]
    assert users == [["default", "off"], ["kubetasks", "on"]]
    assert args[args.index("kubetasks") + 2 :][:4] == [">$(REDIS_PASSWORD)", "~*", "&*", "+@all"]
    probe = redis["readinessProbe"]["exec"]["command"][-1]
    assert "redis-cli --user kubetasks" in probe
    assert redis["image"] == "redis:7.4-alpine"
    assert env_of(redis)["REDIS_PASSWORD"] == ref
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    service = default.one("Service", f"{FULL}-redis")
    assert service["spec"]["ports"][0]["port"] == 6379


def test_two_renderings_generate_independent_passwords() -> None:
    # Without a cluster to look the Secret up in, each install gets a fresh random password
    # (on upgrade, lookup keeps the old one: tests/chart/test_chart_cluster.py checks that).
    a, b = render(), render()
    key = f"{FULL}-redis"
    assert a.one("Secret", key)["data"] != b.one("Secret", key)["data"]


def test_default_worker_account_patches_task_status_only(default: Rendered) -> None:
    # What kubetasks.k8s.status.TaskStatusWriter sends, and all a worker sends to the API.
    default.one("ServiceAccount", WORKER_SA)
    role = default.one("Role", f"{FULL}-worker")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert grants(role) == {(GROUP, "tasks/status", "patch")}
    binding = default.one("RoleBinding", f"{FULL}-worker")
    assert binding["roleRef"]["name"] == f"{FULL}-worker"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": WORKER_SA, "namespace": NAMESPACE}
    ]


def test_default_worker_pool_is_a_hook_only_when_its_crd_comes_with_the_release(
    default: Rendered,
) -> None:
    # helm template knows no cluster: as on a first install, the WorkerPool waits for its CRD.
    pool = default.one("WorkerPool", "default")
    annotations = pool["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert annotations["kubetasks.dev/helm-hook"] == "true"
    # A cluster that serves WorkerPools already: an ordinary release resource.
    served = render(extra=["--api-versions", f"{API_VERSION}/WorkerPool"])
    annotations = served.one("WorkerPool", "default")["metadata"]["annotations"]
    assert annotations == {"kubetasks.dev/helm-hook": "false"}
    spec = pool["spec"]
    assert spec["queues"] == [{"name": "default", "weight": 1}]
    assert spec["image"] == "kubetasks/worker:0.1.0"
    assert spec["imports"] == ["example_handlers"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (0, 10)
    # The operator adds the Redis settings to every pool's pods; the pool carries none.
    assert spec["podTemplate"] == {
        "serviceAccountName": WORKER_SA,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"memory": "512Mi"}},
    }  # fmt: skip
    extra = render(sets=["workerPool.extraEnv[0].name=FEATURE", "workerPool.extraEnv[0].value=on"])
    assert extra.one("WorkerPool")["spec"]["podTemplate"]["env"] == [
        {"name": "FEATURE", "value": "on"}
    ]


def test_default_optional_resources_are_off(default: Rendered) -> None:
    for kind in ("ServiceMonitor", "PodDisruptionBudget", "KopfPeering"):
        assert not default.kinds(kind), kind
    # Only the bundled Redis's NetworkPolicy (tests/chart/test_chart_redis.py) and the worker
    # pods' (tests/chart/test_chart_metrics.py) are on by default.
    assert default.names("NetworkPolicy") == [f"{FULL}-redis", f"{FULL}-workers"]
    assert not default.kinds("ClusterKopfPeering")
    assert default.names("Service") == [f"{FULL}-operator-metrics", f"{FULL}-redis"]


def test_default_renders_the_crds_and_keeps_them(default: Rendered) -> None:
    crds = default.kinds("CustomResourceDefinition")
    names = sorted(c["metadata"]["name"] for c in crds)
    assert names == [
        "periodictasks.kubetasks.dev",
        "queues.kubetasks.dev",
        "tasks.kubetasks.dev",
        "tasksets.kubetasks.dev",
        "workerpools.kubetasks.dev",
    ]
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    unkept = render(sets=["crds.keep=false"]).kinds("CustomResourceDefinition")
    assert len(unkept) == len(names)
    for crd in unkept:
        assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})


# -- variants -------------------------------------------------------------------------------


def _variant(name: str) -> Rendered:
    return render(VARIANTS[name])


def test_external_redis_with_tls_mounts_the_ca() -> None:
    r = _variant("external-redis-tls")
    for kind in ("StatefulSet", "Secret"):
        assert not r.kinds(kind), f"no bundled Redis {kind} with an external Redis"
    assert r.names("Service") == [f"{FULL}-operator-metrics"]
    c = r.operator_container
    env = env_of(c)
    ca = "/etc/kubetasks/redis-tls/ca.crt"
    url = f"rediss://redis.example.internal:6380/0?ssl_ca_certs={ca}"
    assert env["KUBETASKS_REDIS_URL"] == url
    assert env["KUBETASKS_REDIS_PASSWORD"] == {
        "secretKeyRef": {"name": "redis-auth", "key": "password"}
    }
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["redis-tls"] == {
        "name": "redis-tls",
        "mountPath": "/etc/kubetasks/redis-tls",
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in r.operator["spec"]["template"]["spec"]["volumes"]}
    assert volumes["redis-tls"]["secret"] == {
        "secretName": "redis-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    assert env["KUBETASKS_REDIS_CA_SECRET"] == "redis-ca"
    assert env["KUBETASKS_REDIS_CA_KEY"] == "ca.crt"


def test_external_redis_without_password_sets_none() -> None:
    r = render(sets=["redis.enabled=false", "redis.external.url=redis://redis.shared:6379/2",
                     "redis.poolUsers.enabled=false"])  # fmt: skip
    env = env_of(r.operator_container)
    assert env["KUBETASKS_REDIS_URL"] == "redis://redis.shared:6379/2"
    assert "KUBETASKS_REDIS_PASSWORD" not in env
    assert "KUBETASKS_REDIS_SECRET" not in env
    assert "KUBETASKS_REDIS_USERNAME" not in env
    assert "KUBETASKS_POOL_REDIS_USERS" not in env


def test_pool_users_without_a_password_is_refused_naming_the_values() -> None:
    external = ["redis.enabled=false", "redis.external.url=redis://redis.shared:6379/2"]
    result = helm(*template_args(sets=external))
    assert result.returncode != 0
    assert "redis.poolUsers.enabled needs a Redis password" in result.stderr
    assert "redis.external.existingSecret" in result.stderr


def test_external_redis_with_a_user_and_pool_users() -> None:
    r = render(sets=["redis.enabled=false", "redis.external.url=redis://redis.shared:6379/2",
                     "redis.external.existingSecret=redis-auth",
                     "redis.external.username=kubetasks-admin"])  # fmt: skip
    env = env_of(r.operator_container)
    assert env["KUBETASKS_REDIS_USERNAME"] == "kubetasks-admin"
    assert env["KUBETASKS_REDIS_PASSWORD"] == {
        "secretKeyRef": {"name": "redis-auth", "key": "password"}
    }
    assert env["KUBETASKS_POOL_REDIS_USERS"] == "true"


def test_without_pool_users_workers_get_the_shared_secret_by_reference() -> None:
    r = render(sets=["redis.poolUsers.enabled=false"])
    env = env_of(r.operator_container)
    assert env["KUBETASKS_REDIS_SECRET"] == f"{FULL}-redis"
    assert env["KUBETASKS_REDIS_SECRET_KEY"] == "password"
    assert "KUBETASKS_POOL_REDIS_USERS" not in env
    rules = [rule for doc in r.kinds("Role", "ClusterRole") for rule in doc["rules"]]
    assert not [rule for rule in rules if "secrets" in rule["resources"]]


def test_namespaced_watch_uses_roles_in_each_namespace() -> None:
    r = _variant("namespaced")
    args = r.operator_container["args"]
    assert "--namespace=kubetasks" in args and "--namespace=team-a" in args
    assert "--all-namespaces" not in args
    cluster = grants(r.one("ClusterRole", f"{FULL}-operator"))
    assert cluster == KOPF_CLUSTER_RULES, "only kopf's cluster-scoped needs stay cluster-wide"
    roles = [d for d in r.kinds("Role") if d["metadata"]["name"] == f"{FULL}-operator"]
    assert sorted(d["metadata"]["namespace"] for d in roles) == ["kubetasks", "team-a"]
    for role in roles:
        _operator_role_grants_are_what_it_uses(grants(role))
    bindings = [d for d in r.kinds("RoleBinding") if d["metadata"]["name"] == f"{FULL}-operator"]
    for binding in bindings:
        assert binding["subjects"][0] == {
            "kind": "ServiceAccount",
            "name": OPERATOR_SA,
            "namespace": NAMESPACE,
        }
    worker_ns = sorted(
        d["metadata"]["namespace"]
        for d in r.kinds("ServiceAccount")
        if d["metadata"]["name"] == WORKER_SA
    )
    assert worker_ns == ["kubetasks", "team-a"], "each watched namespace gets the worker account"
    extra = render(VARIANTS["namespaced"], sets=["worker.extraNamespaces={team-b}"])
    worker_roles = sorted(
        d["metadata"]["namespace"]
        for d in extra.kinds("Role")
        if d["metadata"]["name"] == f"{FULL}-worker"
    )
    assert worker_roles == ["kubetasks", "team-a", "team-b"]


def test_observability_variant_adds_monitor_pdb_and_network_policies() -> None:
    r = _variant("observability")
    monitor = r.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    pdb = r.one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    policy = r.one("NetworkPolicy", f"{FULL}-operator")
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["spec"]["egress"]
                    for p in rule["ports"]}  # fmt: skip
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP"), (6379, "TCP")} <= egress_ports
    redis_rule = next(e for e in policy["spec"]["egress"] if e["ports"][0]["port"] == 6379)
    assert redis_rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "redis"
    )
    metrics_rule = policy["spec"]["ingress"][1]
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    redis_policy = r.one("NetworkPolicy", f"{FULL}-redis")
    # Each source names the pods it admits (the operator, the workers), none admits every pod.
    assert all(p["podSelector"]["matchLabels"] for p in redis_policy["spec"]["ingress"][0]["from"])


def test_external_tls_network_policy_allows_the_url_port() -> None:
    r = render(VARIANTS["external-redis-tls"], sets=["operator.networkPolicy.enabled=true"])
    policy = r.one("NetworkPolicy", f"{FULL}-operator")
    redis_rule = policy["spec"]["egress"][2]
    assert redis_rule == {"ports": [{"port": 6380, "protocol": "TCP"}]}


def test_no_crds_variant_renders_none() -> None:
    r = _variant("no-crds")
    assert not r.kinds("CustomResourceDefinition")
    assert r.kinds("WorkerPool"), "the default pool does not depend on who installs the CRDs"


def test_no_workerpool_variant_renders_none() -> None:
    r = _variant("no-workerpool")
    assert not r.kinds("WorkerPool")
    assert r.one("ServiceAccount", WORKER_SA), "worker pods of user pools still need it"


def test_peering_variant_creates_the_peering_and_its_rights() -> None:
    r = _variant("peering")
    args = r.operator_container["args"]
    assert "--peering=kubetasks" in args and "--standalone" not in args
    assert env_of(r.operator_container)["KUBETASKS_PEERING_PRIORITY"] == "100"
    # The release namespace only (the default): a KopfPeering there, rights on it there.
    peering = r.one("KopfPeering", "kubetasks")
    assert peering["metadata"]["namespace"] == NAMESPACE
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert not r.kinds("ClusterKopfPeering")
    got = grants(r.one("Role", f"{FULL}-operator"))
    for verb in ("get", "list", "watch", "patch"):
        assert ("kopf.dev", "kopfpeerings", verb) in got
    cluster = grants(r.one("ClusterRole", f"{FULL}-operator"))
    assert not {g for g in cluster if g[0] == "kopf.dev"}
    crds = {c["metadata"]["name"]: c for c in r.kinds("CustomResourceDefinition")}
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"


def test_namespaced_peering_uses_kopfpeerings() -> None:
    r = render(
        VARIANTS["namespaced"],
        sets=["operator.peering.name=kt", "operator.peering.installCRDs=false"],
    )
    peerings = r.kinds("KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["kubetasks", "team-a"]
    assert not r.kinds("ClusterKopfPeering")
    assert "kopfpeerings.kopf.dev" not in r.names("CustomResourceDefinition")
    for role in r.kinds("Role"):
        if role["metadata"]["name"] == f"{FULL}-operator":
            assert ("kopf.dev", "kopfpeerings", "patch") in grants(role)


def test_no_persistence_uses_an_empty_dir_and_the_existing_secret() -> None:
    r = _variant("no-persistence")
    sts = r.one("StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    assert not r.kinds("Secret"), "an existing Secret is used, none generated"
    ref = env_of(r.operator_container)["KUBETASKS_REDIS_PASSWORD"]
    assert ref == {"secretKeyRef": {"name": "my-redis-password", "key": "password"}}


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "a" * 64
    r = render(sets=[f"operator.image.digest={digest}", f"worker.image.digest={digest}"])
    assert r.operator_container["image"] == f"kubetasks/operator@{digest}"
    assert env_of(r.operator_container)["KUBETASKS_WORKER_IMAGE"] == f"kubetasks/worker@{digest}"


def test_chart_versions_agree_with_the_package() -> None:
    import yaml

    import kubetasks

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == kubetasks.__version__
    assert values["operator"]["image"]["tag"] == chart["appVersion"]
    assert values["worker"]["image"]["tag"] == chart["appVersion"]


def test_variant_files_exist() -> None:
    expected = {"external-redis-tls", "namespaced", "all-namespaces", "hardened", "observability",
                "no-crds", "no-workerpool"}  # fmt: skip
    assert expected <= set(VARIANTS), sorted(VARIANTS)
    for paths in VARIANTS.values():
        for path in paths:
            assert Path(path).read_text().startswith("#"), f"{path} says what it is for"
