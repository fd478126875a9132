"""Judge existing certificate material (pure): does the chain verify, do the SANs cover, is it expiring?

Chain and name checks use ``cryptography.x509.verification`` (RFC 5280 path validation with the web PKI
profile), so "valid" here means what a TLS client means, at the given instant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import verification

from certs.authority import KeyPair, parse_ip, same_public_key


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex: identifies a CA inside a bundle."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def serial_hex(certificate: x509.Certificate) -> str:
    return f"{certificate.serial_number:x}"


def san_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The DNS names, then the IP addresses, of the certificate's SubjectAlternativeName."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return (*dns, *ips)


def is_authority(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def expires_within(certificate: x509.Certificate, now: datetime, window: timedelta) -> bool:
    """True when the certificate's notAfter is at or before ``now + window``."""
    return certificate.not_valid_after_utc <= now + window


def is_expired(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_after_utc <= now


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key signed ``certificate`` (name chaining and signature)."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def unique(certificates: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """Drop repeated certificates (same fingerprint), keep the first occurrence's order."""
    seen: dict[str, x509.Certificate] = {}
    for certificate in certificates:
        seen.setdefault(fingerprint(certificate), certificate)
    return tuple(seen.values())


def authority_problem(authority: KeyPair, now: datetime, renew_before: timedelta) -> str | None:
    """Why this CA should not sign anything more, or None when it is fine."""
    certificate = authority.certificate
    if not is_authority(certificate):
        return "the CA certificate is not a CA (BasicConstraints ca=false)"
    if not same_public_key(certificate, authority.key):
        return "the CA key does not match the CA certificate"
    if certificate.not_valid_before_utc > now:
        return "the CA is not valid yet"
    if is_expired(certificate, now):
        return f"the CA expired at {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if expires_within(certificate, now, renew_before):
        expiry = certificate.not_valid_after_utc
        return f"the CA expires at {expiry:%Y-%m-%d %H:%M} UTC, within the renewal window"
    return None


def serving_problem(
    serving: KeyPair,
    bundle: Sequence[x509.Certificate],
    names: Sequence[str],
    now: datetime,
    renew_before: timedelta,
) -> str | None:
    """Why this serving certificate must be reissued, or None when a client would accept it for every name.

    Checks: the key matches the certificate, the chain verifies against ``bundle`` at ``now`` with
    serverAuth, every one of ``names`` is covered (hostname check as a TLS client does it), and it does not
    expire within ``renew_before``.
    """
    certificate = serving.certificate
    if not same_public_key(certificate, serving.key):
        return "tls.key does not match tls.crt"
    problem = chain_problem(certificate, bundle, names, now)
    if problem is not None:
        return problem
    if expires_within(certificate, now, renew_before):
        return (
            f"the serving certificate expires at {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, "
            "within the renewal window"
        )
    return None


def chain_problem(
    certificate: x509.Certificate, bundle: Sequence[x509.Certificate], names: Sequence[str], now: datetime
) -> str | None:
    """Why a TLS client trusting ``bundle`` would refuse ``certificate`` for one of ``names`` (default: its
    own SANs) at ``now``, or None."""
    authorities = [ca for ca in bundle if is_authority(ca)]
    if not authorities:
        return "the CA bundle holds no CA certificate"
    store = verification.Store(authorities)
    for name in names or san_names(certificate):
        ip = parse_ip(name)
        subject: verification.Subject = x509.IPAddress(ip) if ip is not None else x509.DNSName(name)
        verifier = verification.PolicyBuilder().store(store).time(now).build_server_verifier(subject)
        try:
            verifier.verify(certificate, [])
        except verification.VerificationError as exc:
            return f"the serving certificate does not verify for {name!r}: {exc}"
        except ValueError as exc:  # a name the verifier cannot parse
            return f"the serving certificate cannot be checked for {name!r}: {exc}"
    return None


def distrust_problem(
    served: x509.Certificate | None,
    trusted_now: Sequence[x509.Certificate],
    new_bundle: Sequence[x509.Certificate],
    now: datetime,
) -> str | None:
    """Why replacing the bundle ``trusted_now`` with ``new_bundle`` would make clients refuse the
    certificate the webhook serves at this moment (it chains to the first, not to the second), or None."""
    if served is None or is_expired(served, now):
        return None
    if issuer_in(served, trusted_now) is None or issuer_in(served, new_bundle) is not None:
        return None
    return (
        f"the webhook serves serial {serial_hex(served)} from a CA the new bundle does not trust; the "
        "apiserver would refuse it until every pod has loaded the new Secret"
    )


def issuer_in(certificate: x509.Certificate, bundle: Iterable[x509.Certificate]) -> x509.Certificate | None:
    """The CA of ``bundle`` that signed ``certificate``, if any."""
    return next((ca for ca in bundle if issued_by(certificate, ca)), None)
