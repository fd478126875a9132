"""The harness's offline parts, in the default run: no Go, no binaries, no processes.

How the e2e tests are gated (skipped with a build hint when the binaries are missing, failed where e2e is
required), the Go module's pins, and the certificates and objects the harness hands to the apiserver.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e import pki
from tests.e2e.gate import REQUIRE_ENV
from tests.e2e.harness import (
    BIN_DIR_ENV,
    MODULE_DIR,
    REPO_ROOT,
    Binaries,
    BinariesMissingError,
    default_bin_dir,
    pinned_kubernetes_version,
    write_kubeconfig,
)
from tests.e2e.kube import node_manifest
from tests.e2e.processes import HarnessError, Process, StartupError

SMOKE = "tests/e2e/test_controlplane_smoke.py"


def run_pytest(
    *args: str, bin_dir: Path, env: dict[str, str] | None = None, target: str = SMOKE
) -> subprocess.CompletedProcess[str]:
    """pytest in a subprocess, as a developer runs it: e2e not required unless ``env``/``args`` say so."""
    base = {k: v for k, v in os.environ.items() if k != REQUIRE_ENV}
    return subprocess.run(
        [sys.executable, "-m", "pytest", target, "-q", "-rs", "-p", "no:cacheprovider", *args],
        cwd=REPO_ROOT,
        env={**base, BIN_DIR_ENV: str(bin_dir), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_e2e_tests_skip_with_a_build_hint_when_binaries_are_missing(tmp_path: Path) -> None:
    result = run_pytest(bin_dir=tmp_path)
    assert result.returncode == pytest.ExitCode.OK, result.stdout
    assert re.search(r"\b[1-9]\d* skipped\b", result.stdout), result.stdout
    assert f"control-plane binaries missing in {tmp_path}" in result.stdout
    assert "run tests/e2e/build.sh" in result.stdout
    assert "passed" not in result.stdout and "failed" not in result.stdout


@pytest.mark.parametrize(
    ("args", "env"), [(("--e2e",), {}), ((), {REQUIRE_ENV: "require"})], ids=["option", "environment"]
)
def test_e2e_tests_fail_where_required_when_binaries_are_missing(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    result = run_pytest(*args, bin_dir=tmp_path, env=env)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert f"control-plane binaries missing in {tmp_path}" in result.stdout
    assert "e2e is required here" in result.stdout
    assert "skipped" not in result.stdout


def test_any_skip_fails_where_e2e_is_required(tmp_path: Path) -> None:
    """tests/conftest.py's rule, on a test file of its own (the conftest loaded as a plugin)."""
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n"
        "def test_skips():\n    pytest.skip('no cel-python')\n\n"
        "@pytest.mark.xfail(reason='known')\ndef test_xfails():\n    assert False\n"
    )
    target = str(tmp_path / "test_skips.py")
    relaxed = run_pytest("-p", "tests.conftest", bin_dir=tmp_path, target=target)
    assert relaxed.returncode == pytest.ExitCode.OK, relaxed.stdout
    assert "1 skipped, 1 xfailed" in relaxed.stdout
    strict = run_pytest("-p", "tests.conftest", bin_dir=tmp_path, target=target, env={REQUIRE_ENV: "require"})
    assert strict.returncode == pytest.ExitCode.TESTS_FAILED, strict.stdout
    assert "skips fail where e2e is required" in strict.stdout and "no cel-python" in strict.stdout
    assert "1 failed, 1 xfailed" in strict.stdout


def test_binaries_locate_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "etcd").write_text("#!/bin/sh\n")
    (tmp_path / "etcd").chmod(0o755)
    (tmp_path / "kube-scheduler").write_text("not executable")
    with pytest.raises(BinariesMissingError, match=r"kube-apiserver, kube-scheduler; run tests/e2e/build.sh"):
        Binaries.locate(tmp_path)


def test_default_bin_dir_is_per_release_and_overridable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BIN_DIR_ENV, raising=False)
    assert default_bin_dir() == REPO_ROOT / ".cache" / "e2e-bin" / pinned_kubernetes_version()
    monkeypatch.setenv(BIN_DIR_ENV, "/somewhere/else")
    assert default_bin_dir() == Path("/somewhere/else")


def test_every_staging_module_is_replaced_by_the_pinned_release() -> None:
    go_mod = (MODULE_DIR / "go.mod").read_text()
    release = pinned_kubernetes_version()
    assert re.fullmatch(r"v1\.(\d+)\.(\d+)", release)
    staging = "v0." + release.removeprefix("v1.")
    block = re.search(r"^replace \((.*?)^\)", go_mod, re.MULTILINE | re.DOTALL)
    assert block is not None
    replaces = re.findall(r"^\s*(\S+) => (\S+) (\S+)\s*$", block.group(1), re.MULTILINE)
    assert len(replaces) >= 30
    for source, target, version in replaces:
        assert source == target
        assert source.startswith("k8s.io/")
        assert version == staging, source
    replaced = {source for source, _, _ in replaces}
    # Every k8s.io staging module the build needs is among them (staging modules are at v0.X.Y).
    required = set(re.findall(r"^\s*(k8s\.io/\S+) v0\.\d+\.\d+(?: // indirect)?$", go_mod, re.MULTILINE))
    assert required <= replaced


