"""The node probe's checks: each looks at one thing an SGX node needs to attest, with bounded I/O, and
returns a :class:`CheckResult` (``ok``, a CamelCase ``reason``, a one-line ``message``); :func:`verdict`
turns them into the ``SGXAttestationReady`` status (pure).

* :func:`check_devices` — ``sgx_enclave`` and ``sgx_provision`` are character devices in the device dir;
* :func:`check_aesm` — aesmd answers ``GetSupportedAttKeyIDNum`` on its socket (:mod:`nodeprobe.aesm`);
* :func:`check_qcnl` — the quote library's configuration (``/etc/sgx_default_qcnl.conf``) is JSON with a
  ``pccs_url``; :func:`check_pccs` — that PCCS answers a v4 collateral GET (``rootcacrl``: needs no platform
  data), verifying its certificate when ``use_secure_cert`` is true, as the quote library does;
* :func:`check_epc_cgroup` — whether the kernel exposes ``sgx_epc`` in the misc cgroup (informational).

No check raises for what it finds: an error on the node is a result with ``ok`` false.
"""

from __future__ import annotations

import json
import os
import ssl
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import urllib3

from confidential_pods.kube import network_reason
from confidential_pods.qcnl import QCNL_PATH
from nodeprobe import aesm
from nodeprobe.condition import Verdict

