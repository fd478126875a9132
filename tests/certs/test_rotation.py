"""Rotation decisions with an injected clock: serving-only renewal, two-phase CA rotation, pruning."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certs.authority import issue_authority, issue_serving, service_names
from certs.durations import format_duration, parse_duration
from certs.errors import DurationError, MaterialError
from certs.inspection import fingerprint, issued_by, serving_problem
from certs.material import Material
from certs.operations import generate, rotate_directory
from certs.planning import Lifetimes, plan_rotation
from confidential_pods.cli import main
from tests.certs.conftest import NOW

NAMES = service_names("webhook", "confidential-pods", ["127.0.0.1"])
WINDOW = Lifetimes(renew_before=timedelta(days=30))


def fresh(now: datetime = NOW, ca_days: int = 3650, days: int = 365) -> Material:
    authority = issue_authority(now=now, days=ca_days)
    return Material((authority.certificate,), authority, issue_serving(authority, NAMES, now=now, days=days))


def published(material: Material) -> frozenset[str]:
    return frozenset(fingerprint(ca) for ca in material.bundle)


def trusted_everywhere(material: Material, bundle: tuple[x509.Certificate, ...], now: datetime) -> bool:
    assert material.serving is not None
    return serving_problem(material.serving, bundle, NAMES, now, timedelta(0)) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "1.5d", "30 days", "1w", "1d2h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(DurationError, match="not a duration"):
        parse_duration(text)


def test_nothing_to_do_keeps_the_material() -> None:
    material = fresh()
    plan = plan_rotation(
        material, published=published(material), now=NOW + timedelta(days=100), lifetimes=WINDOW
    )
    assert plan.material == material
    assert not plan.pending


def test_serving_only_renewal_inside_the_window() -> None:
    material = fresh()
    now = NOW + timedelta(days=340)  # serving has 25 days left, the CA ~9 years
    plan = plan_rotation(material, published=published(material), now=now, lifetimes=WINDOW)
    assert plan.material.authority == material.authority
    assert plan.material.bundle == material.bundle
    assert plan.material.serving is not None and plan.material.serving != material.serving
    assert plan.material.serving.certificate.not_valid_before_utc == now - timedelta(minutes=5)
    assert issued_by(plan.material.serving.certificate, material.bundle[0])
    assert trusted_everywhere(plan.material, material.bundle, now)


def test_serving_just_outside_the_window_is_kept() -> None:
    material = fresh()
    now = NOW + timedelta(days=334)  # 31 days left
    assert (
        plan_rotation(material, published=published(material), now=now, lifetimes=WINDOW).material == material
    )


def test_force_reissues_the_serving_certificate_only() -> None:
    material = fresh()
    plan = plan_rotation(material, published=published(material), now=NOW, force=True)
    assert plan.material.authority == material.authority and plan.material.bundle == material.bundle
    assert plan.material.serving != material.serving


def test_ca_renewal_is_two_phase_and_never_leaves_the_served_certificate_untrusted() -> None:
    material = fresh(ca_days=400, days=365)
    old_ca = material.bundle[0]
    # A serving certificate issued on day 200 is capped at the CA's end (day 400).
    day200 = NOW + timedelta(days=200)
    material = plan_rotation(material, published=published(material), now=day200, force=True).material
    assert material.serving is not None
    assert material.serving.certificate.not_valid_after_utc == old_ca.not_valid_after_utc
    now = NOW + timedelta(days=375)  # the CA and the serving certificate have 25 days left
    # Phase 1: a new CA joins the bundle; the served certificate stays on the old CA.
    phase1 = plan_rotation(material, published=published(material), now=now, lifetimes=WINDOW)
    assert phase1.pending
    assert phase1.material.bundle[0] == old_ca
    assert len(phase1.material.bundle) == 2
    new_ca = phase1.material.bundle[1]
    assert phase1.material.authority is not None and phase1.material.authority.certificate == new_ca
    assert phase1.material.serving == material.serving
    # The old bundle (what the apiserver still has) and the new one both trust what is served.
    assert trusted_everywhere(phase1.material, material.bundle, now)
    assert trusted_everywhere(phase1.material, phase1.material.bundle, now)
    # Same run again before the bundle is published: still waiting, nothing new issued.
    again = plan_rotation(phase1.material, published=published(material), now=now, lifetimes=WINDOW)
    assert again.pending and again.material == phase1.material
    # Phase 2: the bundle with the new CA is published; the serving certificate moves to the new CA.
    phase2 = plan_rotation(phase1.material, published=published(phase1.material), now=now, lifetimes=WINDOW)
    assert not phase2.pending
    assert phase2.material.serving is not None and issued_by(phase2.material.serving.certificate, new_ca)
    assert phase2.material.bundle == phase1.material.bundle  # old CA kept until it expires
    assert trusted_everywhere(phase2.material, phase1.material.bundle, now)
    # Later runs change nothing while the old CA is still valid.
    later = now + timedelta(days=10)
    assert (
        plan_rotation(phase2.material, published=published(phase2.material), now=later).material
        == phase2.material
    )
    # Once the old CA has expired it is pruned from the bundle.
    after_expiry = old_ca.not_valid_after_utc + timedelta(minutes=1)
    pruned = plan_rotation(phase2.material, published=published(phase2.material), now=after_expiry)
    assert pruned.material.bundle == (new_ca,)
    assert any("pruned expired CA" in note for note in pruned.notes)
    assert pruned.material.serving == phase2.material.serving


def test_rotate_ca_on_request_and_not_twice_while_in_progress() -> None:
    material = fresh()
    phase1 = plan_rotation(material, published=published(material), now=NOW, rotate_ca=True)
    assert len(phase1.material.bundle) == 2 and phase1.pending
    second = plan_rotation(phase1.material, published=published(material), now=NOW, rotate_ca=True)
    assert len(second.material.bundle) == 2
    assert any("not finished" in note for note in second.notes)


def test_a_missing_serving_certificate_is_issued_at_once() -> None:
    material = fresh()
    bare = Material(material.bundle, material.authority, None)
    plan = plan_rotation(bare, published=frozenset(), now=NOW, names=NAMES)
    assert plan.material.serving is not None and not plan.pending


def test_no_ca_key_is_an_error() -> None:
    material = fresh()
    with pytest.raises(MaterialError, match="no CA key"):
        plan_rotation(Material(material.bundle, None, material.serving), published=frozenset(), now=NOW)


def test_new_names_reissue_from_the_same_ca() -> None:
    material = fresh()
    names = (*NAMES, "extra.example")
    plan = plan_rotation(material, published=published(material), now=NOW, names=names)
    assert plan.material.serving is not None
    san = plan.material.serving.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "extra.example" in san.value.get_values_for_type(x509.DNSName)


# --- the directory shell ---------------------------------------------------------------------------------


def openssl_verify(directory: Path) -> bool:
    command: list[str | Path] = ["openssl", "verify", "-CAfile", directory / "ca.crt", directory / "tls.crt"]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


def test_directory_rotation_runs_the_phases_on_successive_runs(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    generate(out, NAMES, now=NOW, lifetimes=Lifetimes(ca_days=400, serving_days=400))
    tls_before = (out / "tls.crt").read_bytes()
    now = NOW + timedelta(days=380)  # CA and serving certificate: 20 days left
    first = rotate_directory(out, now=now)
    assert first.pending and first.written == ("ca.crt", "ca.key")
    assert (out / "tls.crt").read_bytes() == tls_before
    assert (out / "ca.crt").read_bytes().count(b"BEGIN CERTIFICATE") == 2
    second = rotate_directory(out, now=now)
    assert not second.pending and second.written == ("tls.key", "tls.crt")
    third = rotate_directory(out, now=now)
    assert third.written == ()


def test_directory_rotation_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "generate", "--service", "s", "--namespace", "n", "--out", str(out)]) == 0
    serial = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes()).serial_number
    assert main(["certs", "rotate", "--dir", str(out), "--renew-before", "30d"]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert main(["certs", "rotate", "--dir", str(out), "--force"]) == 0
    assert x509.load_pem_x509_certificate((out / "tls.crt").read_bytes()).serial_number != serial
    assert openssl_verify(out)
    assert main(["certs", "rotate", "--dir", str(out), "--rotate-ca"]) == 0
    assert "waits until the new CA is published" in capsys.readouterr().out
    assert openssl_verify(out)
    assert main(["certs", "rotate", "--dir", str(out)]) == 0
    assert "switching to the new CA" in capsys.readouterr().out
    assert openssl_verify(out)
    assert main(["certs", "rotate", "--dir", str(tmp_path / "empty")]) == 1
    assert "run `certs generate` first" in capsys.readouterr().err
    assert main(["certs", "rotate", "--dir", str(out), "--webhook-config", "x"]) == 1
    assert "--webhook-config: only with --secret" in capsys.readouterr().err
    assert main(["certs", "rotate", "--dir", str(out), "--san", "extra.example"]) == 1
    assert "--san needs --service" in capsys.readouterr().err
    assert (
        main(
            ["certs", "rotate", "--dir", str(out), "--service", "s", "--namespace", "n", "--san", "x.example"]
        )
        == 0
    )
    assert "x.example" in capsys.readouterr().out
