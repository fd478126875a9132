"""`certs generate`: certificate contents, chain verification (openssl and Python ssl), files, idempotence."""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.authority import BACKDATE, issue_authority, issue_serving, service_names
from certs.inspection import serving_problem
from certs.material import from_files
from certs.operations import generate
from certs.planning import Lifetimes
from certs.storage import read_files
from confidential_pods.cli import main
from tests.certs.conftest import NOW
from tests.certs.tlsprobe import handshake, tls_server

SERVICE, NAMESPACE = "confidential-pods-webhook", "confidential-pods"
DNS_NAMES = [
    SERVICE,
    f"{SERVICE}.{NAMESPACE}",
    f"{SERVICE}.{NAMESPACE}.svc",
    f"{SERVICE}.{NAMESPACE}.svc.cluster.local",
]


def run_generate(out: Path, *extra: str) -> int:
    return main(
        ["certs", "generate", "--service", SERVICE, "--namespace", NAMESPACE, "--out", str(out), *extra]
    )


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs") / "out"
    assert run_generate(out, "--san", "127.0.0.1", "--san", "localhost") == 0
    return out


def test_files_and_key_modes(generated: Path) -> None:
    assert sorted(path.name for path in generated.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    for name in ("ca.key", "tls.key"):
        assert stat.S_IMODE((generated / name).stat().st_mode) == 0o600
    for name in ("ca.crt", "tls.crt"):
        assert stat.S_IMODE((generated / name).stat().st_mode) == 0o644


def test_openssl_verifies_the_chain(generated: Path) -> None:
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            generated / "ca.crt",
            "-purpose",
            "sslserver",
            generated / "tls.crt",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_openssl_checks_every_name(generated: Path) -> None:
    for name in DNS_NAMES:
        check: list[str | Path] = [
            "openssl",
            "verify",
            "-CAfile",
            generated / "ca.crt",
            "-verify_hostname",
            name,
        ]
        assert (
            subprocess.run([*check, generated / "tls.crt"], capture_output=True, check=False).returncode == 0
        )
    wrong: list[str | Path] = [
        "openssl",
        "verify",
        "-CAfile",
        generated / "ca.crt",
        "-verify_hostname",
        "other.svc",
    ]
    assert subprocess.run([*wrong, generated / "tls.crt"], capture_output=True, check=False).returncode != 0


def test_python_ssl_hostname_check_for_every_san(generated: Path) -> None:
    served = load(generated / "tls.crt")
    with tls_server(generated / "tls.crt", generated / "tls.key") as port:
        for name in [*DNS_NAMES, "localhost", "127.0.0.1"]:
            peer = handshake(port, generated / "ca.crt", name)
            assert x509.load_der_x509_certificate(peer).serial_number == served.serial_number
        with pytest.raises(ssl.SSLCertVerificationError, match="match"):
            handshake(port, generated / "ca.crt", "webhook.elsewhere.svc")
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(port, generated / "ca.crt", "127.0.0.2")


def test_python_ssl_rejects_another_ca(generated: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert run_generate(other) == 0
    with (
        tls_server(generated / "tls.crt", generated / "tls.key") as port,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        handshake(port, other / "ca.crt", DNS_NAMES[2])


def test_sans_are_dns_names_and_ip_addresses(generated: Path) -> None:
    san = load(generated / "tls.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [*DNS_NAMES, "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_ca_extensions(generated: Path) -> None:
    ca = load(generated / "ca.crt")
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ca.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert ca.subject == ca.issuer
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert lifetime == timedelta(days=3650)


def test_serving_extensions(generated: Path) -> None:
    ca, served = load(generated / "ca.crt"), load(generated / "tls.crt")
    assert served.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    constraints = served.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = served.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert served.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    aki = served.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert served.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert served.issuer == ca.subject
    assert served.subject.rfc4514_string() == f"CN={SERVICE}.{NAMESPACE}.svc"
    assert served.not_valid_after_utc - served.not_valid_before_utc == timedelta(days=365)


def test_backdated_five_minutes_with_injected_clock() -> None:
    authority = issue_authority(now=NOW)
    serving = issue_serving(authority, ["a.b.svc"], now=NOW)
    assert authority.certificate.not_valid_before_utc == NOW - BACKDATE == NOW - timedelta(minutes=5)
    assert serving.certificate.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert serving.certificate.not_valid_after_utc == NOW - timedelta(minutes=5) + timedelta(days=365)


def test_cli_certificates_are_backdated(generated: Path) -> None:
    ca, served = load(generated / "ca.crt"), load(generated / "tls.crt")
    now = datetime.now(UTC)
    for certificate in (ca, served):
        age = now - certificate.not_valid_before_utc
        assert timedelta(minutes=5) <= age < timedelta(minutes=10)


def test_serials_are_random_and_distinct() -> None:
    authority = issue_authority(now=NOW)
    serials = {issue_serving(authority, ["x"], now=NOW).certificate.serial_number for _ in range(5)}
    assert len(serials) == 5
    assert all(serial.bit_length() > 64 for serial in serials)


def test_serving_certificate_never_outlives_its_ca() -> None:
    authority = issue_authority(now=NOW, days=100)
    serving = issue_serving(authority, ["x"], now=NOW, days=365)
    assert serving.certificate.not_valid_after_utc == authority.certificate.not_valid_after_utc


def test_service_names_order_and_dedup() -> None:
    assert service_names("s", "n", ["s.n", "10.0.0.1", " "]) == (
        "s",
        "s.n",
        "s.n.svc",
        "s.n.svc.cluster.local",
        "10.0.0.1",
    )


def test_second_run_keeps_files_byte_identical(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_generate(out, "--san", "127.0.0.1") == 0
    before = {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) for path in out.iterdir()
    }
    assert run_generate(out, "--san", "127.0.0.1") == 0
    after = {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) for path in out.iterdir()
    }
    assert after == before


def test_force_replaces_everything(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_generate(out) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert run_generate(out, "--force") == 0
    after = {path.name: path.read_bytes() for path in out.iterdir()}
    assert all(after[name] != before[name] for name in before)
    assert stat.S_IMODE((out / "tls.key").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "damage",
    ["new SAN", "tls.crt deleted", "tls.key of another pair", "tls.crt garbage", "serving expiring"],
)
def test_only_the_serving_certificate_is_reissued_when_the_ca_is_valid(tmp_path: Path, damage: str) -> None:
    out = tmp_path / "out"
    names = service_names(SERVICE, NAMESPACE)
    generate(out, names, now=NOW)
    ca_before = (out / "ca.crt").read_bytes(), (out / "ca.key").read_bytes()
    serving_before = (out / "tls.crt").read_bytes()
    now = NOW
    if damage == "new SAN":
        names = service_names(SERVICE, NAMESPACE, ["127.0.0.1"])
    elif damage == "tls.crt deleted":
        (out / "tls.crt").unlink()
    elif damage == "tls.key of another pair":
        other = tmp_path / "other"
        generate(other, names, now=NOW)
        shutil.copy(other / "tls.key", out / "tls.key")
    elif damage == "tls.crt garbage":
        (out / "tls.crt").write_bytes(b"not a certificate")
    elif damage == "serving expiring":
        now = NOW + timedelta(days=340)  # 25 days left, inside the default 30-day window
    outcome = generate(out, names, now=now)
    assert ((out / "ca.crt").read_bytes(), (out / "ca.key").read_bytes()) == ca_before
    assert outcome.written == ("tls.key", "tls.crt")
    assert (out / "tls.crt").read_bytes() != serving_before
    served = load(out / "tls.crt")
    assert served.not_valid_before_utc == now - BACKDATE
    material = from_files(read_files(out), lenient=False).material
    assert material.serving is not None
    assert serving_problem(material.serving, material.bundle, names, now, timedelta(days=30)) is None


def test_an_expiring_ca_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    names = service_names(SERVICE, NAMESPACE)
    generate(out, names, now=NOW, lifetimes=Lifetimes(ca_days=60, serving_days=20))
    ca_before = (out / "ca.crt").read_bytes()
    outcome = generate(out, names, now=NOW + timedelta(days=31))
    assert (out / "ca.crt").read_bytes() != ca_before
    assert outcome.written == ("ca.crt", "ca.key", "tls.key", "tls.crt")
    assert any("new CA" in note for note in outcome.notes)


def test_renew_before_option_is_parsed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_generate(out, "--days", "10") == 0
    capsys.readouterr()
    assert run_generate(out, "--renew-before", "12h") == 0
    assert "nothing written" in capsys.readouterr().out
    assert run_generate(out, "--renew-before", "11d") == 0  # the 10-day certificate is now due
    assert "new serving certificate" in capsys.readouterr().out
    assert run_generate(out, "--renew-before", "soon") == 1
    assert "not a duration" in capsys.readouterr().err
