"""The chart against a real API server (the local control plane, RBAC on).

- every documented variant, rendered for the test's namespace, passes server-side dry-run
  (`kubectl apply --server-side --dry-run=server`): the API server's own validation of every
  object, the CRD schemas included;
- `helm install`, `helm upgrade` and `helm uninstall` for real where the CRDs already exist:
  the default WorkerPool is an ordinary release resource, updated in place and removed on
  uninstall, and the generated Redis password survives the upgrade;
- on a fresh control plane with no CRDs, one `helm install` creates the CRDs and then the
  WorkerPool hook (the order the hook exists for), an upgrade recreates it with the new
  values, and uninstall keeps the CRDs;
- the RBAC the chart installs, probed as each service account with `kubectl auth can-i --as`
  and with real requests: what each account may do, and what it is refused, on the default
  values (the release namespace only), on a list of namespaces and on all namespaces. The
  table of probes is printed and is the assertion message, so a failure shows every answer.
"""

from __future__ import annotations

import base64
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import (
    CHART,
    VARIANTS,
    grants,
    helm,
    load_yaml_docs,
    rbac_wildcards,
    render,
)
from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from devenv.crds import apply_crds
from devenv.kubeapi import JsonApi
from fixtures.controlplane import Impersonate, Kubectl
from fixtures.kube import meta, obj, present
from kubetasks.vocabulary import API_VERSION, GROUP, VERSION

RBAC_API = "/apis/rbac.authorization.k8s.io/v1"
KUBETASKS_CRDS = ("periodictasks.kubetasks.dev", "queues.kubetasks.dev", "tasks.kubetasks.dev",
                  "tasksets.kubetasks.dev", "workerpools.kubetasks.dev")  # fmt: skip

# Stand-in for the Prometheus Operator's CRD, so that the ServiceMonitor of the observability
# variant can be dry-run. It checks apiVersion, kind and metadata only, not the spec.
SERVICEMONITOR_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


@pytest.fixture
def other_namespace(kube_api: k8s.ApiClient, namespace: str) -> Iterator[str]:
    core = k8s.CoreV1Api(kube_api)
    name = f"{namespace[:50]}-b"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def release_name() -> str:
    return f"kt{uuid.uuid4().hex[:6]}"


def dry_run(kubectl: Kubectl, docs: list[dict[str, Any]]) -> list[str]:
    result = kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server",
        "--field-manager=kubetasks-chart-test", "-f", "-",
        input=yaml.safe_dump_all(docs),
    )  # fmt: skip
    assert result.returncode == 0, f"server-side dry-run refused:\n{result.stderr}"
    lines = result.stdout.strip().splitlines()
    assert all(line.endswith("(server dry run)") for line in lines), result.stdout
    return lines


def install_crds(kube_api: k8s.ApiClient, tmp_path: Path, docs: list[dict[str, Any]]) -> None:
    """Create (for real) CRDs that objects of a dry-run need, as helm would create them first."""
    folder = tmp_path / "crds"
    folder.mkdir(exist_ok=True)
    for doc in docs:
        (folder / f"{doc['metadata']['name']}.yaml").write_text(yaml.safe_dump(doc))
    apply_crds(JsonApi(kube_api), folder)


def variant_sets(name: str, namespace: str, other: str) -> list[str]:
    # The variants' namespaces, moved to this test's namespaces.
    if name == "namespaced":
        return [f"operator.watch.namespaces={{{namespace},{other}}}"]
    if name == "all-namespaces":
        return [f"worker.extraNamespaces={{{other}}}"]
    return []


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_server_side_dry_run(
    name: str,
    kube_api: k8s.ApiClient,
    kubectl: Kubectl,
    namespace: str,
    other_namespace: str,
    tmp_path: Path,
) -> None:
    rendered = render(
        VARIANTS[name],
        sets=variant_sets(name, namespace, other_namespace),
        namespace=namespace,
        release=release_name(),
    )
    foreign = [
        d for d in rendered.kinds("CustomResourceDefinition")
        if d["metadata"]["name"] not in KUBETASKS_CRDS
    ]  # fmt: skip
    if rendered.kinds("ServiceMonitor"):
        foreign.append(yaml.safe_load(SERVICEMONITOR_CRD))
    if foreign:
        install_crds(kube_api, tmp_path, foreign)
    lines = dry_run(kubectl, rendered.docs)
    assert len(lines) == len(rendered.docs)


