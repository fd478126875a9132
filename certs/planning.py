"""Decide what to (re)issue: ``generate`` (make the material valid), ``rotate`` (renew, no trust gap).

Pure: material and the current instant in, new material and human-readable notes out. Keys are generated
here (randomness), nothing is read or written.

Two-phase CA rotation (see docs/certificates.md):

1. The signing CA expires within the renewal window (or a rotation is asked for): a new CA is issued and
   *added* to the bundle, which now carries old and new CA. The serving certificate stays as it is (signed
   by the old CA, which every published bundle trusts).
2. A later run finds the new CA in the *published* bundle (the webhook configuration's caBundle, or the
   ``ca.crt`` that existed before the run) and only then issues the serving certificate from the new CA.

Expired CAs leave the bundle. So at every instant the apiserver trusts the certificate the webhook serves.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from certs.authority import (
    DEFAULT_CA_DAYS,
    DEFAULT_SERVING_DAYS,
    KeyPair,
    issue_authority,
    issue_serving,
    same_public_key,
)
from certs.errors import MaterialError
from certs.inspection import (
    authority_problem,
    fingerprint,
    is_authority,
    is_expired,
    issued_by,
    issuer_in,
    san_names,
    serial_hex,
    serving_problem,
    unique,
)
from certs.material import Material


@dataclass(frozen=True)
class Lifetimes:
    """How long new certificates live and how early existing ones are renewed."""

    ca_days: int = DEFAULT_CA_DAYS
    serving_days: int = DEFAULT_SERVING_DAYS
    renew_before: timedelta = timedelta(days=30)


DEFAULT_LIFETIMES = Lifetimes()


@dataclass(frozen=True)
class Plan:
    """The material to keep or write, what was decided (one note per decision), and whether a serving
    certificate switch waits for the new CA to be published (the next run completes it)."""

    material: Material
    notes: tuple[str, ...]
    pending: bool = False


def _describe(certificate_pair: KeyPair) -> str:
    certificate = certificate_pair.certificate
    return (
        f"serial {serial_hex(certificate)}, valid until {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    )


def plan_generate(
    material: Material,
    names: Sequence[str],
    *,
    now: datetime,
    lifetimes: Lifetimes = DEFAULT_LIFETIMES,
    force: bool = False,
) -> Plan:
    """Keep valid material, reissue what is not valid (serving only, when the CA is still good).

    The CA is good when its key is present and it is not expiring within the renewal window; the serving
    certificate is good when its chain verifies against the bundle for every one of ``names`` and it is
    not expiring within the window.
    """
    notes: list[str] = []
    authority = material.authority
    if force:
        ca_problem: str | None = "--force"
    elif authority is None:
        ca_problem = "no usable CA key (ca.key) and certificate (ca.crt)"
    else:
        ca_problem = authority_problem(authority, now, lifetimes.renew_before)
    if ca_problem is not None or authority is None:
        authority = issue_authority(now=now, days=lifetimes.ca_days)
        serving = issue_serving(authority, names, now=now, days=lifetimes.serving_days)
        notes.append(f"new CA ({ca_problem}): {_describe(authority)}")
        notes.append(f"new serving certificate for {', '.join(names)}: {_describe(serving)}")
        return Plan(Material((authority.certificate,), authority, serving), tuple(notes))

    bundle = unique(ca for ca in (*material.bundle, authority.certificate) if not is_expired(ca, now))
    serving_now = material.serving
    if serving_now is None:
        reason: str | None = "no usable serving certificate (tls.crt, tls.key)"
    else:
        reason = serving_problem(serving_now, bundle, names, now, lifetimes.renew_before)
    if reason is None and serving_now is not None:
        notes.append(f"keeping the CA and the serving certificate ({_describe(serving_now)})")
        return Plan(Material(bundle, authority, serving_now), tuple(notes))
    serving = issue_serving(authority, names, now=now, days=lifetimes.serving_days)
    notes.append(f"keeping the CA ({_describe(authority)})")
    notes.append(f"new serving certificate ({reason}): {_describe(serving)}")
    return Plan(Material(bundle, authority, serving), tuple(notes))


def plan_rotation(
    material: Material,
    *,
    published: Collection[str],
    now: datetime,
    lifetimes: Lifetimes = DEFAULT_LIFETIMES,
    names: Sequence[str] = (),
    force: bool = False,
    rotate_ca: bool = False,
    adopt: bool = False,
) -> Plan:
    """Renew what expires within ``lifetimes.renew_before`` without ever serving an untrusted certificate.

    ``published``: fingerprints (:func:`fingerprint`) of the CAs clients trusted *before* this run — a
    serving certificate is issued from a new CA only when that CA is among them (phase 2). ``names``: the
    SANs to issue for; empty means those of the current serving certificate. ``force`` reissues the
    serving certificate, ``rotate_ca`` starts a CA rotation even though the CA is not expiring.
    ``adopt``: without a CA key, start with a new CA instead of failing (first in-cluster run, or material
    installed without its key): the CAs of the bundle stay trusted and an existing serving certificate
    moves to the new CA in two phases like any CA rotation.
    """
    notes: list[str] = []
    authority = _signing_authority(material, now=now, lifetimes=lifetimes, adopt=adopt, notes=notes)
    bundle = _trusted_bundle(material, authority, now=now, notes=notes)
    serving = material.serving
    in_progress = serving is not None and not issued_by(serving.certificate, authority.certificate)
    ca_problem = authority_problem(authority, now, lifetimes.renew_before)
    if ca_problem is None and rotate_ca:
        if in_progress:
            notes.append("CA rotation requested, but the previous one is not finished: finishing it first")
        else:
            ca_problem = "CA rotation requested"
    if ca_problem is not None:
        authority = issue_authority(now=now, days=lifetimes.ca_days)
        bundle.append(authority.certificate)
        notes.append(f"new CA ({ca_problem}) added to the bundle: {_describe(authority)}")

    if not names:
        if serving is None:
            raise MaterialError("no serving certificate to renew: pass --service and --namespace")
        names = san_names(serving.certificate)
    broken, reason = _serving_reason(serving, authority, bundle, names, now, lifetimes, force)
    if reason is None:
        assert serving is not None
        notes.append(f"serving certificate is fine ({_describe(serving)})")
        return Plan(Material(tuple(bundle), authority, serving), tuple(notes))
    if broken or fingerprint(authority.certificate) in published:
        serving = issue_serving(authority, names, now=now, days=lifetimes.serving_days)
        notes.append(f"new serving certificate ({reason}): {_describe(serving)}")
        return Plan(Material(tuple(bundle), authority, serving), tuple(notes))
    notes.append(
        f"serving certificate renewal ({reason}) waits until the new CA is published in the caBundle: "
        "run `certs rotate` again after this run's bundle is installed"
    )
    return Plan(Material(tuple(bundle), authority, serving), tuple(notes), pending=True)


def _signing_authority(
    material: Material, *, now: datetime, lifetimes: Lifetimes, adopt: bool, notes: list[str]
) -> KeyPair:
    """The CA pair that signs: the material's, or (``adopt``) a new one; refused when unusable."""
    authority = material.authority
    if authority is None and adopt:
        authority = issue_authority(now=now, days=lifetimes.ca_days)
        notes.append(f"no CA key found: new CA {_describe(authority)}")
    if authority is None:
        raise MaterialError("no CA key: run `confidential-pods certs generate` (and `certs install`) first")
    if not is_authority(authority.certificate) or not same_public_key(authority.certificate, authority.key):
        raise MaterialError("the CA certificate and key are not a usable CA pair")
    return authority


