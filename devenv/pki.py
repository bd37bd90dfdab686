"""The certificates and keys a real API server needs, made on the spot for one local cluster.

kube-apiserver serves only TLS and authenticates clients; with RBAC on, the identity in the
client certificate decides what a client may do. So the local control plane gets its own CA,
a serving certificate valid for 127.0.0.1 and the in-cluster names, client certificates for
the admin (group ``system:masters``) and for kube-controller-manager (its well-known user, which
the bootstrap RBAC policy grants exactly what it needs), and the key pair that signs service
account tokens. Elliptic-curve keys keep generation instantaneous.
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

_VALIDITY = datetime.timedelta(days=365)
_SERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
_SERVER_IPS = ("127.0.0.1", "::1", "10.0.0.1")  # 10.0.0.1: the `kubernetes` Service's IP


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
    def service_account_key(self) -> Path:
        """Private key that signs service account tokens (kube-controller-manager, apiserver)."""
        return self.directory / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        """Public key the API server verifies service account tokens with."""
        return self.directory / "sa.pub"

    def ensure(self) -> Pki:
        """Create every file unless the CA already exists (then all of them do)."""
        if self.ca_cert.exists() and self.admin.key.exists():
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("kubetasks-dev-ca")
        ca = (
            _builder(ca_name, ca_name, ca_key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(self.ca_key, ca_key)
        self.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

        def issue(
            target: ClientCert,
            common_name: str,
            *,
            organization: str | None = None,
            server: bool = False,
        ) -> None:
            key = ec.generate_private_key(ec.SECP256R1())
            usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
            builder = (
                _builder(_name(common_name, organization), ca_name, key.public_key(), now)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_key_usage(cert_sign=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                    critical=False,
                )
            )
            if server:
                names: list[x509.GeneralName] = [x509.DNSName(n) for n in _SERVER_NAMES]
                names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in _SERVER_IPS]
                builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            cert = builder.sign(ca_key, hashes.SHA256())
            _write_key(target.key, key)
            target.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

        issue(self.serving, "kube-apiserver", server=True)
        issue(self.admin, "kubetasks-admin", organization="system:masters")
        issue(self.controller_manager, "system:kube-controller-manager")

        sa_key = ec.generate_private_key(ec.SECP256R1())
        _write_key(self.service_account_key, sa_key)
        self.service_account_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return self


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