def _secret_password(kube_api: k8s.ApiClient, namespace: str, name: str) -> str:
    secret = k8s.CoreV1Api(kube_api).read_namespaced_secret(name, namespace)
    return base64.b64decode(present(secret.data)["password"]).decode()


def test_install_upgrade_uninstall(
    control_plane: ControlPlane, kube_api: k8s.ApiClient, namespace: str
) -> None:
    release = release_name()
    full = f"{release}-kubetasks"
    common = [str(CHART), "--namespace", namespace, "--set", "crds.install=false"]
    installed = helm("install", release, *common, kubeconfig=control_plane.kubeconfig)
    assert installed.returncode == 0, installed.stderr
    notes = installed.stdout
    assert f"rollout status deployment/{full}-operator" in notes
    assert "handler: kubetasks.echo" in notes
    assert "needs a running Docker engine" in notes
    assert f"watching namespaces {namespace}." in notes, "the default: the release namespace"

    apps = k8s.AppsV1Api(kube_api)
    operator = apps.read_namespaced_deployment(f"{full}-operator", namespace)
    spec = present(operator.spec)
    assert spec.replicas == 1 and present(spec.strategy).type == "Recreate"
    apps.read_namespaced_stateful_set(f"{full}-redis", namespace)
    custom = k8s.CustomObjectsApi(kube_api)
    pool = obj(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "workerpools",
                                                   "default"))  # fmt: skip
    assert pool["spec"]["maxReplicas"] == 10
    assert pool["spec"]["podTemplate"]["serviceAccountName"] == f"{full}-worker"
    uid = pool["metadata"]["uid"]
    password = _secret_password(kube_api, namespace, f"{full}-redis")
    assert len(password) == 32

    upgraded = helm(
        "upgrade", release, *common, "--set", "workerPool.maxReplicas=3",
        kubeconfig=control_plane.kubeconfig,
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    pool = obj(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "workerpools",
                                                   "default"))  # fmt: skip
    assert pool["spec"]["maxReplicas"] == 3, "upgrades apply changed values"
    assert pool["metadata"]["uid"] == uid, "updated in place: its worker Deployment stays"
    assert _secret_password(kube_api, namespace, f"{full}-redis") == password, (
        "the generated Redis password is kept across upgrades"
    )

    removed = helm("uninstall", release, "--namespace", namespace,
                   kubeconfig=control_plane.kubeconfig)  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    rbac = k8s.RbacAuthorizationV1Api(kube_api)
    with pytest.raises(k8s.ApiException) as gone:
        rbac.read_cluster_role(f"{full}-operator")
    assert gone.value.status == 404
    pools = obj(custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "workerpools"))
    assert pools["items"] == [], "uninstall removes the default WorkerPool"


@pytest.mark.controlplane
def test_fresh_cluster_install_creates_crds_then_the_pool(tmp_path: Path) -> None:
    # Its own control plane: the session's already has the CRDs, and this is about the first
    # install into a cluster that has none (Helm must create them before the WorkerPool hook).
    plane = ControlPlane(tmp_path / "fresh").start()
    try:
        kubeconfig = plane.kubeconfig
        args = [str(CHART), "--namespace", "kubetasks", "--create-namespace"]
        installed = helm("install", "kubetasks", *args, kubeconfig=kubeconfig)
        assert installed.returncode == 0, installed.stderr
        with plane.api_client() as api:
            ext = k8s.ApiextensionsV1Api(api)
            for name in KUBETASKS_CRDS:
                crd = ext.read_custom_resource_definition(name)
                annotations = present(meta(crd).annotations)
                assert annotations["meta.helm.sh/release-name"] == "kubetasks"
                crd_conditions = present(present(crd.status).conditions)
                conditions = {c.type: c.status for c in crd_conditions}
                assert conditions["Established"] == "True", name
            custom = k8s.CustomObjectsApi(api)

            def pool() -> dict[str, Any]:
                return obj(custom.get_namespaced_custom_object(
                    GROUP, VERSION, "kubetasks", "workerpools", "default"))  # fmt: skip

            first = pool()
            assert first["metadata"]["annotations"]["kubetasks.dev/helm-hook"] == "true"
            upgraded = helm("upgrade", "kubetasks", *args, "--set", "workerPool.maxReplicas=4",
                            kubeconfig=kubeconfig)  # fmt: skip
            assert upgraded.returncode == 0, upgraded.stderr
            # A hook-born pool is recreated by each upgrade, so changed values always apply.
            second = pool()
            assert second["spec"]["maxReplicas"] == 4
            assert second["metadata"]["uid"] != first["metadata"]["uid"]
            removed = helm("uninstall", "kubetasks", "--namespace", "kubetasks",
                           kubeconfig=kubeconfig)  # fmt: skip
            assert removed.returncode == 0, removed.stderr
            assert "kept due to the resource policy" in removed.stdout
            for name in KUBETASKS_CRDS:
                assert meta(ext.read_custom_resource_definition(name)).name == name
            # As the chart README says: Helm leaves hooks behind on uninstall.
            assert pool()["metadata"]["uid"] == second["metadata"]["uid"]
    finally:
        plane.stop()
        shutil.rmtree(tmp_path / "fresh", ignore_errors=True)


