"""kubetasks' own API client authenticates the way users configure Kubernetes access.

Each test builds the configuration a user or a pod has (a kubeconfig file with a token, with
a ``tokenFile``, with client certificates, with an ``exec`` plugin; the in-cluster service
account files), lets :func:`kubetasks.k8s.api.load_configuration` read it, sends requests with
:class:`kubetasks.k8s.api.KubeApi` and asks the real API server who it saw
(SelfSubjectReview). Service account tokens come from the TokenRequest API, client
certificates from the CertificateSigningRequest API, as a cluster issues them.

The process kubelet and the operator fixtures authenticate with tokens and admin client
certificates too, but a request refused there was repaired later by the operator's resync, so
these tests pin down the identity itself.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s
from kubernetes.config import incluster_config

from devenv.controlplane import ControlPlane
from devenv.kubeapi import JsonApi
from kubetasks.errors import ConfigurationError
from kubetasks.k8s.api import ApiError, KubeApi, load_configuration

REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
EXEC_API = "client.authentication.k8s.io/v1"

WriteKubeconfig = Callable[..., Path]


# --- what the API server saw ---------------------------------------------------------------
async def whoami(api: KubeApi) -> str:
    review = await api.post(
        REVIEWS, {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    return str(review["status"]["userInfo"]["username"])


async def identity_of(configuration: k8s.Configuration) -> str:
    api = KubeApi(configuration)
    try:
        return await whoami(api)
    finally:
        await api.close()


# --- credentials as a cluster issues them ----------------------------------------------------
def service_account(kube_api: k8s.ApiClient, namespace: str, name: str) -> str:
    """Create service account ``name``; return the user name its tokens authenticate as."""
    JsonApi(kube_api).post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )
    return f"system:serviceaccount:{namespace}:{name}"


def token(kube_api: k8s.ApiClient, namespace: str, name: str) -> str:
    answer = JsonApi(kube_api).post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )
    return str(answer["status"]["token"])


def client_certificate(kube_api: k8s.ApiClient, user: str) -> tuple[bytes, bytes]:
    """A client certificate for ``user`` signed by the cluster (CSR, approved by admin):
    returns (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]))
        .sign(key, hashes.SHA256())
    )
    api = JsonApi(kube_api)
    name = f"{user}-{uuid.uuid4().hex[:6]}"
    path = f"/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}"
    csr = api.post(
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "request": base64.b64encode(
                    request.public_bytes(serialization.Encoding.PEM)
                ).decode(),
                "signerName": "kubernetes.io/kube-apiserver-client",
                "expirationSeconds": 600,
                "usages": ["client auth"],
            },
        },
    )
    csr["status"] = {
        "conditions": [
            {"type": "Approved", "status": "True", "reason": "Test", "message": "test user"}
        ]
    }
    api.put(f"{path}/approval", csr)
    try:
        deadline = time.monotonic() + 30
        while not (issued := api.get(path).get("status", {}).get("certificate")):
            assert time.monotonic() < deadline, "the CSR was approved but never signed"
            time.sleep(0.1)
    finally:
        api.delete(path)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return base64.b64decode(issued), key_pem


# --- configurations as users have them -------------------------------------------------------
@pytest.fixture
def outside_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


@pytest.fixture
def kubeconfig(
    control_plane: ControlPlane,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    outside_cluster: None,
) -> WriteKubeconfig:
    """``kubeconfig(user)`` writes a kubeconfig whose current context uses ``user`` (the
    ``users[].user`` mapping) for this control plane and points ``$KUBECONFIG`` at it."""

    def write(user: dict[str, Any]) -> Path:
        path = tmp_path / "kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "test",
                            "cluster": {
                                "server": control_plane.server,
                                "certificate-authority": str(control_plane.pki.ca_cert),
                            },
                        }
                    ],
                    "users": [{"name": "someone", "user": user}],
                    "contexts": [
                        {"name": "test", "context": {"cluster": "test", "user": "someone"}}
                    ],
                    "current-context": "test",
                }
            )
        )
        monkeypatch.setenv("KUBECONFIG", str(path))
        return path

    return write


async def test_a_token_in_a_kubeconfig(
    kube_api: k8s.ApiClient, namespace: str, kubeconfig: WriteKubeconfig
) -> None:
    user = service_account(kube_api, namespace, "reader")
    kubeconfig({"token": token(kube_api, namespace, "reader")})
    assert await identity_of(load_configuration()) == user


