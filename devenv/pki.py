"""The certificates and keys a real API server needs, made on the spot for one local cluster.

kube-apiserver serves only TLS and authenticates clients; with RBAC on, the identity in the
client certificate decides what a client may do. So the local control plane gets its own CA,
a serving certificate valid for 127.0.0.1, the real node's address and the in-cluster names,
client certificates for the admin (group ``system:masters``), for kube-controller-manager (its
well-known user, which the bootstrap RBAC policy grants exactly what it needs) and for the API
server's calls to kubelets, and the key pair that signs service account tokens. A real node
(:mod:`devenv.node`) adds its components' identities with :meth:`Pki.ensure_node`.
Elliptic-curve keys keep generation instantaneous.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devenv.network import NODE_IP

_VALIDITY = datetime.timedelta(days=365)
_SERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# 10.0.0.1: the `kubernetes` Service's IP; NODE_IP: where the API server listens with a real node.
_SERVER_IPS = ("127.0.0.1", "::1", "10.0.0.1", NODE_IP)


@dataclass(frozen=True)
class ClientCert:
    """A client certificate and its key, as file paths (what kubeconfigs and clients take)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """The files of one cluster's PKI under ``directory``; :meth:`ensure` creates them."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving(self) -> ClientCert:
        """The API server's serving certificate (not a client certificate, same shape)."""
        return ClientCert(self.directory / "apiserver.crt", self.directory / "apiserver.key")

    @property
    def admin(self) -> ClientCert:
        """User ``kubetasks-admin`` in group ``system:masters``: allowed everything."""
        return ClientCert(self.directory / "admin.crt", self.directory / "admin.key")

    @property
    def controller_manager(self) -> ClientCert:
        """User ``system:kube-controller-manager``, bound by the bootstrap RBAC policy."""
        return ClientCert(self.directory / "kcm.crt", self.directory / "kcm.key")

    @property
    def kubelet_client(self) -> ClientCert:
        """What the API server shows kubelets (logs, exec): ``system:masters``, like kubeadm."""
        return ClientCert(
            self.directory / "apiserver-kubelet-client.crt",
            self.directory / "apiserver-kubelet-client.key",
        )

    @property
    def scheduler(self) -> ClientCert:
        """User ``system:kube-scheduler``, bound by the bootstrap RBAC policy."""
        return ClientCert(self.directory / "scheduler.crt", self.directory / "scheduler.key")

    @property
    def proxy(self) -> ClientCert:
        """User ``system:kube-proxy``, bound to ``system:node-proxier`` by the bootstrap policy."""
        return ClientCert(self.directory / "kube-proxy.crt", self.directory / "kube-proxy.key")

    @property
    def coredns(self) -> ClientCert:
        """User ``kubetasks:coredns``; :mod:`devenv.node` binds it a read-only role."""
        return ClientCert(self.directory / "coredns.crt", self.directory / "coredns.key")

    def node(self, node_name: str) -> ClientCert:
        """User ``system:node:<name>`` in ``system:nodes``: what the Node authorizer expects."""
        return ClientCert(
            self.directory / f"node-{node_name}.crt", self.directory / f"node-{node_name}.key"
        )

    def kubelet_serving(self, node_name: str) -> ClientCert:
        """The kubelet's serving certificate, for the node's name and address."""
        return ClientCert(
            self.directory / f"kubelet-{node_name}.crt",
            self.directory / f"kubelet-{node_name}.key",
        )

    @property
    def service_account_key(self) -> Path:
        """Private key that signs service account tokens (kube-controller-manager, apiserver)."""
        return self.directory / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        """Public key the API server verifies service account tokens with."""
        return self.directory / "sa.pub"

    def ensure(self) -> Pki:
        """Create the CA and every control-plane file that is missing (an older PKI gains the
        files added since, signed by its own CA)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.ca_cert.exists() and self.ca_key.exists()):
            self._make_ca()
        if not self.serving.key.exists():
            self._issue(self.serving, "kube-apiserver", server_names=_SERVER_NAMES,
                        server_ips=_SERVER_IPS)  # fmt: skip
        clients = [
            (self.admin, "kubetasks-admin", "system:masters"),
            (self.controller_manager, "system:kube-controller-manager", None),
            (self.kubelet_client, "kube-apiserver-kubelet-client", "system:masters"),
        ]
        for target, common_name, organization in clients:
            if not target.key.exists():
                self._issue(target, common_name, organization=organization)
        if not self.service_account_pub.exists():
            sa_key = ec.generate_private_key(ec.SECP256R1())
            _write_key(self.service_account_key, sa_key)
            self.service_account_pub.write_bytes(
                sa_key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        return self

    def ensure_node(self, node_name: str, node_ip: str) -> Pki:
        """The identities of one real node's components (kubelet, proxy, scheduler, DNS)."""
        self.ensure()
        clients = [
            (self.node(node_name), f"system:node:{node_name}", "system:nodes"),
            (self.scheduler, "system:kube-scheduler", None),
            (self.proxy, "system:kube-proxy", None),
            (self.coredns, "kubetasks:coredns", None),
        ]
        for target, common_name, organization in clients:
            if not target.key.exists():
                self._issue(target, common_name, organization=organization)
        serving = self.kubelet_serving(node_name)
        if not serving.key.exists():
            self._issue(serving, node_name, server_names=(node_name,), server_ips=(node_ip,))
        return self

    def _make_ca(self) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("kubetasks-dev-ca")
        ca = (
            _builder(ca_name, ca_name, ca_key.public_key(), _not_before())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(self.ca_key, ca_key)
        self.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def _issue(
        self,
        target: ClientCert,
        common_name: str,
        *,
        organization: str | None = None,
        server_names: tuple[str, ...] = (),
        server_ips: tuple[str, ...] = (),
    ) -> None:
        """A certificate signed by the CA: for serving when names or addresses are given,
        else for client authentication."""
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        server = bool(server_names or server_ips)
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _builder(_name(common_name, organization), ca.subject, key.public_key(), _not_before())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            names: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(target.key, key)
        target.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _not_before() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