# -- RBAC by impersonation -------------------------------------------------------------------

Probe = tuple[str, str, str, bool]  # verb, resource, namespace ("" for cluster scope), allowed


def _review(api: k8s.ApiClient, verb: str, resource: str, ns: str) -> bool:
    """One SelfSubjectAccessReview as the impersonated account: what `kubectl auth can-i
    --as` sends, without starting a process per question."""
    kind, _, sub = resource.partition("/")
    name, _, group = kind.partition(".")
    attributes = k8s.V1ResourceAttributes(
        verb=verb, resource=name, group=group, subresource=sub or None, namespace=ns or None
    )
    review = k8s.V1SelfSubjectAccessReview(
        spec=k8s.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
    )
    answer = k8s.AuthorizationV1Api(api).create_self_subject_access_review(review)
    return bool(present(answer.status).allowed)


def _kubectl_can_i(kubectl: Kubectl, user: str, verb: str, resource: str, ns: str) -> bool:
    kind, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, kind, f"--as={user}"]
    args += ["-n", ns] if ns else []
    # `can-i VERB TYPE/NAME`: a subresource goes in its own flag, not after a slash.
    args += [f"--subresource={sub}"] if sub else []
    result = kubectl(*args)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i: {result.stderr}"
    return answer == "yes"


def can_i(
    impersonate: Impersonate, kubectl: Kubectl, sa: tuple[str, str], probes: list[Probe]
) -> tuple[list[str], list[str]]:
    """Ask the API server each probe as the service account ``sa`` (namespace, name);
    returns (table lines, mismatches). Every fifth probe is asked again through `kubectl auth
    can-i --as=system:serviceaccount:...`, which must give the same answer."""
    api = impersonate(*sa)
    user = f"system:serviceaccount:{sa[0]}:{sa[1]}"
    table, wrong = [], []
    for i, (verb, resource, ns, expected) in enumerate(probes):
        allowed = _review(api, verb, resource, ns)
        if i % 5 == 0:
            assert _kubectl_can_i(kubectl, user, verb, resource, ns) == allowed, (
                f"kubectl auth can-i disagrees on {verb} {resource} {ns}"
            )
        where = f"in {ns}" if ns else "cluster-wide"
        line = f"{'ALLOWED' if allowed else 'REFUSED'}  {verb} {resource} {where}"
        if allowed != expected:
            line += f"   <-- expected {'ALLOWED' if expected else 'REFUSED'}"
            wrong.append(line)
        table.append(line)
    return table, wrong


def install_for_rbac(
    control_plane: ControlPlane, namespace: str, *sets: str
) -> tuple[str, list[dict[str, Any]]]:
    release = release_name()
    args = ["install", release, str(CHART), "--namespace", namespace, "--set", "crds.install=false"]
    for item in sets:
        args += ["--set", item]
    result = helm(*args, kubeconfig=control_plane.kubeconfig)
    assert result.returncode == 0, result.stderr
    return release, load_yaml_docs(
        helm("get", "manifest", release, "--namespace", namespace,
             kubeconfig=control_plane.kubeconfig).stdout
    )  # fmt: skip