async def test_a_token_file_in_a_kubeconfig(
    kube_api: k8s.ApiClient, namespace: str, kubeconfig: WriteKubeconfig, tmp_path: Path
) -> None:
    user = service_account(kube_api, namespace, "reader")
    (tmp_path / "token").write_text(token(kube_api, namespace, "reader"))
    # Relative to the kubeconfig's directory, as kubectl reads it.
    kubeconfig({"tokenFile": "token"})
    assert await identity_of(load_configuration()) == user


async def test_a_token_grants_the_service_accounts_permissions(
    kube_api: k8s.ApiClient, namespace: str, kubeconfig: WriteKubeconfig
) -> None:
    """What the bug did to every pod: a request that only this service account may make."""
    service_account(kube_api, namespace, "lister")
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    JsonApi(kube_api).post(
        f"{rbac}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "list-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
    )
    JsonApi(kube_api).post(
        f"{rbac}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "list-configmaps"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "list-configmaps",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": namespace}],
        },
    )
    JsonApi(kube_api).post(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "listed"}},
    )
    kubeconfig({"token": token(kube_api, namespace, "lister")})
    api = KubeApi(load_configuration())
    try:
        listed = await api.get(f"/api/v1/namespaces/{namespace}/configmaps")
        assert "listed" in {item["metadata"]["name"] for item in listed["items"]}
        with pytest.raises(ApiError) as refused:
            await api.get("/api/v1/namespaces/default/configmaps")
        assert refused.value.status == 403
        assert f"system:serviceaccount:{namespace}:lister" in refused.value.message
    finally:
        await api.close()


@pytest.mark.parametrize("key", ["BearerToken", "authorization"])
async def test_a_configuration_built_by_hand(
    control_plane: ControlPlane, kube_api: k8s.ApiClient, namespace: str, key: str
) -> None:
    """A Configuration made in code, the token under the key the kubernetes client's own
    loaders use: ``BearerToken`` since 36.0.1, ``authorization`` before (and in its README)."""
    user = service_account(kube_api, namespace, "reader")
    configuration = k8s.Configuration(
        host=control_plane.server,
        api_key={key: token(kube_api, namespace, "reader")},
        api_key_prefix={key: "Bearer"},
    )
    configuration.ssl_ca_cert = str(control_plane.pki.ca_cert)
    assert await identity_of(configuration) == user


async def test_client_certificates_in_a_kubeconfig(
    kube_api: k8s.ApiClient, kubeconfig: WriteKubeconfig
) -> None:
    cert, key = client_certificate(kube_api, "cert-user")
    kubeconfig(
        {
            "client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode(),
        }
    )
    assert await identity_of(load_configuration()) == "cert-user"


# --- exec plugins ----------------------------------------------------------------------------
PLUGIN = """\
import json, pathlib, sys
status_file, runs_file = map(pathlib.Path, sys.argv[1:])
with runs_file.open("a") as runs:
    runs.write("run\\n")
status = json.loads(status_file.read_text())
print(json.dumps({"apiVersion": %r, "kind": "ExecCredential", "status": status}))
"""


class ExecPlugin:
    """A credential plugin (``users[].user.exec``) that prints the ExecCredential status
    written to :meth:`answer` and counts how often it ran."""

    def __init__(self, directory: Path) -> None:
        self.script = directory / "plugin.py"
        self.script.write_text(PLUGIN % EXEC_API)
        self.status_file = directory / "status.json"
        self.runs_file = directory / "runs"
        self.runs_file.write_text("")

    def answer(self, **status: object) -> None:
        self.status_file.write_text(json.dumps(status))

    @property
    def runs(self) -> int:
        return len(self.runs_file.read_text().splitlines())

    def user(self) -> dict[str, Any]:
        return {
            "exec": {
                "apiVersion": EXEC_API,
                "command": sys.executable,
                "args": [str(self.script), str(self.status_file), str(self.runs_file)],
                "interactiveMode": "Never",
            }
        }


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_an_exec_plugin_token_is_refreshed_when_it_expires(
    kube_api: k8s.ApiClient, namespace: str, kubeconfig: WriteKubeconfig, tmp_path: Path
) -> None:
    first = service_account(kube_api, namespace, "first")
    second = service_account(kube_api, namespace, "second")
    plugin = ExecPlugin(tmp_path)
    # The kubernetes client asks the plugin again 5 minutes before the credential expires:
    # this one is good for 5 seconds more.
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5, seconds=5)
    plugin.answer(token=token(kube_api, namespace, "first"), expirationTimestamp=rfc3339(soon))
    kubeconfig(plugin.user())
    api = KubeApi(load_configuration())
    try:
        assert [await whoami(api), await whoami(api)] == [first, first]
        assert plugin.runs == 1, "a credential that is still valid is used, not asked for again"

        later = soon + datetime.timedelta(hours=1)
        plugin.answer(
            token=token(kube_api, namespace, "second"), expirationTimestamp=rfc3339(later)
        )
        time.sleep(max(0.0, (soon - datetime.timedelta(minutes=5)).timestamp() - time.time()))
        assert [await whoami(api), await whoami(api)] == [second, second]
        assert plugin.runs == 2
    finally:
        await api.close()


