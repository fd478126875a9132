"""``confidential-pods precheck`` run as users run it (the installed command), without a working cluster: an
unreachable API server is one line (or one JSON object), missing credentials point at ``--offline``, and
``--offline`` reads no cluster. Against the real kube-apiserver: tests/e2e/test_precheck.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.operate.test_doctor_cli import DOCTOR, unreachable

__all__ = ["unreachable"]  # the fixture

PLACEHOLDER = "dcap:\n  pccsUrl: https://sgx-dcap-server.<region>.aliyuncs.com/\n"


def precheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCTOR, "precheck", *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(PLACEHOLDER)
    return str(path)


def test_an_unreachable_api_server_is_one_line(unreachable: tuple[str, str], config: str) -> None:
    kubeconfig, url = unreachable
    result = precheck("--config", config, "--kubeconfig", kubeconfig)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"confidential-pods: cannot reach the API server at {url}: Connection refused\n"
    result = precheck("--config", config, "--kubeconfig", kubeconfig, "-o", "json")
    assert (result.returncode, result.stderr) == (2, "")
    assert json.loads(result.stdout) == {
        "error": f"cannot reach the API server at {url}: Connection refused",
        "exitCode": 2,
    }


def test_offline_reads_no_cluster(unreachable: tuple[str, str], config: str) -> None:
    kubeconfig, _ = unreachable
    result = precheck("--config", config, "--kubeconfig", kubeconfig, "--offline", "-o", "json")
    assert (result.returncode, result.stderr) == (2, "")
    document = json.loads(result.stdout)
    assert document["worst"] == "fail" and document["checks"] == []
    assert [item["what"] for item in document["toSet"]] == ["dcap.pccsUrl"]
    assert "cluster" not in document


def test_without_credentials_it_says_offline(config: str, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    result = precheck("--config", config, env=env)
    assert result.returncode == 2 and result.stdout == ""
    # the path in $KUBECONFIG is named (it said "the in-cluster ServiceAccount or ~/.kube/config")
    named = f"cannot load API server credentials from $KUBECONFIG ({tmp_path / 'none'})"
    assert result.stderr.startswith(f"confidential-pods: {named}")
    assert result.stderr.endswith("(--offline checks the files without a cluster)\n")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("{containers: 5}", id="containers-not-a-list"),
        pytest.param("{initContainers: 5, containers: [{name: a, image: r.example/a:1}]}", id="init"),
        pytest.param("{containers: [{name: a, image: r.example/a:1, command: 5, args: true}]}", id="command"),
    ],
)
def test_odd_containers_in_a_build_are_no_traceback(spec: str, tmp_path: Path) -> None:
    built = tmp_path / "built.yaml"
    built.write_text(f"kind: Pod\nmetadata: {{name: p}}\nspec: {spec}\n")
    result = precheck("-f", str(built), "--offline", "-o", "json")
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout)["worst"] == "ok"


@pytest.mark.parametrize("given", ["", "---\n---\n"], ids=["empty", "only-separators"])
def test_an_empty_build_is_an_error_not_all_clear(given: str) -> None:
    """`helm template … | precheck -f -` where helm failed pipes nothing: precheck said "ok: nothing left to
    set" and exited 0."""
    result = subprocess.run(
        [DOCTOR, "precheck", "-f", "-", "--offline"], input=given, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert "stdin holds no manifests: did the build (kustomize, helm template) fail?" in result.stderr