def _trusted_bundle(material: Material, authority: KeyPair, *, now: datetime, notes: list[str]) -> list[Any]:
    """The CA bundle without expired CAs, with the signing CA in it."""
    bundle = list(unique(material.bundle))
    for ca in [ca for ca in bundle if is_expired(ca, now)]:
        bundle.remove(ca)
        notes.append(
            f"pruned expired CA {ca.subject.rfc4514_string()} (expired {ca.not_valid_after_utc:%Y-%m-%d} UTC)"
        )
    signing = authority.certificate
    if not any(fingerprint(ca) == fingerprint(signing) for ca in bundle) and not is_expired(signing, now):
        bundle.append(signing)
        notes.append("added the signing CA to the bundle")
    return bundle


def _serving_reason(
    serving: KeyPair | None,
    authority: KeyPair,
    bundle: list[Any],
    names: Sequence[str],
    now: datetime,
    lifetimes: Lifetimes,
    force: bool,
) -> tuple[bool, str | None]:
    """(whether the serving certificate is unusable now, why it must be reissued — None: it is fine)."""
    broken = (
        serving is None
        or is_expired(serving.certificate, now)
        or issuer_in(serving.certificate, [ca for ca in bundle if not is_expired(ca, now)]) is None
    )
    if serving is None or broken:
        return True, "the current serving certificate is missing, expired or untrusted"
    reason = serving_problem(serving, bundle, names, now, lifetimes.renew_before)
    if reason is None and force:
        reason = "--force"
    if reason is None and not issued_by(serving.certificate, authority.certificate):
        reason = "switching to the new CA"
    return False, reason
