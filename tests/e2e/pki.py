"""Throwaway PKI for the e2e control plane: one CA, the apiserver's serving cert, client certs, SA keys.

The certificates are the project's own (:mod:`certs.authority`: ECDSA P-256, as envtest uses); this module
only writes them as PEM files into a directory the caller owns (a per-session temp dir), valid for a day.
The service-account signing key is RSA (kube-apiserver's default token signer accepts both; RSA is what
kubeadm uses).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from certs.authority import (
    CLIENT_AUTH,
    SERVER_AUTH,
    KeyPair,
    certificate_pem,
    issue_authority,
    issue_leaf,
    key_pem,
)

_VALIDITY_DAYS = 1


@dataclass(frozen=True)
class CertFiles:
    """A certificate and its private key on disk."""

    cert: Path
    key: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA that can sign leaf certificates."""

    files: CertFiles
    pair: KeyPair

    @property
    def certificate(self) -> x509.Certificate:
        return self.pair.certificate

    @classmethod
    def create(cls, directory: Path) -> CertificateAuthority:
        """Create a self-signed CA with certs.authority; write ``ca.crt``/``ca.key`` into ``directory``."""
        pair = issue_authority(now=_now(), days=_VALIDITY_DAYS)
        return cls(files=_write(directory, "ca", pair), pair=pair)

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
        usages = [usage for usage, wanted in ((SERVER_AUTH, server), (CLIENT_AUTH, client)) if wanted]
        pair = issue_leaf(
            self.pair,
            common_name=common_name,
            organizations=organizations,
            names=(*dns_names, *ip_addresses),
            usages=usages,
            now=_now(),
            days=_VALIDITY_DAYS,
        )
        return _write(directory, stem, pair)


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


def _write(directory: Path, stem: str, pair: KeyPair) -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(certificate_pem(pair.certificate))
    key_path.write_bytes(key_pem(pair.key))
    key_path.chmod(0o600)
    return CertFiles(cert=cert_path, key=key_path)
