"""The device, QCNL, PCCS and EPC cgroup checks, and the verdict they make."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from nodeprobe.checks import (
    MAX_FILE,
    CheckResult,
    ProbeConfig,
    Qcnl,
    check_devices,
    check_epc_cgroup,
    check_pccs,
    check_qcnl,
    collateral_url,
    parse_qcnl,
    run_checks,
    strip_comments,
    verdict,
)
from nodeprobe.condition import Verdict
from tests.nodeprobe.standins import ROOT_CA_CRL, Pki, make_pki, pccs

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="os.mknod of a character device needs root")


def _chr(path: Path) -> None:
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(10, 125))


# --- devices ------------------------------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize(
    ("make", "ok", "reason", "named"),
    [
        ({"sgx_enclave": "chr", "sgx_provision": "chr"}, True, "SGXDevicesPresent", ""),
        ({"sgx_enclave": "chr"}, False, "SGXDevicesMissing", "sgx_provision"),
        ({"sgx_provision": "chr"}, False, "SGXDevicesMissing", "sgx_enclave"),
        ({}, False, "SGXDevicesMissing", "sgx_enclave, "),
        ({"sgx_enclave": "chr", "sgx_provision": "file"}, False, "SGXDevicesInvalid", "sgx_provision"),
        ({"sgx_enclave": "dir", "sgx_provision": "chr"}, False, "SGXDevicesInvalid", "sgx_enclave"),
        ({"sgx_enclave": "link", "sgx_provision": "chr"}, True, "SGXDevicesPresent", ""),  # to a char device
        ({"sgx_enclave": "dangling", "sgx_provision": "chr"}, False, "SGXDevicesMissing", "sgx_enclave"),
    ],
)
def test_devices(tmp_path: Path, make: dict[str, str], ok: bool, reason: str, named: str) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    _chr(tmp_path / "real")
    for name, kind in make.items():
        path = dev / name
        if kind == "chr":
            _chr(path)
        elif kind == "file":
            path.write_text("")
        elif kind == "dir":
            path.mkdir()
        elif kind == "link":
            path.symlink_to(tmp_path / "real")
        else:
            path.symlink_to(tmp_path / "absent")
    result = check_devices(str(dev))
    assert (result.ok, result.reason) == (ok, reason)
    assert named in result.message


# --- QCNL ---------------------------------------------------------------------------------------------

#: Intel's sgx_default_qcnl.conf shape (DCAP 1.14+): JSON with // comments, URLs holding "//".
INTEL_STYLE = b"""{
  // *** ATTENTION : This file is in JSON format so the keys are case sensitive. Don't change them.

  //PCCS server address
  "pccs_url": "https://localhost:8081/sgx/certification/v4/",

  // To accept insecure HTTPS certificate, set this option to false
  "use_secure_cert": false, /* a block
  comment */
  "retry_times": 6
}
"""


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b'{"pccs_url": "https://p:8081/sgx/certification/v4/"}',
            Qcnl("https://p:8081/sgx/certification/v4/", True),
        ),
        (b'{"pccs_url": "https://p/", "use_secure_cert": false}', Qcnl("https://p/", False)),
        (b'{"pccs_url": "http://p:8081/", "use_secure_cert": true}', Qcnl("http://p:8081/", True)),
        (INTEL_STYLE, Qcnl("https://localhost:8081/sgx/certification/v4/", False)),
        (b'{"pccs_url": "https://p/a\\"//b"}', Qcnl('https://p/a"//b', True)),  # no comment inside a string
    ],
)
def test_parse_qcnl(data: bytes, expected: Qcnl) -> None:
    assert parse_qcnl(data) == expected


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"PCCS_URL=https://p/sgx/certification/v3/\n", "not JSON: Expecting value at line 1 column 1"),
        (b'{"pccs_url": "https://p/",\n\n "x": }', "not JSON: Expecting value at line 3"),
        (b"[]", "not a JSON object"),
        (b"{}", "no pccs_url"),
        (b'{"pccs_url": ""}', "no pccs_url"),
        (b'{"pccs_url": 8081}', "no pccs_url"),
        (b'{"pccs_url": "ftp://p/"}', "pccs_url 'ftp://p/' is not an http(s) URL"),
        (b'{"pccs_url": "https:///x"}', "pccs_url 'https:///x' is not an http(s) URL"),
        (
            b'{"pccs_url": "https://p/", "use_secure_cert": "TRUE"}',
            'use_secure_cert must be true or false, not "TRUE"',
        ),
        (b"\xff\xfe{}", "not UTF-8"),
        (b" " * (MAX_FILE + 1), f"larger than {MAX_FILE} bytes"),
    ],
)
def test_parse_qcnl_refuses(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(error)):
        parse_qcnl(data)


def test_strip_comments_keeps_lines() -> None:
    assert strip_comments('{"a": 1, // x\n/* y\nz */"b": "//"}') == '{"a": 1, \n\n"b": "//"}'


def test_check_qcnl_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sgx_default_qcnl.conf"
    path.write_bytes(INTEL_STYLE)
    result, qcnl = check_qcnl(str(path))
    assert (result.ok, result.reason) == (True, "QCNLConfigValid")
    assert qcnl == Qcnl("https://localhost:8081/sgx/certification/v4/", False)
    assert "use_secure_cert false" in result.message


@pytest.mark.parametrize(
    ("setup", "reason", "message"),
    [
        ("absent", "QCNLConfigMissing", "No such file or directory"),
        ("directory", "QCNLConfigInvalid", "Is a directory"),
        ("huge", "QCNLConfigInvalid", "larger than 65536 bytes"),
        ("broken", "QCNLConfigInvalid", "not JSON"),
    ],
)
def test_check_qcnl_failures(tmp_path: Path, setup: str, reason: str, message: str) -> None:
    path = tmp_path / "sgx_default_qcnl.conf"
    if setup == "directory":
        path.mkdir()
    elif setup == "huge":
        path.write_bytes(b" " * (10 * MAX_FILE))
    elif setup == "broken":
        path.write_bytes(b'{"pccs_url": ')
    result, qcnl = check_qcnl(str(path))
    assert (result.ok, result.reason, qcnl) == (False, reason, None)
    assert message in result.message and str(path) in result.message


# --- PCCS ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pccs_url", "expected"),
    [
        ("https://p:8081/sgx/certification/v4/", "https://p:8081/sgx/certification/v4/rootcacrl"),
        ("https://p:8081/sgx/certification/v4", "https://p:8081/sgx/certification/v4/rootcacrl"),
        ("https://p:8081/sgx/certification/v3/", "https://p:8081/sgx/certification/v3/rootcacrl"),
        ("https://p:8081/", "https://p:8081/sgx/certification/v4/rootcacrl"),
        ("https://p:8081", "https://p:8081/sgx/certification/v4/rootcacrl"),
    ],
)
def test_collateral_url(pccs_url: str, expected: str) -> None:
    assert collateral_url(pccs_url) == expected


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_pccs_answers_with_a_trusted_certificate(pki: Pki) -> None:
    with pccs(pki) as standin:
        result = check_pccs(Qcnl(standin.url(), True), timeout=5, ca_file=str(pki.ca))
    assert (result.ok, result.reason) == (True, "PCCSAnswers"), result
    assert standin.requests == [ROOT_CA_CRL]
    assert result.message == f"PCCS {standin.url()}rootcacrl answers"


def test_pccs_hostname_is_verified(tmp_path: Path) -> None:
    """A certificate from the trusted CA for another name does not verify."""
    other = make_pki(tmp_path, names=("pccs.example",))
    with pccs(other) as standin:
        result = check_pccs(Qcnl(standin.url(), True), timeout=2, ca_file=str(other.ca))
    assert (result.ok, result.reason) == (False, "PCCSCertificateUntrusted"), result
    assert "IP address mismatch" in result.message
    assert standin.requests == []


def test_untrusted_certificate_is_refused_when_secure(pki: Pki) -> None:
    with pccs(pki) as standin:
        result = check_pccs(Qcnl(standin.url(), True), timeout=5, ca_file=None)  # the system's trust store
    assert (result.ok, result.reason) == (False, "PCCSCertificateUntrusted"), result
    assert "unable to get local issuer certificate" in result.message
    assert standin.requests == []


def test_untrusted_certificate_is_accepted_without_use_secure_cert(pki: Pki) -> None:
    with pccs(pki) as standin:
        result = check_pccs(Qcnl(standin.url(), False), timeout=5, ca_file=None)
    assert (result.ok, result.reason) == (True, "PCCSAnswers"), result
    assert standin.requests == [ROOT_CA_CRL]


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ({}, "answered HTTP 404"),
        ({ROOT_CA_CRL: (503, b"busy")}, "answered HTTP 503"),
        ({ROOT_CA_CRL: (200, b"")}, "answered an empty body"),
    ],
)
def test_pccs_error_answers(pki: Pki, routes: dict[str, tuple[int, bytes]], message: str) -> None:
    with pccs(pki, routes) as standin:
        result = check_pccs(Qcnl(standin.url(), True), timeout=5, ca_file=str(pki.ca))
    assert (result.ok, result.reason) == (False, "PCCSErrorResponse")
    assert result.message == f"PCCS {standin.url()}rootcacrl {message}"


def test_pccs_unreachable_names_url_and_cause(pki: Pki) -> None:
    with pccs(pki) as standin:
        url = standin.url()
    result = check_pccs(Qcnl(url, True), timeout=2, ca_file=str(pki.ca))  # the server is gone
    assert (result.ok, result.reason) == (False, "PCCSUnreachable")
    assert result.message == f"PCCS {url}rootcacrl unreachable: Connection refused"


def test_pccs_timeout_is_bounded(pki: Pki) -> None:
    with pccs(pki, delay=3) as standin:
        result = check_pccs(Qcnl(standin.url(), True), timeout=0.5, ca_file=str(pki.ca))
    assert (result.ok, result.reason) == (False, "PCCSUnreachable")
    assert result.message.endswith("unreachable: timed out")


def test_pccs_over_plain_http_is_checked_too(pki: Pki) -> None:
    """An http:// pccs_url (as the config allows) is fetched as such; here nothing serves it."""
    result = check_pccs(Qcnl("http://127.0.0.1:9/", True), timeout=1)
    assert (result.ok, result.reason) == (False, "PCCSUnreachable")
    assert "http://127.0.0.1:9/sgx/certification/v4/rootcacrl" in result.message


