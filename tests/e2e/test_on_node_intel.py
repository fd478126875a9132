"""The intel overlay runs as pods on the real node, installed as a user installs it (issue 24, item 5, intel).

As tests/e2e/test_on_node.py does for alibaba (tests/e2e/incluster.py: a control plane of the module's own,
the node, kube-controller-manager, the PCCS stand-in): ``kustomize edit set image`` in a copy of
``manifests/overlays/intel`` replaces our image, kube-scheduler's and the AESM DaemonSet's
(``aesmd-image-required.invalid/aesmd``, the component's placeholder) by the images build.sh built, the aesmd
one by the aesmd stand-in. The node runs the device plugin in Intel's mode (``sgx.intel.com/enclave`` and
``provision``), carries node-feature-discovery's label ``intel.feature.node.kubernetes.io/sgx=true`` (the
DaemonSet's node affinity) and ``sgx.intel.com/epc`` in its status capacity, as NFD's rule sets it.

The AESM DaemonSet runs as root here, as Intel's aesmd image does (the DaemonSet leaves the user to the
image; the stand-in image's user is 65532): ``kustomize edit add patch`` sets the container's
``runAsUser: 0`` in the copy. Its hostPath ``/var/run/aesmd`` (``DirectoryOrCreate``) is the host's
``/run/aesmd``: the node's mount namespace shares ``/run`` with the host. The module refuses to run when it
exists already and removes it after the node stopped.

The DaemonSet's node probe runs every check, the PCCS one included (the test CA as its ``--pccs-ca``). Three
tests take one part of the node's attestation path away in turn — the provisioning device node, aesmd's
socket, the PCCS stand-in — and each proves the same: the condition False with the probe's reason, a quoting
pod refused with it, a ``quote: none`` pod placed, then True and the quoting pod bound (issue 22, Proof).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import gate
from tests.e2e.incluster import (
    APP_NAMESPACE,
    PCCS_URL,
    QCNL_IN_AESMD,
    Installed,
    built_overlay,
    gone,
    installed_on_node,
    node_condition,
    observe,
    opted_in_pod,
    pccs_ca_file,
    pccs_pod,
    probe_here,
    provisioning_device_gone,
    refused_until_ready,
)
from tests.e2e.kube import JSON, Kube
from tests.e2e.node import Node
from tests.e2e.processes import wait_until

pytestmark = pytest.mark.e2e

AESMD_NAMESPACE = "confidential-pods-aesmd"
AESMD_DAEMONSET = "confidential-pods-aesmd"
#: The AESM DaemonSet's image as the aesmd component names it until a user sets theirs.
AESMD_PLACEHOLDER = "aesmd-image-required.invalid/aesmd"
#: The DaemonSet's hostPath, as the host sees it (/var/run is a link to /run).
HOST_AESMD_DIR = Path("/var/run/aesmd")
INTEL_EPC = "sgx.intel.com/epc"
EPC_MIB = 256
NFD_SGX_LABEL = "intel.feature.node.kubernetes.io/sgx"
JSON_PATCH = "application/json-patch+json"
#: Intel's aesmd image runs as root (/dev/sgx_provision is root:sgx_prv 0660 on a node).
AESMD_AS_ROOT = json.dumps(
    [{"op": "add", "path": "/spec/template/spec/containers/0/securityContext/runAsUser", "value": 0}]
)


@pytest.fixture(scope="module")
def installed(
    request: pytest.FixtureRequest, e2e_log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    """The intel overlay on the node (tests/e2e/incluster.py), the AESM DaemonSet's pod Ready; the host's
    ``/run/aesmd`` removed after."""
    if HOST_AESMD_DIR.exists():
        gate.unavailable(request.config, f"{HOST_AESMD_DIR} exists on this machine: the test would share it")
    work = tmp_path_factory.mktemp("on-node-intel")

    def prepare(kube: Kube, node: Node, images: dict[str, str]) -> list[JSON]:
        node.start_device_plugin("intel", "--enclave-limit=20", "--provision-limit=20")
        kube.patch(f"/api/v1/nodes/{node.name}", {"metadata": {"labels": {NFD_SGX_LABEL: "true"}}})
        kube.patch(
            f"/api/v1/nodes/{node.name}/status",
            [{"op": "add", "path": "/status/capacity/sgx.intel.com~1epc", "value": str(EPC_MIB << 20)}],
            content_type=JSON_PATCH,
        )
        probe_patch = probe_here(node, pccs_ca_file(work), container=1, host_dev_volume=3)
        edits = [
            ["set", "image", f"{AESMD_PLACEHOLDER}={images['aesmd-standin']}"],
            ["add", "patch", "--kind", "DaemonSet", "--name", AESMD_DAEMONSET, "--patch", AESMD_AS_ROOT],
            ["add", "patch", "--kind", "DaemonSet", "--name", AESMD_DAEMONSET, "--patch", probe_patch],
        ]
        return built_overlay(work, "intel", images, edits)

    try:
        with installed_on_node(request.config, e2e_log_dir / "on-node-intel", work, prepare) as product:
            wait_until(lambda: daemonset_ready(product.kube), timeout=120, what="the AESM DaemonSet Ready")
            yield product
    finally:
        shutil.rmtree(HOST_AESMD_DIR, ignore_errors=True)


def daemonset_ready(kube: Kube) -> bool:
    status = kube.get(f"/apis/apps/v1/namespaces/{AESMD_NAMESPACE}/daemonsets/{AESMD_DAEMONSET}").get(
        "status", {}
    )
    return bool(status.get("desiredNumberScheduled") == 1 and status.get("numberReady") == 1)


def aesmd_pod(kube: Kube) -> JSON:
    (pod,) = kube.get(f"/api/v1/namespaces/{AESMD_NAMESPACE}/pods")["items"]
    return pod


def test_the_aesm_daemonset_runs_our_images_and_serves_the_socket_with_the_qcnl_file(
    installed: Installed,
) -> None:
    pod = aesmd_pod(installed.kube)
    assert pod["spec"]["nodeName"] == installed.node.name
    aesmd, probe = pod["spec"]["containers"]
    assert aesmd["image"] == installed.images["aesmd-standin"]
    assert probe["image"] == installed.images["confidential-pods"]
    assert aesmd["securityContext"]["runAsUser"] == 0  # the test's patch: root, as Intel's image runs
    (qcnl_init,) = pod["spec"]["initContainers"]
    assert qcnl_init["image"] == installed.images["confidential-pods"]
    statuses = {s["name"]: s for s in pod["status"]["containerStatuses"]}
    status = statuses["aesmd"]
    assert status["ready"], status  # its probes: test -S /var/run/aesmd/aesm.socket
    assert statuses["node-probe"]["ready"], statuses["node-probe"]
    output = installed.node.ctr(
        "tasks",
        "exec",
        "--exec-id",
        "qcnl-check",
        status["containerID"].removeprefix("containerd://"),
        "sh",
        "-c",
        QCNL_IN_AESMD,
    )
    kind, _, text = output.partition("\n")
    assert kind == "regular", output
    qcnl: dict[str, Any] = json.loads(text)
    assert qcnl["pccs_url"] == PCCS_URL, qcnl
    assert (HOST_AESMD_DIR / "aesm.socket").is_socket()


def test_a_host_mode_pod_runs_and_reaches_the_node_aesm_socket(installed: Installed) -> None:
    kube = installed.kube
    created = kube.create(
        f"/api/v1/namespaces/{APP_NAMESPACE}/pods", opted_in_pod(installed.images["confidential-pods"])
    )
    spec = created["spec"]
    assert spec["schedulerName"] == "confidential-scheduler"
    assert "runtimeClassName" not in spec  # runtimeClass: none - runc and the host's AESM
    assert not spec.get("initContainers")
    (app,) = spec["containers"]
    assert app["resources"]["limits"][INTEL_EPC] == "64Mi"

    pod, facts, log = observe(kube, "enclave")
    assert pod["status"]["phase"] == "Running", (pod["status"], log)
    assert pod["spec"]["nodeName"] == installed.node.name
    assert facts["AESM_CONNECT"] == "ok", log
    assert facts["AESM_MOUNT"] == "ro", log
    assert facts["SGX_AESM_ADDR"] == "1", log
    assert "DEVICE /dev/sgx_enclave char" in log, log
    assert facts["QCNL_PRESENT"] == "False", log  # quote: aesmd - the DaemonSet's aesmd has the file
    assert facts["PCCS"] == "200", log
    kube.delete(f"/api/v1/namespaces/{APP_NAMESPACE}/pods/enclave", grace_period_seconds=0)


def test_an_in_process_pod_gets_the_qcnl_file_and_the_provisioning_device(installed: Installed) -> None:
    kube = installed.kube
    pod = opted_in_pod(
        installed.images["confidential-pods"], "in-process", **{"confidential-pods.io/quote": "in-process"}
    )
    kube.create(f"/api/v1/namespaces/{APP_NAMESPACE}/pods", pod)
    pod, facts, log = observe(kube, "in-process")
    assert pod["status"]["phase"] == "Running", (pod["status"], log)
    assert facts["QCNL_KIND"] == "regular", log
    qcnl = json.loads(facts["QCNL_JSON"])
    assert qcnl["pccs_url"] == PCCS_URL and qcnl["use_secure_cert"] is True, qcnl
    assert "DEVICE /dev/sgx_enclave char" in log and "DEVICE /dev/sgx_provision char" in log, log
    assert facts["AESM_CONNECT"] == "no socket directory", log  # in-process: no AESM socket is mounted
    assert facts["PCCS"] == "200", log
    kube.delete(f"/api/v1/namespaces/{APP_NAMESPACE}/pods/in-process", grace_period_seconds=0)


def test_the_node_probe_beside_aesmd_publishes_the_node_ready(installed: Installed) -> None:
    """The DaemonSet's node-probe container, with its own token (ServiceAccount confidential-pods-node-probe:
    get nodes, patch nodes/status), finds the device nodes, the aesmd stand-in answering on the node and the
    PCCS stand-in of the QCNL file answering over TLS it verifies (the test CA), and publishes
    ``SGXAttestationReady: True``."""
    kube = installed.kube

    def ready() -> bool:
        published = node_condition(kube, installed.node.name)
        return published is not None and published["status"] == "True"

    wait_until(ready, timeout=60, what="the probe to publish SGXAttestationReady True")
    published = node_condition(kube, installed.node.name)
    assert published is not None and published["reason"] == "AllChecksPassed", published
    assert f"PCCS {PCCS_URL}rootcacrl answers" in published["message"], published
    conditions = kube.get(f"/api/v1/nodes/{installed.node.name}")["status"]["conditions"]
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)  # the kubelet's, kept


def test_a_node_the_probe_finds_unready_gets_no_quoting_pod_until_it_is_ready(installed: Installed) -> None:
    """The provisioning device node removed from the node: within a round the probe publishes
    ``SGXAttestationReady: False`` (SGXDevicesMissing); a new quoting pod is refused there with the probe's
    message while a ``quote: none`` pod is placed there; the device back, the condition turns True and the
    quoting pod is bound and runs."""
    gone = provisioning_device_gone(installed.node)
    refused_until_ready(installed, "devices", gone, "SGXDevicesMissing", "SGX device(s) missing")


def test_a_node_whose_aesmd_stopped_answering_gets_no_quoting_pod_until_it_answers(
    installed: Installed,
) -> None:
    """aesmd gone from the node, its socket file left behind (as a killed aesmd leaves it): a unix socket
    bound at its path and never listening, the stand-in's own renamed aside. The DaemonSet's probes
    (``test -S``) see nothing wrong; the node probe's request is refused, so it publishes False
    (AESMUnavailable) and quoting pods are refused there until the stand-in's socket is back."""
    path = HOST_AESMD_DIR / "aesm.socket"

    @contextlib.contextmanager
    def aesmd_gone() -> Iterator[None]:
        away = path.with_name("aesm.socket.away")
        path.rename(away)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
                stale.bind(str(path))  # bound, not listening: connect() is refused
                path.chmod(0o777)  # as aesmd's own: the probe runs as 65532
                yield
        finally:
            path.unlink(missing_ok=True)
            away.rename(path)

    message = "AESM socket /var/run/aesmd/aesm.socket: "
    refused_until_ready(installed, "aesm", aesmd_gone(), "AESMUnavailable", message)


def test_a_node_whose_pccs_is_down_gets_no_quoting_pod_until_it_is_back(installed: Installed) -> None:
    """The PCCS stand-in's pod deleted: the probe's v4 GET to the node's QCNL pccs_url is refused, it
    publishes False (PCCSUnreachable) and quoting pods are refused there; the stand-in started again (the
    same pod), True, and the quoting pod binds and reaches the PCCS."""
    kube = installed.kube
    pods = f"/api/v1/namespaces/{APP_NAMESPACE}/pods"

    @contextlib.contextmanager
    def pccs_gone() -> Iterator[None]:
        kube.delete(f"{pods}/pccs", grace_period_seconds=0)
        try:
            yield
        finally:
            wait_until(lambda: gone(kube, f"{pods}/pccs"), timeout=60, what="the PCCS stand-in's pod gone")
            kube.create(pods, pccs_pod(installed.images["pccs-standin"]))

    message = f"PCCS {PCCS_URL}rootcacrl unreachable"
    refused_until_ready(installed, "pccs", pccs_gone(), "PCCSUnreachable", message)