def uninstall(control_plane: ControlPlane, release: str, namespace: str) -> None:
    result = helm("uninstall", release, "--namespace", namespace,
                  kubeconfig=control_plane.kubeconfig)  # fmt: skip
    assert result.returncode == 0, result.stderr


def worker_probes(ns: str, other: str) -> list[Probe]:
    """A worker only patches the status of its namespace's Tasks; its work, args included,
    comes from Redis, so it has no reason to read a Task."""
    return [
        ("patch", "tasks.kubetasks.dev/status", ns, True),
        ("get", "tasks.kubetasks.dev", ns, False),
        ("list", "tasks.kubetasks.dev", ns, False),
        ("watch", "tasks.kubetasks.dev", ns, False),
        ("get", "tasks.kubetasks.dev/status", ns, False),
        ("update", "tasks.kubetasks.dev/status", ns, False),
        ("patch", "tasks.kubetasks.dev", ns, False),
        ("create", "tasks.kubetasks.dev", ns, False),
        ("delete", "tasks.kubetasks.dev", ns, False),
        ("get", "workerpools.kubetasks.dev", ns, False),
        ("patch", "periodictasks.kubetasks.dev", ns, False),
        ("get", "queues.kubetasks.dev", ns, False),
        ("get", "secrets", ns, False),
        ("list", "secrets", ns, False),
        ("get", "configmaps", ns, False),
        ("get", "pods", ns, False),
        ("create", "pods", ns, False),
        ("delete", "pods", ns, False),
        ("create", "deployments.apps", ns, False),
        ("create", "events", ns, False),
        ("get", "tasks.kubetasks.dev", other, False),
        ("patch", "tasks.kubetasks.dev/status", other, False),
        ("list", "namespaces", "", False),
    ]


def operator_probes(watched: list[str], outside: list[str]) -> list[Probe]:
    """What the operator may do in the namespaces it watches, nothing of it in the
    ``outside`` ones, and what it may never do anywhere."""
    probes: list[Probe] = []
    for where in watched:
        for resource in ("tasks", "periodictasks", "workerpools"):
            for verb in ("get", "list", "watch", "patch", "update"):
                probes.append((verb, f"{resource}.kubetasks.dev", where, True))
            probes.append(("patch", f"{resource}.kubetasks.dev/status", where, True))
            probes.append(("update", f"{resource}.kubetasks.dev/finalizers", where, True))
        probes += [
            ("create", "tasks.kubetasks.dev", where, True),
            ("delete", "tasks.kubetasks.dev", where, True),
            ("delete", "workerpools.kubetasks.dev", where, False),
            *[(verb, "queues.kubetasks.dev", where, True) for verb in ("get", "list", "watch")],
            ("patch", "queues.kubetasks.dev", where, False),
            ("patch", "queues.kubetasks.dev/status", where, True),
            ("create", "queues.kubetasks.dev", where, False),
            ("delete", "queues.kubetasks.dev", where, False),
            ("get", "deployments.apps", where, True),
            ("create", "deployments.apps", where, True),
            ("patch", "deployments.apps", where, True),
            ("update", "deployments.apps", where, False),
            ("delete", "deployments.apps", where, False),
            ("patch", "pods", where, True),
            ("list", "pods", where, True),
            ("watch", "pods", where, True),
            ("update", "pods", where, False),
            ("create", "events", where, True),
            ("create", "events.events.k8s.io", where, True),
            # Each pool's Redis credentials: created, and nothing else on any Secret.
            ("create", "secrets", where, True),
            ("get", "secrets", where, False),
            ("list", "secrets", where, False),
            ("watch", "secrets", where, False),
            ("update", "secrets", where, False),
            ("patch", "secrets", where, False),
            ("delete", "secrets", where, False),
            ("get", "configmaps", where, False),
            ("create", "pods", where, False),
            ("delete", "pods", where, False),
            ("create", "pods/exec", where, False),
            ("create", "serviceaccounts/token", where, False),
            ("create", "rolebindings.rbac.authorization.k8s.io", where, False),
        ]
    for where in outside:  # namespace-scoped install: nothing outside the watched ones
        probes += [
            ("get", "tasks.kubetasks.dev", where, False),
            ("patch", "tasks.kubetasks.dev", where, False),
            ("watch", "queues.kubetasks.dev", where, False),
            ("get", "deployments.apps", where, False),
            ("create", "deployments.apps", where, False),
            ("patch", "deployments.apps", where, False),
            ("list", "pods", where, False),
            ("patch", "pods", where, False),
            ("create", "events", where, False),
            ("create", "secrets", where, False),
        ]
    probes += [
        ("list", "namespaces", "", True),
        ("watch", "namespaces", "", True),
        ("create", "namespaces", "", False),
        ("delete", "namespaces", "", False),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", "", True),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", "", True),
        ("patch", "customresourcedefinitions.apiextensions.k8s.io", "", False),
        ("create", "clusterroles.rbac.authorization.k8s.io", "", False),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", False),
        ("list", "nodes", "", False),
        ("impersonate", "serviceaccounts", "", False),
        ("patch", "clusterkopfpeerings.kopf.dev", "", False),
    ]
    return probes


