"""The node probe on the real kube-apiserver (issue 22, item 1): as a ServiceAccount holding only ``get`` on
``nodes`` and ``patch`` on ``nodes/status``, it publishes ``SGXAttestationReady`` next to the kubelet's
conditions, writes nothing while nothing changes, turns the condition False within the interval when aesmd
or the PCCS stops answering, and True again when they are back.

The node's parts are the probe's unit-test stand-ins (tests/nodeprobe/standins.py): device nodes made with
mknod, an aesmd on a unix socket, a PCCS over HTTPS with a test CA.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.commands import cli
from tests.e2e.harness import ControlPlane
from tests.e2e.kube import JSON, ApiError, Kube
from tests.e2e.processes import Process, wait_until
from tests.nodeprobe.standins import ROOT_CA_CRL, aesmd, answer_keys, make_pki, pccs

RBAC = "/apis/rbac.authorization.k8s.io/v1"
ROLE = "e2e-node-probe"
#: A round every second: a change shows within the interval, the checks' timeout and the apiserver's answer.
INTERVAL = "1s"
TIMEOUT = 20.0

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="os.mknod of a character device needs root"),
]


def _condition(kube: Kube, node: str, kind: str = "SGXAttestationReady") -> dict[str, Any] | None:
    conditions = kube.get(f"/api/v1/nodes/{node}").get("status", {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


@pytest.fixture
def probe_kubeconfig(kube: Kube, control_plane: ControlPlane, namespace: str) -> Iterator[Path]:
    """A ServiceAccount bound to a ClusterRole of exactly what the probe needs."""
    kube.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "node-probe"}})
    role = {
        "metadata": {"name": ROLE},
        "rules": [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
        ],
    }
    binding = {
        "metadata": {"name": f"{ROLE}-{namespace}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": "node-probe", "namespace": namespace}],
    }
    kube.create(f"{RBAC}/clusterroles", role)
    kube.create(f"{RBAC}/clusterrolebindings", binding)
    try:
        yield control_plane.api.service_account_kubeconfig(namespace, "node-probe")
    finally:
        for path in (f"{RBAC}/clusterrolebindings/{ROLE}-{namespace}", f"{RBAC}/clusterroles/{ROLE}"):
            try:
                kube.delete(path)
            except ApiError as exc:
                if exc.status != 404:
                    raise


def test_probe_publishes_and_follows_aesmd_and_the_pccs(
    kube: Kube,
    make_node: Callable[..., JSON],
    probe_kubeconfig: Path,
    tmp_path: Path,
    e2e_log_dir: Path,
) -> None:
    name = make_node({})["metadata"]["name"]
    dev = tmp_path / "dev"
    dev.mkdir()
    for device in ("sgx_enclave", "sgx_provision"):
        os.mknod(dev / device, 0o600 | stat.S_IFCHR, os.makedev(10, 125))
    pki = make_pki(tmp_path)
    socket_path = tmp_path / "aesm.socket"
    with pccs(pki) as server:
        qcnl = tmp_path / "sgx_default_qcnl.conf"
        qcnl.write_text(f'{{"pccs_url": "{server.url()}", "use_secure_cert": true}}')
        command = cli(
            "node-probe", "--kubeconfig", str(probe_kubeconfig), "--interval", INTERVAL, "--timeout", "2s",
            "--dev-dir", str(dev), "--aesm-socket", str(socket_path), "--qcnl-config", str(qcnl),
            "--pccs-ca", str(pki.ca), "--cgroup-root", str(tmp_path / "no-cgroup"),
        )  # fmt: skip
        probe = Process.start("node-probe", command, e2e_log_dir, env=os.environ | {"NODE_NAME": name})
        try:
            with aesmd(socket_path, answer_keys(1)):
                ready = _wait_status(kube, name, "True", probe)
                assert ready["reason"] == "AllChecksPassed"
                node = kube.get(f"/api/v1/nodes/{name}")
                kinds = [c["type"] for c in node["status"]["conditions"]]
                assert kinds.count("Ready") == 1 and "SGXEPCCgroupAvailable" in kinds  # the kubelet's kept
                steady = node["metadata"]["resourceVersion"]
                requests = len(server.requests)
                wait_until(lambda: len(server.requests) >= requests + 3, timeout=TIMEOUT, what="three rounds")
                assert kube.get(f"/api/v1/nodes/{name}")["metadata"]["resourceVersion"] == steady  # no write
            down = _wait_status(kube, name, "False", probe)  # aesmd gone
            assert down["reason"] == "AESMUnavailable" and str(socket_path) in down["message"]
            assert down["lastTransitionTime"] >= ready["lastTransitionTime"]
            with aesmd(socket_path, answer_keys(1)):
                _wait_status(kube, name, "True", probe)
                server.routes.pop(ROOT_CA_CRL)  # the PCCS answers 404
                pccs_down = _wait_status(kube, name, "False", probe)
                assert pccs_down["reason"] == "PCCSErrorResponse"
                assert pccs_down["message"] == f"PCCS {server.url()}rootcacrl answered HTTP 404"
                server.routes[ROOT_CA_CRL] = (200, b"3082")
                _wait_status(kube, name, "True", probe)
            probe.check_alive()
        finally:
            probe.stop()


def _wait_status(kube: Kube, node: str, status: str, probe: Process) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def reached() -> bool:
        condition = _condition(kube, node)
        if condition is not None and condition["status"] == status:
            found.update(condition)
            return True
        return False

    wait_until(reached, timeout=TIMEOUT, what=f"SGXAttestationReady {status}", alive=probe.check_alive)
    return found