# --- EPC cgroup ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "ok", "reason", "message"),
    [
        ({"misc.capacity": "sgx_epc 268435456\n"}, True, "SGXEPCCgroupAvailable", "sgx_epc 268435456"),
        ({"misc.capacity": "res_a 10\nsgx_epc 4096\n"}, True, "SGXEPCCgroupAvailable", "sgx_epc 4096"),
        ({"misc/misc.capacity": "sgx_epc 8192\n"}, True, "SGXEPCCgroupAvailable", "misc/misc.capacity"),
        ({"misc.capacity": "sev 509\nsev_es 0\n"}, False, "SGXEPCCgroupMissing", "lists no sgx_epc"),
        ({"misc.capacity": ""}, False, "SGXEPCCgroupMissing", "lists no sgx_epc"),
        ({}, False, "MiscCgroupMissing", "no misc.capacity under"),
    ],
)
def test_epc_cgroup(tmp_path: Path, files: dict[str, str], ok: bool, reason: str, message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    result = check_epc_cgroup(str(tmp_path))
    assert (result.ok, result.reason) == (ok, reason)
    assert message in result.message


# --- verdict ------------------------------------------------------------------------------------------


def _ok(name: str) -> CheckResult:
    return CheckResult(name, True, f"{name}Ok", f"{name} fine")


def _bad(name: str) -> CheckResult:
    return CheckResult(name, False, f"{name}Bad", f"{name} broken")


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        (
            [_ok("devices"), _ok("aesm"), _ok("qcnl"), _ok("pccs"), _bad("epcCgroup")],
            Verdict("True", "AllChecksPassed", "devices fine; aesm fine; pccs fine"),
        ),
        (
            [_bad("devices"), _bad("aesm"), _ok("qcnl"), _bad("pccs")],
            Verdict("False", "devicesBad", "devices broken"),
        ),
        (
            [_ok("devices"), _bad("aesm"), _ok("qcnl"), _bad("pccs")],
            Verdict("False", "aesmBad", "aesm broken"),
        ),
        ([_ok("devices"), _ok("aesm"), _bad("qcnl")], Verdict("False", "qcnlBad", "qcnl broken")),
        (
            [_ok("devices"), _ok("aesm"), _ok("qcnl"), _bad("pccs")],
            Verdict("False", "pccsBad", "pccs broken"),
        ),
        (
            [_ok("devices"), _ok("aesm"), _ok("qcnl")],
            Verdict("Unknown", "ProbeIncomplete", "checks not run: pccs"),
        ),
    ],
)
def test_verdict(results: list[CheckResult], expected: Verdict) -> None:
    assert verdict(results) == expected