def report(title: str, table: list[str], wrong: list[str]) -> str:
    text = f"{title}\n  " + "\n  ".join(table)
    print(text)
    if wrong:
        text += "\nmismatches:\n  " + "\n  ".join(wrong)
    return text


def assert_no_live_wildcards(kube_api: k8s.ApiClient, manifest: list[dict[str, Any]]) -> None:
    rbac = JsonApi(kube_api)
    for doc in manifest:
        if doc["kind"] == "ClusterRole":
            live = rbac.get(
                f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{doc['metadata']['name']}"
            )
        elif doc["kind"] == "Role":
            meta = doc["metadata"]
            live = rbac.get(f"{RBAC_API}/namespaces/{meta['namespace']}/roles/{meta['name']}")
        else:
            continue
        assert not rbac_wildcards(live), rbac_wildcards(live)
        assert grants(live) == grants(doc), "the API server stores the rules as rendered"


def test_worker_account_may_only_patch_task_status(
    control_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    kubectl: Kubectl,
    impersonate: Impersonate,
    namespace: str,
    other_namespace: str,
) -> None:
    release, manifest = install_for_rbac(control_plane, namespace)
    try:
        sa = f"{release}-kubetasks-worker"
        user = f"system:serviceaccount:{namespace}:{sa}"
        probes = worker_probes(namespace, other_namespace)
        table, wrong = can_i(impersonate, kubectl, (namespace, sa), probes)
        assert not wrong, report(f"worker account {user}", table, wrong)
        report(f"worker account {user}", table, wrong)
        assert_no_live_wildcards(kube_api, manifest)

        # Real requests as the worker: status patch works, the rest is 403.
        custom = k8s.CustomObjectsApi(kube_api)
        task = {
            "apiVersion": API_VERSION,
            "kind": "Task",
            "metadata": {"name": "rbac-probe"},
            "spec": {"handler": "kubetasks.echo"},
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasks", task)
        as_worker = impersonate(namespace, sa)
        worker_custom = k8s.CustomObjectsApi(as_worker)
        patched = obj(worker_custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "tasks", "rbac-probe", {"status": {"worker": "probe"}}
        ))  # fmt: skip
        assert patched["status"]["worker"] == "probe"
        core = k8s.CoreV1Api(as_worker)
        calls: tuple[Callable[[], object], ...] = (
            lambda: worker_custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "tasks", "rbac-probe"),
            lambda: worker_custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "tasks"),
            lambda: core.list_namespaced_secret(namespace),
            lambda: core.create_namespaced_pod(namespace, k8s.V1Pod(
                metadata=k8s.V1ObjectMeta(name="nope"),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="c", image="x")]))),
            lambda: worker_custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, "tasks", "rbac-probe"),
            lambda: worker_custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "tasks", "rbac-probe", {"spec": {"cancel": True}}),
        )  # fmt: skip
        for call in calls:
            with pytest.raises(k8s.ApiException) as refused:
                call()
            assert refused.value.status == 403
    finally:
        uninstall(control_plane, release, namespace)