def test_issued_certificates_chain_to_the_ca_with_their_names(tmp_path: Path) -> None:
    ca = pki.CertificateAuthority.create(tmp_path)
    files = ca.issue(
        tmp_path,
        "admin",
        common_name="admin",
        organizations=("system:masters",),
        ip_addresses=("127.0.0.1",),
        dns_names=("localhost",),
        server=True,
        client=True,
    )
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert files.key.stat().st_mode & 0o077 == 0


def test_kubeconfig_points_at_the_server_with_client_cert_files(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "admin.kubeconfig",
        server="https://127.0.0.1:6443",
        ca=tmp_path / "ca.crt",
        cert=tmp_path / "admin.crt",
        key=tmp_path / "admin.key",
    )
    config = yaml.safe_load(path.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])["cluster"]
    user = next(u for u in config["users"] if u["name"] == context["user"])["user"]
    assert cluster == {
        "server": "https://127.0.0.1:6443",
        "certificate-authority": str(tmp_path / "ca.crt"),
    }
    assert user == {
        "client-certificate": str(tmp_path / "admin.crt"),
        "client-key": str(tmp_path / "admin.key"),
    }


def test_kubeconfig_with_a_token_and_without_credentials(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "sa.kubeconfig", server="https://127.0.0.1:6443", ca=tmp_path / "ca.crt", token="abc"
    )
    assert yaml.safe_load(path.read_text())["users"][0]["user"] == {"token": "abc"}
    assert path.stat().st_mode & 0o077 == 0
    with pytest.raises(HarnessError, match="needs a client certificate"):
        write_kubeconfig(tmp_path / "none", server="https://127.0.0.1:6443", ca=tmp_path / "ca.crt")


def test_node_manifest_is_ready_and_advertises_the_extended_resource() -> None:
    node = node_manifest("n1", {"alibabacloud.com/sgx_epc_MiB": "96"}, labels={"zone": "a"})
    status = node["status"]
    assert status["allocatable"] == status["capacity"]
    assert status["allocatable"]["alibabacloud.com/sgx_epc_MiB"] == "96"
    assert int(status["allocatable"]["pods"]) > 0
    assert {"type": "Ready", "status": "True"}.items() <= status["conditions"][0].items()
    assert node["metadata"]["labels"] == {
        "kubernetes.io/hostname": "n1",
        "kubernetes.io/os": "linux",
        "zone": "a",
    }
    kubernetes_validate.validate(node, "1.37", strict=True)


def test_a_restarted_process_reads_only_its_own_log(tmp_path: Path) -> None:
    first = Process.start("calc", [sys.executable, "-c", "print(6 * 7)"], tmp_path)
    first.popen.wait(timeout=30)
    second = Process.start("calc", [sys.executable, "-c", "print(7 * 8)"], tmp_path)
    second.popen.wait(timeout=30)
    assert first.log_path == second.log_path
    assert "\n42\n" in first.log_path.read_text()
    assert "\n56\n" in second.log_text()
    assert "42" not in second.log_text()
    with pytest.raises(StartupError, match="calc exited with code 0"):
        second.check_alive()


def test_stop_terminates_a_running_process(tmp_path: Path) -> None:
    sleeper = Process.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path)
    assert sleeper.alive
    sleeper.stop(timeout=10)
    assert not sleeper.alive
    assert sleeper.popen.returncode == -signal.SIGTERM
    sleeper.stop()  # idempotent


# --- tests/e2e/gate.py: run, skip or fail ---


def test_e2e_is_required_by_the_environment_or_the_option(
    monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config
) -> None:
    from tests.e2e import gate

    monkeypatch.delenv(gate.REQUIRE_ENV, raising=False)
    assert gate.required(pytestconfig) is bool(pytestconfig.getoption("e2e"))
    monkeypatch.setenv(gate.REQUIRE_ENV, "require")
    assert gate.required(pytestconfig) is True
    monkeypatch.setenv(gate.REQUIRE_ENV, "yes")
    assert gate.required(pytestconfig) is bool(pytestconfig.getoption("e2e"))


def test_missing_binaries_say_what_to_install_or_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.e2e import gate
    from tests.e2e.harness import BinariesMissingError

    missing = BinariesMissingError("control-plane binaries missing in /x: etcd; run tests/e2e/build.sh")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    without_go = gate.missing_reason(missing)
    assert "install Go 1.26" in without_go and "tests/e2e/build.sh" in without_go
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/local/go/bin/{name}")
    with_go = gate.missing_reason(missing)
    assert "install Go" not in with_go and "run tests/e2e/build.sh" in with_go
