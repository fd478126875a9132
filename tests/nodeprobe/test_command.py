"""``confidential-pods node-probe`` as a process, as node-problem-detector and the DaemonSet run it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.commands import cli
from tests.fakeapi import write_kubeconfig
from tests.nodeprobe.standins import ROOT_CA_CRL, Pki, aesmd, answer_keys, make_pki, node_api, pccs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="os.mknod of a character device needs root")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A node that can attest: device nodes, an aesmd, a QCNL configuration naming a trusted PCCS."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("sgx_enclave", "sgx_provision"):
        os.mknod(dev / name, 0o600 | stat.S_IFCHR, os.makedev(10, 125))
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "misc.capacity").write_text("sev 0\n")
    pki: Pki = make_pki(tmp_path)
    with aesmd(tmp_path / "aesm.socket", answer_keys(1)) as standin, pccs(pki) as server:
        qcnl = tmp_path / "sgx_default_qcnl.conf"
        qcnl.write_text(f'{{"pccs_url": "{server.url()}", "use_secure_cert": true}}')
        yield {"dev": dev, "cgroup": cgroup, "aesm": standin.path, "qcnl": qcnl, "pki": pki, "pccs": server}


def _probe(node: dict[str, object], *extra: str) -> list[str]:
    return cli(
        "node-probe", "--dev-dir", str(node["dev"]), "--aesm-socket", str(node["aesm"]),
        "--qcnl-config", str(node["qcnl"]), "--cgroup-root", str(node["cgroup"]),
        "--pccs-ca", str(node["pki"].ca), "--timeout", "2s", *extra,  # type: ignore[attr-defined]
    )  # fmt: skip


def test_once_ready_is_exit_0_and_one_line(node: dict[str, object]) -> None:
    done = subprocess.run(_probe(node, "--once"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("AllChecksPassed: sgx_enclave and sgx_provision present in ")
    assert "aesm.socket answers (1 attestation key(s)); PCCS https://127.0.0.1:" in line  # cut at 250
    assert "NOT epcCgroup SGXEPCCgroupMissing" in done.stderr  # informational: still ready
    assert node["pccs"].requests == [ROOT_CA_CRL]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("device", "SGXDevicesMissing: SGX device(s) missing: "),
        ("aesm", "AESMUnavailable: AESM socket "),
        ("qcnl", "QCNLConfigInvalid: QCNL config "),
        ("pccs", "PCCSErrorResponse: PCCS https://127.0.0.1:"),
    ],
)
def test_once_not_ready_is_exit_1_with_the_reason(
    node: dict[str, object], breakage: str, expected: str
) -> None:
    args: list[str] = []
    if breakage == "device":
        (node["dev"] / "sgx_provision").unlink()  # type: ignore[operator]
    elif breakage == "aesm":
        args = ["--aesm-socket", str(node["dev"] / "absent.socket")]  # type: ignore[operator]
    elif breakage == "qcnl":
        node["qcnl"].write_text("{")  # type: ignore[attr-defined]
    else:
        node["pccs"].routes.clear()  # type: ignore[attr-defined]
    done = subprocess.run([*_probe(node, "--once"), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith(expected)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--interval", "soon"], "argument --interval: 'soon' is not a duration"),
        (["--heartbeat", "0m"], "argument --heartbeat: '0m' must be longer than 0s"),
        # The extender counts a condition not renewed for 15m as unknown: a healthy node beats well within.
        (["--heartbeat", "20m"], "argument --heartbeat: '20m' is longer than 5m"),
        (["--interval", "6m"], "argument --interval: '6m' is longer than 5m"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--skip", "qcnl"], "argument --skip: invalid choice: 'qcnl'"),
        ([], "node-probe: --node-name or $NODE_NAME is required"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], error: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NODE_NAME"}
    done = subprocess.run(cli("node-probe", *args), capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert error in done.stderr.splitlines()[-1]
    assert done.stdout == ""


def test_loop_publishes_then_stops_on_sigterm(node: dict[str, object], tmp_path: Path) -> None:
    with node_api({"kind": "Node", "metadata": {"name": "n7"}, "status": {"conditions": []}}) as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url, token="t")
        env = os.environ | {"NODE_NAME": "n7"}
        command = _probe(node, "--kubeconfig", str(kubeconfig), "--interval", "1s")
        with subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as process:
            deadline = time.monotonic() + 30
            while not any(r.method == "PATCH" for r in api.requests) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2.5)  # two more rounds: nothing new, nothing written
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
    patches = [r for r in api.requests if r.method == "PATCH"]
    assert len(patches) == 1, stderr
    assert patches[0].path == "/api/v1/nodes/n7/status"
    ready = patches[0].body["status"]["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        "SGXAttestationReady",
        "True",
        "AllChecksPassed",
    )
