"""Test certificates for servers on 127.0.0.1: the project's own issuance (certs.authority)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs.authority import KeyPair, certificate_pem, issue_authority, issue_serving, key_pem


@dataclass(frozen=True)
class Authority:
    pair: KeyPair

    @property
    def cert(self) -> x509.Certificate:
        return self.pair.certificate

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        return self.pair.key

    @property
    def cert_pem(self) -> bytes:
        return certificate_pem(self.cert)


@dataclass(frozen=True)
class ServingPair:
    cert_pem: bytes
    key_pem: bytes
    serial: int


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_authority(*, days: int = 1) -> Authority:
    """A fresh ECDSA P-256 CA (a new key each call, so two authorities never trust each other's certs),
    valid for ``days`` (its certificates never outlive it)."""
    return Authority(issue_authority(now=_now(), days=days))


def issue_serving_pair(ca: Authority, name: str = "webhook.test", *, days: int = 1) -> ServingPair:
    """A fresh key and certificate (random serial) for ``name``, localhost and 127.0.0.1, signed by ``ca``,
    valid for ``days``."""
    pair = issue_serving(ca.pair, [name, "localhost", "127.0.0.1"], now=_now(), days=days)
    return ServingPair(
        cert_pem=certificate_pem(pair.certificate),
        key_pem=key_pem(pair.key),
        serial=pair.certificate.serial_number,
    )