async def test_an_exec_plugin_with_client_certificates(
    kube_api: k8s.ApiClient, kubeconfig: WriteKubeconfig, tmp_path: Path
) -> None:
    cert, key = client_certificate(kube_api, "exec-cert-user")
    plugin = ExecPlugin(tmp_path)
    plugin.answer(clientCertificateData=cert.decode(), clientKeyData=key.decode())
    kubeconfig(plugin.user())
    assert await identity_of(load_configuration()) == "exec-cert-user"


# --- in a pod ----------------------------------------------------------------------------------
@pytest.fixture
def pod_files(control_plane: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment and files the kubelet gives a pod: ``KUBERNETES_SERVICE_HOST`` and
    ``_PORT`` and the service account directory (the kubernetes client reads it from a fixed
    path, pointed here at ``tmp_path``). Returns the token file, not yet written."""
    address = urlsplit(control_plane.server)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", str(address.hostname))
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(address.port))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(control_plane.pki.ca_cert.read_bytes())
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    return account / "token"


def write_token(token_file: Path, value: str) -> None:
    """Write or replace the token at once, as the kubelet swaps its projected volume."""
    new = token_file.with_suffix(".new")
    new.write_text(value)
    os.replace(new, token_file)


async def test_in_cluster_service_account(
    kube_api: k8s.ApiClient, namespace: str, pod_files: Path
) -> None:
    user = service_account(kube_api, namespace, "worker")
    write_token(pod_files, token(kube_api, namespace, "worker"))
    assert await identity_of(load_configuration()) == user


@pytest.mark.timeout(180)
async def test_in_cluster_token_rotation_reaches_a_long_lived_client(
    kube_api: k8s.ApiClient, namespace: str, pod_files: Path
) -> None:
    """The kubelet rotates a pod's token in place; the kubernetes client re-reads the file
    once a minute. Every request of one long-lived KubeApi (one pooled session) goes out with
    the token read last: never anonymous, and the new identity within the minute."""
    first = service_account(kube_api, namespace, "first")
    second = service_account(kube_api, namespace, "second")
    write_token(pod_files, token(kube_api, namespace, "first"))
    api = KubeApi(load_configuration())
    try:
        loaded = time.monotonic()
        seen = [await whoami(api)]
        assert seen == [first]
        write_token(pod_files, token(kube_api, namespace, "second"))
        while seen[-1] != second and time.monotonic() - loaded < 75:
            time.sleep(1)
            seen.append(await whoami(api))
        assert set(seen) == {first, second}, seen
        assert seen[-1] == second, "the rotated token was not used within 75 s"
        assert await whoami(api) == second
    finally:
        await api.close()


# --- without credentials ------------------------------------------------------------------------
async def test_no_credentials_are_named_in_the_error(
    kube_api: k8s.ApiClient, namespace: str, kubeconfig: WriteKubeconfig
) -> None:
    """A kubeconfig user without credentials: the request goes out anonymous (kubectl proxy
    and anonymous discovery are legitimate), and the refusal says that nothing was sent."""
    kubeconfig({})
    api = KubeApi(load_configuration())
    try:
        with pytest.raises(ApiError) as refused:
            await api.get(f"/api/v1/namespaces/{namespace}/configmaps")
        assert refused.value.status in (401, 403)
        assert "without credentials" in str(refused.value)
    finally:
        await api.close()


def test_a_credential_the_client_cannot_read_is_refused(control_plane: ControlPlane) -> None:
    """A token under a key the kubernetes client does not send (as a future version might
    store it): refused at start-up instead of every request going out anonymous."""
    configuration = k8s.Configuration(host=control_plane.server, api_key={"Token": "secret"})
    with pytest.raises(ConfigurationError, match="Token"):
        KubeApi(configuration)
