"""Throwaway PKI for the e2e control plane: one CA, the apiserver's serving cert, client certs, SA keys.

Everything is written as PEM files into a directory the caller owns (a per-session temp dir); nothing here
is meant to outlive a test session. ECDSA P-256 for certificates (as envtest does), RSA for the
service-account signing key (kube-apiserver's default token signer accepts both; RSA is what kubeadm uses).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.authority import certificate_pem, issue_authority, key_pem, new_key

_VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class CertFiles:
    """A certificate and its private key on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA that can sign leaf certificates."""

    files: CertFiles
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, directory: Path) -> CertificateAuthority:
        """Create a self-signed CA with certs.authority; write ``ca.crt``/``ca.key`` into ``directory``."""
        authority = issue_authority(now=datetime.datetime.now(datetime.UTC), days=_VALIDITY.days)
        files = _write(directory, "ca", authority.certificate, authority.key)
        return cls(files=files, certificate=authority.certificate, private_key=authority.key)

    def issue(
        self,
        directory: Path,
        stem: str,
        *,
        common_name: str,
        organizations: tuple[str, ...] = (),
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
        server: bool = False,
        client: bool = False,
    ) -> CertFiles:
        """Issue a leaf certificate (server and/or client auth) and write ``<stem>.crt``/``<stem>.key``."""
        key = new_key()
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()),
                critical=False,
            )
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.private_key, hashes.SHA256())
        return _write(directory, stem, cert, key)


def write_service_account_keys(directory: Path) -> CertFiles:
    """Write the service-account token signing key (``sa.key``) and its public key (``sa.pub``).

    Returned as CertFiles with ``cert`` = the public key file (what ``--service-account-key-file`` takes).
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path = directory / "sa.key"
    pub_path = directory / "sa.pub"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return CertFiles(cert=pub_path, key=key_path)


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(certificate_pem(cert))
    key_path.write_bytes(key_pem(key))
    key_path.chmod(0o600)
    return CertFiles(cert=cert_path, key=key_path)
