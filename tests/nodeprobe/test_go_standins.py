"""The probe against the e2e node's own stand-ins (tests/e2e/images/standins, Go, standard library): the
aesmd and PCCS the e2e pods talk to, written apart from the probe's code, so a framing or URL mistake
made twice the same way in Python would still show here."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeprobe.checks import Qcnl, check_aesm, check_pccs
from tests.nodeprobe.standins import Pki, make_pki

STANDINS = Path(__file__).resolve().parents[1] / "e2e" / "images" / "standins"
GO = shutil.which("go")
pytestmark = pytest.mark.skipif(
    GO is None, reason="needs the Go toolchain to build tests/e2e/images/standins"
)


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("standins")
    built = {}
    for name in ("aesmd", "pccs"):
        built[name] = out / name
        subprocess.run(
            [str(GO), "build", "-o", str(built[name]), f"./{name}"],
            cwd=STANDINS, check=True, timeout=300, env={**_go_env(), "CGO_ENABLED": "0"},
        )  # fmt: skip
    return built


def _go_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "GOFLAGS"}


def _wait_for(ready: object, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while not ready() and time.monotonic() < deadline:  # type: ignore[operator]
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)


@pytest.fixture
def go_aesmd(binaries: dict[str, Path], tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "aesm.socket"
    with subprocess.Popen(
        [str(binaries["aesmd"]), "-socket", str(path), "-qcnl", str(tmp_path / "none")],
        stderr=subprocess.PIPE,
    ) as process:
        _wait_for(path.exists, process)
        yield path
        process.terminate()


def test_the_go_aesmd_answers_the_probe(go_aesmd: Path) -> None:
    result = check_aesm(str(go_aesmd), timeout=5)
    assert (result.ok, result.reason) == (True, "AESMAnswers"), result
    assert "(1 attestation key(s))" in result.message


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def go_pccs(binaries: dict[str, Path], tmp_path: Path) -> Iterator[tuple[str, Pki]]:
    pki = make_pki(tmp_path)
    port = _free_port()
    command = [
        str(binaries["pccs"]),
        "-listen",
        f"127.0.0.1:{port}",
        "-cert",
        str(pki.cert),
        "-key",
        str(pki.key),
    ]
    with subprocess.Popen(command, stderr=subprocess.PIPE) as process:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        _wait_for(listening, process)
        yield f"https://127.0.0.1:{port}/sgx/certification/v4/", pki
        process.terminate()


def test_the_go_pccs_answers_the_probe(go_pccs: tuple[str, Pki]) -> None:
    url, pki = go_pccs
    result = check_pccs(Qcnl(url, True), timeout=5, ca_file=str(pki.ca))
    assert (result.ok, result.reason) == (True, "PCCSAnswers"), result


def test_the_go_pccs_behind_a_bare_host_url(go_pccs: tuple[str, Pki]) -> None:
    """A pccs_url without the API path gets /sgx/certification/v4/: the route the PCCS serves."""
    url, pki = go_pccs
    result = check_pccs(Qcnl(url.split("/sgx/")[0], True), timeout=5, ca_file=str(pki.ca))
    assert (result.ok, result.reason) == (True, "PCCSAnswers"), result