def test_operator_account_is_confined_to_the_release_namespace_by_default(
    control_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    kubectl: Kubectl,
    impersonate: Impersonate,
    namespace: str,
    other_namespace: str,
) -> None:
    release, manifest = install_for_rbac(control_plane, namespace)
    try:
        sa = f"{release}-kubetasks-operator"
        user = f"system:serviceaccount:{namespace}:{sa}"
        probes = operator_probes([namespace], outside=[other_namespace, "default"])
        table, wrong = can_i(impersonate, kubectl, (namespace, sa), probes)
        assert not wrong, report(f"operator account {user} (default values)", table, wrong)
        report(f"operator account {user} (default values)", table, wrong)
        assert_no_live_wildcards(kube_api, manifest)
        core = k8s.CoreV1Api(impersonate(namespace, sa))
        with pytest.raises(k8s.ApiException) as refused:
            core.read_namespaced_secret(f"{release}-kubetasks-redis", namespace)
        assert refused.value.status == 403, "the operator gets the password from its env only"
        # A real deletion-cost patch outside the release namespace is refused.
        with pytest.raises(k8s.ApiException) as refused:
            core.patch_namespaced_pod(
                "any", other_namespace,
                {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "1"}}},
            )  # fmt: skip
        assert refused.value.status == 403
        # No worker account outside the watched namespace.
        accounts = k8s.CoreV1Api(kube_api).list_namespaced_service_account(other_namespace)
        assert f"{release}-kubetasks-worker" not in {meta(a).name for a in accounts.items}
    finally:
        uninstall(control_plane, release, namespace)


def test_operator_account_has_what_it_uses_cluster_wide_when_asked(
    control_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    kubectl: Kubectl,
    impersonate: Impersonate,
    namespace: str,
    other_namespace: str,
) -> None:
    release, manifest = install_for_rbac(
        control_plane, namespace, "operator.watch.allNamespaces=true"
    )
    try:
        sa = f"{release}-kubetasks-operator"
        user = f"system:serviceaccount:{namespace}:{sa}"
        # "default" stands for any namespace: Deployment writes and the Pod patch reach it.
        probes = operator_probes([namespace, other_namespace, "default"], outside=[])
        table, wrong = can_i(impersonate, kubectl, (namespace, sa), probes)
        assert not wrong, report(f"operator account {user} (all namespaces)", table, wrong)
        report(f"operator account {user} (all namespaces)", table, wrong)
        assert_no_live_wildcards(kube_api, manifest)
        assert not [d for d in manifest if d["kind"] == "Role" and d["metadata"]["name"] == sa]
        core = k8s.CoreV1Api(impersonate(namespace, sa))
        with pytest.raises(k8s.ApiException) as refused:
            core.read_namespaced_secret(f"{release}-kubetasks-redis", namespace)
        assert refused.value.status == 403, "the operator gets the password from its env only"
        names = {meta(n).name for n in core.list_namespace().items}
        assert {namespace, other_namespace} <= names
    finally:
        uninstall(control_plane, release, namespace)


def test_operator_account_is_confined_to_watched_namespaces(
    control_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    kubectl: Kubectl,
    impersonate: Impersonate,
    namespace: str,
    other_namespace: str,
) -> None:
    release, manifest = install_for_rbac(
        control_plane, namespace, f"operator.watch.namespaces={{{namespace},{other_namespace}}}"
    )
    try:
        sa = f"{release}-kubetasks-operator"
        user = f"system:serviceaccount:{namespace}:{sa}"
        probes = operator_probes([namespace, other_namespace], outside=["default"])
        table, wrong = can_i(impersonate, kubectl, (namespace, sa), probes)
        assert not wrong, report(f"operator account {user} (namespaced)", table, wrong)
        report(f"operator account {user} (namespaced)", table, wrong)
        assert_no_live_wildcards(kube_api, manifest)
        # Every watched namespace gets the worker account, which works only there.
        worker = (other_namespace, f"{release}-kubetasks-worker")
        table, wrong = can_i(
            impersonate, kubectl, worker, worker_probes(other_namespace, namespace)
        )
        assert not wrong, report(f"worker account {worker}", table, wrong)
    finally:
        uninstall(control_plane, release, namespace)