def test_messages_are_one_short_line(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 300)
    result = check_devices(str(path) + "\nsecond line")
    assert "\n" not in result.message and len(result.message) <= 250


def test_qcnl_written_by_the_product_is_accepted(tmp_path: Path) -> None:
    """What ``confidential-pods qcnl`` renders for pods is a configuration the probe reads."""
    from confidential_pods.qcnl import Dcap, render

    path = tmp_path / "sgx_default_qcnl.conf"
    path.write_text(
        render(Dcap(pccs_url="https://pccs.example:8081/sgx/certification/v4/", use_secure_cert=False))
    )
    result, qcnl = check_qcnl(str(path))
    assert result.ok and qcnl == Qcnl("https://pccs.example:8081/sgx/certification/v4/", False)
    assert json.loads(path.read_text())["pccs_url"] == qcnl.pccs_url


# --- skipped checks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("skip", "expected"),
    [
        (frozenset(), Verdict("False", "SGXDevicesMissing", "")),
        (frozenset({"devices"}), Verdict("False", "AESMUnavailable", "")),
        (frozenset({"devices", "aesm"}), Verdict("False", "QCNLConfigMissing", "")),
        (
            frozenset({"devices", "aesm", "pccs"}),
            Verdict(
                "True",
                "AllChecksPassed",
                "devices not checked (--skip devices); aesm not checked (--skip aesm); "
                "pccs not checked (--skip pccs)",
            ),
        ),
    ],
)
def test_skipped_checks_do_not_count(tmp_path: Path, skip: frozenset[str], expected: Verdict) -> None:
    """A node with nothing: each skip moves the verdict to the next check that is still run."""
    config = ProbeConfig(
        dev_dir=str(tmp_path / "dev"),
        aesm_socket=str(tmp_path / "aesm.socket"),
        qcnl_config=str(tmp_path / "qcnl.conf"),
        cgroup_root=str(tmp_path),
        timeout=1,
        skip=skip,
    )
    results = run_checks(config)
    assert [r.name for r in results] == [
        "devices",
        "aesm",
        "qcnl",
        *(["pccs"] if "pccs" in skip else []),
        "epcCgroup",
    ]
    found = verdict(results)
    assert (found.status, found.reason) == (expected.status, expected.reason)
    if expected.message:
        assert found.message == expected.message
