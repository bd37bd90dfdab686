"""The chart's dashboard account is enough, and only that: the dashboard runs with the token
of the ServiceAccount the chart renders (its ClusterRole applied to the real API server), and
a user's every page and a pause through a Queue resource work, with no refusal in its log."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from chart_helpers import render
from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from fixtures.controlplane import Kubectl
from fixtures.dashboard import OPERATOR_RULES, UserToken, start_dashboard
from fixtures.kube import present
from kubetasks.client import AsyncClient
from kubetasks.vocabulary import API_VERSION, GROUP, QUEUES, VERSION


@pytest.fixture
def dashboard_account(
    kubectl: Kubectl, kube_api: k8s.ApiClient, namespace: str, control_plane: ControlPlane,
    tmp_path: Path,
) -> Iterator[Path]:  # fmt: skip
    """A kubeconfig holding a token of the chart's dashboard ServiceAccount."""
    release = f"d{uuid.uuid4().hex[:6]}"
    rendered = render(sets=["dashboard.enabled=true", "crds.install=false"], namespace=namespace,
                      release=release)  # fmt: skip
    docs = [
        d for d in rendered.docs
        if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
        and d["metadata"]["name"] == f"{release}-kubetasks-dashboard"
    ]  # fmt: skip
    assert sorted(d["kind"] for d in docs) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ServiceAccount",
    ]
    applied = kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    assert applied.returncode == 0, applied.stderr
    issued = k8s.CoreV1Api(kube_api).create_namespaced_service_account_token(
        f"{release}-kubetasks-dashboard", namespace,
        k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[])),
    )  # fmt: skip
    token = present(present(issued.status).token)
    kubeconfig = tmp_path / "dashboard.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": control_plane.admin.server,
                      "certificate-authority": str(control_plane.admin.ca_cert)}}],
        "users": [{"name": "d", "user": {"token": token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "d"}}],
    }))  # fmt: skip
    yield kubeconfig
    for doc in docs:
        if doc["kind"].startswith("Cluster"):
            kubectl("delete", doc["kind"], doc["metadata"]["name"], "--ignore-not-found")


async def test_the_charts_dashboard_account_serves_every_page_and_pauses_a_queue(
    dashboard_account: Path, control_plane: ControlPlane, kube_api: k8s.ApiClient,
    user_token: UserToken, redis_url: str, namespace: str, tmp_path: Path,
) -> None:  # fmt: skip
    client = AsyncClient(redis_url, namespace=namespace)
    await client.enqueue("kubetasks.echo", queue="q")
    await client.close()
    custom = k8s.CustomObjectsApi(kube_api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, QUEUES, {
        "apiVersion": API_VERSION, "kind": "Queue", "metadata": {"name": "q"}, "spec": {},
    })  # fmt: skip
    log = tmp_path / "dashboard.log"
    running = start_dashboard(control_plane, redis_url, log, kubeconfig=dashboard_account)
    try:
        bearer = {"Authorization": f"Bearer {user_token('oncall', OPERATOR_RULES)}"}
        async with aiohttp.ClientSession(headers=bearer) as s:
            for path in ("/", f"/queues/{namespace}/q", "/pools", "/periodic"):
                async with s.get(running.url + path) as r:
                    assert r.status == 200, (path, await r.text())
            async with s.get(running.url + "/") as r:
                assert f'data-queue="{namespace}/q"' in await r.text()
            async with s.get(f"{running.url}/queues/{namespace}/q") as r:
                page = await r.text()
            csrf = page.split('name="csrf" value="')[1].split('"')[0]
            async with s.post(
                f"{running.url}/queues/{namespace}/q/pause", data={"csrf": csrf},
                headers={"Origin": running.url}, allow_redirects=False,
            ) as r:  # fmt: skip
                assert r.status == 303, await r.text()
                assert "paused+through+the+Queue+resource" in r.headers["Location"]
        queue = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, QUEUES, "q")
        assert queue["spec"]["paused"] is True  # type: ignore[index]
        text = log.read_text()  # the sampler reads every queue and WorkerPool with it too
        assert "sample failed" not in text and "403" not in text and "Forbidden" not in text, text
    finally:
        running.process.stop()