#: Where aesmd serves (linux-sgx ``psw/ae/aesm_service/source/core/ipc/SocketConfig.h``).
AESM_SOCKET: Final = "/var/run/aesmd/aesm.socket"
DEV_DIR: Final = "/dev"
CGROUP_ROOT: Final = "/sys/fs/cgroup"
#: The SGX device nodes of the in-kernel driver (Linux 5.11+) a quoting pod needs.
DEVICES: Final = ("sgx_enclave", "sgx_provision")
#: Largest QCNL configuration and ``misc.capacity`` read (both are a few hundred bytes).
MAX_FILE: Final = 64 * 1024
#: Largest PCCS answer read (a CRL is a few kB).
MAX_PCCS_BODY: Final = 1024 * 1024
#: A collateral route of the PCCS v4 API that needs no platform data (PCCS ``routes/index.js``).
PCCS_ROUTE: Final = "rootcacrl"
#: Longest message kept: the extender repeats it in a pod's FailedScheduling event.
MAX_MESSAGE: Final = 250


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: ``name`` says which (``devices``, ``aesm``, ``qcnl``, ``pccs``, ``epcCgroup``)."""

    name: str
    ok: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Qcnl:
    """What the probe uses of the QCNL configuration."""

    pccs_url: str
    use_secure_cert: bool


def _result(name: str, ok: bool, reason: str, message: str) -> CheckResult:
    one_line = " ".join(message.split())
    if len(one_line) > MAX_MESSAGE:
        one_line = one_line[: MAX_MESSAGE - 1] + "…"
    return CheckResult(name, ok, reason, one_line)


def check_devices(dev_dir: str = DEV_DIR) -> CheckResult:
    """``<dev_dir>/sgx_enclave`` and ``sgx_provision`` exist and are character devices (links followed)."""
    missing: list[str] = []
    wrong: list[str] = []
    for device in DEVICES:
        path = os.path.join(dev_dir, device)
        try:
            mode = os.stat(path).st_mode
        except OSError:
            missing.append(path)
            continue
        if not stat.S_ISCHR(mode):
            wrong.append(path)
    if missing:
        return _result("devices", False, "SGXDevicesMissing", f"SGX device(s) missing: {', '.join(missing)}")
    if wrong:
        return _result("devices", False, "SGXDevicesInvalid", f"not character devices: {', '.join(wrong)}")
    return _result("devices", True, "SGXDevicesPresent", f"{' and '.join(DEVICES)} present in {dev_dir}")


def check_aesm(socket_path: str = AESM_SOCKET, timeout: float = 5.0) -> CheckResult:
    """aesmd answers ``GetSupportedAttKeyIDNum`` on ``socket_path`` with success and at least one key."""
    try:
        answer = aesm.get_supported_att_key_id_num(socket_path, timeout)
    except (OSError, aesm.ProtocolError) as exc:
        why = str(exc) if isinstance(exc, aesm.ProtocolError) else network_reason(exc)
        return _result("aesm", False, "AESMUnavailable", f"AESM socket {socket_path}: {why}")
    if answer.error_code != aesm.AESM_SUCCESS or answer.att_key_id_num == 0:
        return _result(
            "aesm",
            False,
            "AESMQuotingUnavailable",
            f"AESM at {socket_path} has no quoting key (error {answer.error_code}, "
            f"{answer.att_key_id_num} key(s)): are the DCAP quoting plugins installed?",
        )
    return _result(
        "aesm",
        True,
        "AESMAnswers",
        f"AESM at {socket_path} answers ({answer.att_key_id_num} attestation key(s))",
    )


def check_qcnl(path: str = QCNL_PATH) -> tuple[CheckResult, Qcnl | None]:
    """The QCNL configuration at ``path`` is JSON (the ``//`` comments of Intel's own file allowed) with an
    http(s) ``pccs_url``; also what the PCCS check needs of it."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE + 1)
    except OSError as exc:
        reason = "QCNLConfigMissing" if isinstance(exc, FileNotFoundError) else "QCNLConfigInvalid"
        return _result("qcnl", False, reason, f"QCNL config {path}: {exc.strerror or exc}"), None
    try:
        qcnl = parse_qcnl(data)
    except ValueError as exc:
        return _result("qcnl", False, "QCNLConfigInvalid", f"QCNL config {path}: {exc}"), None
    secure = "" if qcnl.use_secure_cert else " (use_secure_cert false)"
    return _result(
        "qcnl", True, "QCNLConfigValid", f"QCNL config {path}: pccs_url {qcnl.pccs_url}{secure}"
    ), qcnl


def parse_qcnl(data: bytes) -> Qcnl:
    """``pccs_url`` and ``use_secure_cert`` of a QCNL configuration's bytes (pure; ValueError says why)."""
    if len(data) > MAX_FILE:
        raise ValueError(f"larger than {MAX_FILE} bytes")
    try:
        document = json.loads(strip_comments(data.decode("utf-8")))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    url = document.get("pccs_url")
    if not isinstance(url, str) or not url:
        raise ValueError("no pccs_url")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or any(c.isspace() for c in url):
        raise ValueError(f"pccs_url {url[:100]!r} is not an http(s) URL")
    secure = document.get("use_secure_cert", True)
    if not isinstance(secure, bool):
        raise ValueError(f"use_secure_cert must be true or false, not {json.dumps(secure)[:40]}")
    return Qcnl(pccs_url=url, use_secure_cert=secure)


def strip_comments(text: str) -> str:
    """``text`` without ``//`` and ``/* */`` comments outside strings. Intel's sgx_default_qcnl.conf has
    ``//`` comments and the quote library's JSON reader skips them; Python's json module has no such
    option, so they are blanked here (newlines kept, so error positions stay right)."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            comment = text[i : n if end < 0 else end + 2]
            out.append("\n" * comment.count("\n") or " ")
            i += len(comment)
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def collateral_url(pccs_url: str) -> str:
    """The v4 ``rootcacrl`` URL under ``pccs_url``: the quote library appends routes to ``pccs_url``, which
    ends in ``/sgx/certification/v4/`` (or v3); a bare host gets that path."""
    base = pccs_url.rstrip("/")
    if "/certification/v" not in urlsplit(pccs_url).path:
        base += "/sgx/certification/v4"
    return f"{base}/{PCCS_ROUTE}"


def check_pccs(qcnl: Qcnl, timeout: float = 5.0, ca_file: str | None = None) -> CheckResult:
    """The PCCS answers ``GET <pccs_url>/rootcacrl`` with 200 within ``timeout`` seconds. With
    ``use_secure_cert`` its certificate must verify (against ``ca_file``, else the system's trust store);
    without, it is not checked, as the quote library does."""
    url = collateral_url(qcnl.pccs_url)
    if qcnl.use_secure_cert:
        pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=ca_file)
    else:
        pool = urllib3.PoolManager(cert_reqs="CERT_NONE", assert_hostname=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            response = pool.request(
                "GET", url, preload_content=False, retries=False, redirect=False,
                timeout=urllib3.Timeout(total=timeout), headers={"Accept": "*/*"},
            )  # fmt: skip
            try:
                body = response.read(MAX_PCCS_BODY)
            finally:
                response.release_conn()
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        untrusted = _certificate_error(exc)
        if untrusted is not None:
            return _result("pccs", False, "PCCSCertificateUntrusted", f"PCCS {url} certificate: {untrusted}")
        return _result("pccs", False, "PCCSUnreachable", f"PCCS {url} unreachable: {network_reason(exc)}")
    finally:
        pool.clear()
    if response.status != 200:
        return _result("pccs", False, "PCCSErrorResponse", f"PCCS {url} answered HTTP {response.status}")
    if not body:
        return _result("pccs", False, "PCCSErrorResponse", f"PCCS {url} answered an empty body")
    return _result("pccs", True, "PCCSAnswers", f"PCCS {url} answers")


def _certificate_error(exc: BaseException) -> str | None:
    """What a failed certificate verification says, if that is what ``exc`` (or its cause) is."""
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return str(current.verify_message or "verification failed")
        if isinstance(current, ssl.CertificateError):
            return str(current)
        reason = getattr(current, "reason", None)
        current = reason if isinstance(reason, BaseException) else (current.__cause__ or current.__context__)
    return None


def check_epc_cgroup(cgroup_root: str = CGROUP_ROOT) -> CheckResult:
    """Whether the kernel exposes ``sgx_epc`` in the misc cgroup's ``misc.capacity`` (cgroup v2 root, or
    the v1 ``misc`` hierarchy). Informational: EPC limits (``epcLimits: nri``) need it."""
    for path in (
        os.path.join(cgroup_root, "misc.capacity"),
        os.path.join(cgroup_root, "misc", "misc.capacity"),
    ):
        try:
            with open(path, "rb") as file:
                text = file.read(MAX_FILE).decode("utf-8", "replace")
        except OSError:
            continue
        capacity = dict(line.split(None, 1) for line in text.splitlines() if len(line.split()) == 2)
        if "sgx_epc" in capacity:
            return _result(
                "epcCgroup", True, "SGXEPCCgroupAvailable",
                f"{path}: sgx_epc {capacity['sgx_epc'].strip()}: EPC limits can be enforced",
            )  # fmt: skip
        return _result(
            "epcCgroup", False, "SGXEPCCgroupMissing",
            f"{path} lists no sgx_epc: this kernel has no EPC cgroup, EPC limits cannot be enforced",
        )  # fmt: skip
    return _result(
        "epcCgroup", False, "MiscCgroupMissing", f"no misc.capacity under {cgroup_root}: no misc cgroup"
    )


#: Checks a node may not need: ``aesm`` where pods bring their own aesmd (``aesm: sidecar``) or quote
#: in-process; ``pccs`` (with the QCNL configuration it reads) where the node's quote library is not used.
SKIPPABLE: Final = ("devices", "aesm", "pccs")


@dataclass(frozen=True)
class ProbeConfig:
    """Where the probe looks; ``timeout`` bounds each network check (seconds); ``skip``: checks not run
    (each reported as passed with reason ``Skipped``)."""

    dev_dir: str = DEV_DIR
    aesm_socket: str = AESM_SOCKET
    qcnl_config: str = QCNL_PATH
    cgroup_root: str = CGROUP_ROOT
    timeout: float = 5.0
    pccs_ca: str | None = None
    skip: frozenset[str] = frozenset()


def run_checks(config: ProbeConfig) -> list[CheckResult]:
    """Every check, in order (the PCCS only when the QCNL configuration named one)."""
    results = [
        _skipped("devices") if "devices" in config.skip else check_devices(config.dev_dir),
        _skipped("aesm") if "aesm" in config.skip else check_aesm(config.aesm_socket, config.timeout),
    ]
    if "pccs" in config.skip:
        results += [_skipped("qcnl", "pccs"), _skipped("pccs")]
    else:
        qcnl_result, qcnl = check_qcnl(config.qcnl_config)
        results.append(qcnl_result)
        if qcnl is not None:
            results.append(check_pccs(qcnl, config.timeout, config.pccs_ca))
    results.append(check_epc_cgroup(config.cgroup_root))
    return results


def _skipped(name: str, option: str | None = None) -> CheckResult:
    return _result(name, True, "Skipped", f"{name} not checked (--skip {option or name})")


#: The checks whose failure makes the node not ready, in the order their reasons take precedence.
REQUIRED: Final = ("devices", "aesm", "qcnl", "pccs")


def verdict(results: Sequence[CheckResult]) -> Verdict:
    """``SGXAttestationReady``: True when every required check passed, else False with the first failing
    required check's reason and message (the EPC cgroup check never counts)."""
    required = [r for r in results if r.name in REQUIRED]
    for result in required:
        if not result.ok:
            return Verdict("False", result.reason, result.message)
    if {r.name for r in required} != set(REQUIRED):
        absent = ", ".join(sorted(set(REQUIRED) - {r.name for r in required}))
        return Verdict("Unknown", "ProbeIncomplete", f"checks not run: {absent}")
    ready = _result(
        "ready", True, "AllChecksPassed", "; ".join(r.message for r in required if r.name != "qcnl")
    )
    return Verdict("True", ready.reason, ready.message)


def epc_verdict(results: Sequence[CheckResult]) -> Verdict:
    """``SGXEPCCgroupAvailable`` from the EPC cgroup check (Unknown when it did not run)."""
    for result in results:
        if result.name == "epcCgroup":
            return Verdict("True" if result.ok else "False", result.reason, result.message)
    return Verdict("Unknown", "ProbeIncomplete", "the EPC cgroup check did not run")
