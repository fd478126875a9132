"""The certificate material as one value, and its four files (pure: bytes in, bytes out).

=========  ==========================================================================================
``ca.crt``  the trust bundle: every CA a client must trust, concatenated PEM (one CA, or two during a
            CA rotation). This is what goes into the webhook's ``caBundle``.
``ca.key``  the private key of the CA that signs serving certificates (the newest CA of the bundle).
``tls.crt`` the serving certificate (leaf only).
``tls.key`` its private key.
=========  ==========================================================================================

The same names are used for files in a directory and for keys of the Kubernetes Secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509

from certs.authority import (
    KeyPair,
    bundle_pem,
    certificate_pem,
    key_pem,
    load_certificates,
    load_key,
    same_public_key,
)
from certs.errors import MaterialError
from certs.inspection import unique

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
KEY_FILES = frozenset({CA_KEY, TLS_KEY})


@dataclass(frozen=True)
class Material:
    """Trust bundle, signing CA (with key) and serving certificate (with key); any part may be absent."""

    bundle: tuple[x509.Certificate, ...] = ()
    authority: KeyPair | None = None
    serving: KeyPair | None = None


@dataclass(frozen=True)
class Decoded:
    """Material read from files, with a note for every file that had to be ignored."""

    material: Material
    notes: tuple[str, ...] = field(default=())


def to_files(material: Material) -> dict[str, bytes]:
    """The file contents for the parts that are present."""
    files: dict[str, bytes] = {}
    if material.bundle:
        files[CA_CERT] = bundle_pem(material.bundle)
    if material.authority is not None:
        files[CA_KEY] = key_pem(material.authority.key)
    if material.serving is not None:
        files[TLS_CERT] = certificate_pem(material.serving.certificate)
        files[TLS_KEY] = key_pem(material.serving.key)
    return files


def from_files(files: Mapping[str, bytes], *, lenient: bool) -> Decoded:
    """Read the material back; ``lenient`` turns unreadable or inconsistent files into notes (the part is
    then absent, and will be reissued), otherwise they raise :class:`MaterialError`.

    The signing CA is the certificate of the bundle whose public key matches ``ca.key``.
    """
    notes: list[str] = []

    def fail(message: str) -> None:
        if not lenient:
            raise MaterialError(message)
        notes.append(f"ignoring {message}")

    bundle: tuple[x509.Certificate, ...] = ()
    if files.get(CA_CERT):
        try:
            bundle = unique(load_certificates(files[CA_CERT], CA_CERT))
        except MaterialError as exc:
            fail(str(exc))

    authority: KeyPair | None = None
    if files.get(CA_KEY):
        try:
            key = load_key(files[CA_KEY], CA_KEY)
        except MaterialError as exc:
            fail(str(exc))
        else:
            matching = [ca for ca in bundle if same_public_key(ca, key)]
            if matching:
                newest = max(matching, key=lambda ca: ca.not_valid_after_utc)
                authority = KeyPair(newest, key)
            else:
                fail(f"{CA_KEY}: it matches no certificate of {CA_CERT}")

    serving: KeyPair | None = None
    if files.get(TLS_CERT) or files.get(TLS_KEY):
        try:
            certificate = load_certificates(files.get(TLS_CERT, b""), TLS_CERT)[0]
            key = load_key(files.get(TLS_KEY, b""), TLS_KEY)
        except MaterialError as exc:
            fail(str(exc))
        else:
            if same_public_key(certificate, key):
                serving = KeyPair(certificate, key)
            else:
                fail(f"{TLS_KEY}: it does not match {TLS_CERT}")
    return Decoded(Material(bundle, authority, serving), tuple(notes))
