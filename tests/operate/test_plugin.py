"""``kubectl confidential-pods`` behaves like kubectl: its flags before or after the command, the namespace
from the kubeconfig context, ``--context``, ``-A``, ``--version``; run as kubectl runs it, against the tests'
fake API server (the real one: tests/e2e/test_doctor.py)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confidential_pods import __version__
from operate.commands import ACROSS_NAMESPACES, plugin_main
from tests.commands import kubectl_plugin
from tests.extender import scheduler_json as sj
from tests.fakeapi import FakeApiServer

MIB = 2**20


@pytest.fixture(scope="module")
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.put("Node", sj.node("sgx-a", 96))
        server.put("Node", sj.node("sgx-b", 64))
        # kms runs on sgx-a with 64Mi of its 96Mi; a twin waits in another namespace
        server.put("Pod", sj.pod("kms", namespace="shop", epc_mib=64, node_name="sgx-a", phase="Running"))
        server.put("Pod", sj.pod("kms", namespace="bank", epc_mib=80))
        yield server


def kubeconfig(directory: Path, server: str, *, namespace: str | None, other: str = "bank") -> Path:
    """Two contexts on one server: ``main`` (current, with ``namespace``), ``other`` (namespace ``other``)."""
    main_context: dict[str, Any] = {"cluster": "fake", "user": "user"}
    if namespace:
        main_context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "user", "user": {"token": "t"}}],
        "contexts": [
            {"name": "main", "context": main_context},
            {"name": "other", "context": {"cluster": "fake", "user": "user", "namespace": other}},
        ],
        "current-context": "main",
    }
    path = directory / f"kubeconfig-{namespace}"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def files(api: FakeApiServer, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config.yaml"
    config.write_text("profile: alibaba\nschedulerName: default-scheduler\n")
    return {
        "shop": str(kubeconfig(tmp_path, api.url, namespace="shop")),
        "none": str(kubeconfig(tmp_path, api.url, namespace=None)),
        "config": str(config),
    }


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = plugin_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_why_takes_the_namespace_from_the_kubeconfig_context(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "why", "kms", "--kubeconfig", files["shop"], "--config", files["config"])
    assert code == 0, err
    assert out.startswith("shop/kms is bound to sgx-a")
    # --context other: its namespace, bank
    code, out, err = run(capsys, "why", "kms", "--kubeconfig", files["shop"], "--context", "other",
                         "--config", files["config"])  # fmt: skip
    assert code == 0, err
    assert "bank/kms requests 80Mi" in out
    # -n wins over the context's; a context without a namespace means default
    code, _, err = run(
        capsys, "why", "kms", "-n", "bank", "--kubeconfig", files["shop"], "--config", files["config"]
    )
    assert code == 0, err
    code, _, err = run(capsys, "why", "kms", "--kubeconfig", files["none"], "--config", files["config"])
    assert code == 2 and err == "confidential-pods: pod default/kms not found\n"
    code, _, err = run(capsys, "why", "kms", "--kubeconfig", files["shop"], "--context", "nope")
    assert code == 2 and "context 'nope' not found" in err


def test_why_does_not_count_the_pod_against_its_own_node(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """kms holds 64Mi of sgx-a's 96Mi: counted against itself it would not fit there (32Mi free)."""
    code, out, err = run(capsys, "why", "kms", "--kubeconfig", files["shop"], "--config", files["config"])
    assert code == 0, err
    assert "  fits now on 2 node(s): sgx-a, sgx-b" in out


def test_flags_go_before_or_after_the_command(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = run(
        capsys, "--kubeconfig", files["shop"], "--config", files["config"], "-n", "shop", "why", "kms"
    )
    after = run(
        capsys, "why", "kms", "-n", "shop", "--kubeconfig", files["shop"], "--config", files["config"]
    )
    assert before == after and before[0] == 0
    nodes = run(capsys, "--kubeconfig", files["shop"], "nodes", "--config", files["config"], "-o", "json")
    assert nodes[0] == 0
    assert {row["name"]: row["used"] for row in json.loads(nodes[1])} == {"sgx-a": 64 * MIB, "sgx-b": 0}


def test_all_namespaces(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """nodes is cluster-wide: -A changes nothing; why refuses it, as kubectl refuses a name with -A."""
    common = ["--kubeconfig", files["shop"], "--config", files["config"]]
    assert run(capsys, "nodes", "-A", *common)[:2] == run(capsys, "nodes", *common)[:2]
    code, out, err = run(capsys, "-A", "why", "kms", *common)
    assert (code, out, err) == (2, "", f"confidential-pods: {ACROSS_NAMESPACES}\n")


def test_the_installed_executable_as_kubectl_runs_it(files: dict[str, str]) -> None:
    executable = kubectl_plugin()[0]
    if not Path(executable).is_file():
        pytest.skip("kubectl-confidential_pods is not installed beside this interpreter")
    version = subprocess.run(kubectl_plugin("--version"), capture_output=True, text=True, timeout=60)
    assert (version.returncode, version.stdout) == (0, f"kubectl confidential-pods {__version__}\n")
    command = kubectl_plugin("--context", "main", "why", "kms", "--kubeconfig", files["shop"])
    done = subprocess.run([*command, "--config", files["config"]], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("shop/kms is bound to sgx-a\n")
