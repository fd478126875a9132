"""Issue the webhook's certificates with ``cryptography.x509`` builders (no IO, the clock is a parameter).

* CA: ECDSA P-256, self-signed, ``BasicConstraints(ca=True, path_length=0)`` critical, KeyUsage
  keyCertSign/cRLSign/digitalSignature critical, SubjectKeyIdentifier, AuthorityKeyIdentifier.
* Serving certificate: ECDSA P-256, ``BasicConstraints(ca=False)`` critical, KeyUsage digitalSignature
  critical, ExtendedKeyUsage serverAuth, SubjectAlternativeName (DNS names and IP addresses), SKI, AKI of
  the issuing CA. Its notAfter never goes past the CA's.
* Any other leaf (:func:`issue_leaf`): the same with the extended key usages asked for, e.g. clientAuth with
  the user as CN and its groups as O, as kube-apiserver reads a client certificate (the e2e tests' PKI).

Both are backdated by :data:`BACKDATE` so that a node whose clock runs a little behind still accepts them.
Serial numbers are random (:func:`x509.random_serial_number`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.errors import MaterialError

BACKDATE = timedelta(minutes=5)
DEFAULT_CA_DAYS = 3650
DEFAULT_SERVING_DAYS = 365
CA_NAME_PREFIX = "confidential-pods-ca"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key (a CA or a serving certificate)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def service_names(service: str, namespace: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The names a client may use for an in-cluster Service, then the extras (deduplicated, order kept).

    ``S``, ``S.N``, ``S.N.svc``, ``S.N.svc.cluster.local`` — the apiserver dials ``S.N.svc``.
    """
    names = [service, f"{service}.{namespace}", f"{service}.{namespace}.svc"]
    names.append(f"{service}.{namespace}.svc.cluster.local")
    names.extend(name.strip() for name in extra if name.strip())
    return tuple(dict.fromkeys(names))


def parse_ip(name: str) -> IPAddress | None:
    """The IP address a SAN string denotes, or None for a DNS name."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def general_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """SubjectAlternativeName entries: IPAddress for IP literals, DNSName otherwise."""
    result: list[x509.GeneralName] = []
    for name in names:
        ip = parse_ip(name)
        result.append(x509.IPAddress(ip) if ip is not None else x509.DNSName(name))
    return result


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def issue_authority(*, now: datetime, days: int = DEFAULT_CA_DAYS) -> KeyPair:
    """A fresh self-signed CA valid from ``now - BACKDATE`` for ``days`` days.

    The common name carries the issue time and the key identifier (``confidential-pods-ca@<unix>-<ski>``) so
    that two CAs in one bundle never share a subject.
    """
    if days < 1:
        raise MaterialError(f"a CA must be valid for at least 1 day, not {days}")
    key = new_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "confidential-pods"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"{CA_NAME_PREFIX}@{int(now.timestamp())}-{ski.digest.hex()[:8]}"
            ),
        ]
    )
    start = now - BACKDATE
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(certificate, key)


def issue_serving(
    authority: KeyPair, names: Sequence[str], *, now: datetime, days: int = DEFAULT_SERVING_DAYS
) -> KeyPair:
    """A serving certificate for ``names`` signed by ``authority``, valid from ``now - BACKDATE``.

    The common name is the first ``*.svc`` name (the one the apiserver dials), else the first DNS name;
    clients check only the SANs.
    """
    if not names:
        raise MaterialError("a serving certificate needs at least one name")
    if days < 1:
        raise MaterialError(f"a serving certificate must be valid for at least 1 day, not {days}")
    if authority.certificate.not_valid_after_utc <= now:
        raise MaterialError("the CA has expired: it cannot issue a serving certificate")
    dns_names = [name for name in names if parse_ip(name) is None]
    common_name = next((name for name in dns_names if name.endswith(".svc")), (dns_names or list(names))[0])
    return issue_leaf(
        authority, common_name=common_name, names=names, usages=(SERVER_AUTH,), now=now, days=days
    )


def issue_leaf(
    authority: KeyPair,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    names: Sequence[str] = (),
    usages: Sequence[x509.ObjectIdentifier],
    now: datetime,
    days: int,
) -> KeyPair:
    """A leaf certificate signed by ``authority`` with the extended key ``usages`` asked for.

    :func:`issue_serving` is the webhook's (``usages=(SERVER_AUTH,)``); a client certificate for the
    kube-apiserver carries the user as ``common_name`` and its groups as ``organizations`` with
    ``CLIENT_AUTH``. ``names`` become the SubjectAlternativeName (none: no such extension). Valid from
    ``now - BACKDATE`` for ``days`` days, never past the CA's notAfter.
    """
    if days < 1:
        raise MaterialError(f"a certificate must be valid for at least 1 day, not {days}")
    start = now - BACKDATE
    end = min(start + timedelta(days=days), authority.certificate.not_valid_after_utc)
    if end <= now:
        raise MaterialError("the CA has expired: it cannot issue a certificate")
    key = new_key()
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    subject += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, name) for name in organizations]
    ca_ski = authority.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names(names)), critical=False)
    certificate = (
        builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(authority.key, hashes.SHA256())
    )
    return KeyPair(certificate, key)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """digitalSignature, and for a CA keyCertSign and cRLSign."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


# --- PEM encoding ---------------------------------------------------------------------------------------


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def bundle_pem(certificates: Iterable[x509.Certificate]) -> bytes:
    """Concatenated PEM, the format of ``ca.crt`` and of a webhook's ``caBundle``."""
    return b"".join(certificate_pem(certificate) for certificate in certificates)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (what ``tls.key`` of a kubernetes.io/tls Secret holds)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_certificates(data: bytes, what: str) -> tuple[x509.Certificate, ...]:
    """All certificates of a PEM file; an empty or unparsable one is a :class:`MaterialError`."""
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise MaterialError(f"{what}: not a PEM certificate ({exc})") from exc


def load_key(data: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    """An unencrypted PEM private key; it must be an EC key (what we issue)."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise MaterialError(f"{what}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise MaterialError(f"{what}: expected an EC private key, found {type(key).__name__}")
    return key


def same_public_key(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    encoding, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return certificate.public_key().public_bytes(encoding, spki) == key.public_key().public_bytes(
        encoding, spki
    )
