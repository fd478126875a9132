"""A real node: kubelet + containerd + runc + CNI joined to the e2e control plane, with an SGX device plugin.

The node (tests/e2e/node.py) starts once for this module. Pods are placed with ``nodeName`` (no scheduler
involved: what is proven here is the kubelet's side) and look at what they were given from inside, writing it
to their log, which the test reads through the apiserver (apiserver -> kubelet, with its client certificate).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e import gate
from tests.e2e.harness import BinariesMissingError, ControlPlane, pinned_kubernetes_version
from tests.e2e.kube import JSON, JSON_PATCH, ApiError, Kube
from tests.e2e.node import Node, NodeBinaries, publish_root_ca
from tests.e2e.nodeconfig import NODE_IP, POD_CIDR
from tests.e2e.nodehost import host_problems
from tests.e2e.nodeimages import BUSYBOX_IMAGE, busybox_image, pause_image
from tests.e2e.processes import wait_until

pytestmark = pytest.mark.e2e

EPC_MIB = 64
ALIBABA_EPC = "alibabacloud.com/sgx_epc_MiB"
INTEL_EPC = "sgx.intel.com/epc"
INTEL_EPC_BYTES = str(EPC_MIB * 1024 * 1024)
#: What the check pods print about a path: busybox stat's file type, then major:minor (hex).
SGX_CHECK = (
    "for p in /dev/sgx_enclave /dev/sgx_provision /dev/sgx/enclave /dev/sgx/provision; do "
    "stat -c '%n %F %t:%T' $p 2>&1; done; echo SGX_VISIBLE_DEVICES=$SGX_VISIBLE_DEVICES"
)


@pytest.fixture(scope="module")
def node(
    request: pytest.FixtureRequest,
    control_plane: ControlPlane,
    e2e_log_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Node]:
    """The e2e node for this module; torn down after it, and nothing may be left behind (Node.run checks)."""
    problems = host_problems()
    if problems:
        gate.unavailable(request.config, "; ".join(problems))
    try:
        binaries = NodeBinaries.locate()
    except BinariesMissingError as exc:
        gate.unavailable(request.config, str(exc))
    images = tmp_path_factory.mktemp("node-images")
    archives = [pause_image(binaries.pause, images), busybox_image(images)]
    workdir = tmp_path_factory.mktemp("node")
    with Node.run(control_plane.api, workdir, e2e_log_dir / "node", images=archives) as started:
        yield started


@pytest.fixture
def node_namespace(namespace: str, kube: Kube, control_plane: ControlPlane) -> str:
    """The test's namespace with the ``kube-root-ca.crt`` ConfigMap every token volume needs."""
    publish_root_ca(kube, namespace, control_plane.api.ca.files.cert)
    return namespace


@pytest.fixture
def runtime_class(kube: Kube) -> Iterator[Callable[[str], str]]:
    """Factory ``runtime_class(handler)``: a RuntimeClass (fresh name) with that handler; deleted after."""
    created: list[str] = []

    def make(handler: str) -> str:
        name = f"e2e-{handler}-{uuid.uuid4().hex[:6]}"
        kube.create(
            "/apis/node.k8s.io/v1/runtimeclasses",
            {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": name},
                "handler": handler,
            },
        )
        created.append(name)
        return name

    yield make
    for name in created:
        kube.delete(f"/apis/node.k8s.io/v1/runtimeclasses/{name}")


def check_pod(
    node: Node, name: str, script: str, resources: dict[str, str] | None = None, **spec: object
) -> JSON:
    """A busybox pod on ``node`` running ``script`` once (restartPolicy Never)."""
    container: JSON = {
        "name": "check",
        "image": BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
    }
    if resources:
        container["resources"] = {"requests": dict(resources), "limits": dict(resources)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node.name,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [container],
            **spec,
        },
    }


def wait_phase(kube: Kube, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 90) -> JSON:
    pod: JSON = {}

    def reached() -> bool:
        nonlocal pod
        pod = kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        return pod.get("status", {}).get("phase") in phases

    wait_until(reached, timeout=timeout, what=f"pod {namespace}/{name} to be {' or '.join(phases)}")
    return pod


def pod_log(kube: Kube, namespace: str, name: str) -> str:
    """The container's log, through the apiserver (which asks the kubelet with its client certificate)."""
    return kube.get_text(f"/api/v1/namespaces/{namespace}/pods/{name}/log")


def allocatable(kube: Kube, node: Node, resource: str) -> str | None:
    value = kube.get(f"/api/v1/nodes/{node.name}")["status"].get("allocatable", {}).get(resource)
    return None if value is None else str(value)


def wait_allocatable(kube: Kube, node: Node, resource: str, value: str, timeout: float = 60) -> None:
    wait_until(
        lambda: allocatable(kube, node, resource) == value,
        timeout=timeout,
        what=f"{resource} allocatable {value} on {node.name} (now {allocatable(kube, node, resource)})",
    )


def device_lines(log: str) -> dict[str, str]:
    """``{path: "character special file 1:3"}`` from SGX_CHECK's output."""
    found = {}
    for line in log.splitlines():
        match = re.match(r"(/dev/\S+) (.+)$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_node_joins_and_turns_ready_once_cni_is_configured(node: Node, kube: Kube) -> None:
    stored = kube.get(f"/api/v1/nodes/{node.name}")
    assert "cni" in node.not_ready_message.lower() or "network" in node.not_ready_message.lower()
    assert node.ready()
    info = stored["status"]["nodeInfo"]
    assert info["kubeletVersion"] == pinned_kubernetes_version()
    assert info["containerRuntimeVersion"].startswith("containerd://1.6.")
    assert {"type": "InternalIP", "address": NODE_IP} in stored["status"]["addresses"]


def test_plain_pod_runs_and_gets_an_ip_from_the_cni(
    node: Node, kube: Kube, node_namespace: str, pods: Callable[..., JSON]
) -> None:
    pods(check_pod(node, "plain", "ip -4 -o addr show dev eth0; exec sleep 600"), namespace=node_namespace)
    pod = wait_phase(kube, node_namespace, "plain", ("Running", "Failed"))
    assert pod["status"]["phase"] == "Running", pod["status"]
    pod_ip = ipaddress.ip_address(pod["status"]["podIP"])
    assert pod_ip in ipaddress.ip_network(POD_CIDR) and str(pod_ip) != NODE_IP
    wait_until(
        lambda: f"inet {pod_ip}/24" in pod_log(kube, node_namespace, "plain"),
        timeout=30,
        what="the pod's log",
    )


def test_alibaba_plugin_epc_reaches_the_container(
    node: Node,
    kube: Kube,
    node_namespace: str,
    pods: Callable[..., JSON],
    runtime_class: Callable[[str], str],
) -> None:
    node.start_device_plugin("alibaba", f"--epc-mib={EPC_MIB}")
    wait_allocatable(kube, node, ALIBABA_EPC, str(EPC_MIB))
    kata = runtime_class("kata")
    pods(
        check_pod(node, "enclave", SGX_CHECK, {ALIBABA_EPC: "8"}, runtimeClassName=kata),
        namespace=node_namespace,
    )
    pod = wait_phase(kube, node_namespace, "enclave", ("Succeeded", "Failed"))
    log = pod_log(kube, node_namespace, "enclave")
    assert pod["status"]["phase"] == "Succeeded", (pod["status"], log)
    devices = device_lines(log)
    for path in ("/dev/sgx_enclave", "/dev/sgx_provision", "/dev/sgx/enclave", "/dev/sgx/provision"):
        assert devices[path] == "character special file 1:3", log
    visible = re.search(r"SGX_VISIBLE_DEVICES=(\S*)", log)
    assert visible is not None and len(visible.group(1).split(",")) == 8, log

    # Beyond the node's EPC: the kubelet's admission refuses it (no scheduler here to keep it Pending). For a
    # device-plugin resource the device manager's allocation refuses it first, before the resource predicate
    # (which would say OutOf<resource>): kubelet names that UnexpectedAdmissionError.
    pods(check_pod(node, "too-big", "true", {ALIBABA_EPC: str(EPC_MIB + 1)}), namespace=node_namespace)
    refused = wait_phase(kube, node_namespace, "too-big", ("Failed", "Succeeded", "Running"))
    assert refused["status"]["phase"] == "Failed"
    assert refused["status"]["reason"] == "UnexpectedAdmissionError", refused["status"]
    unavailable = f"devices unavailable for {ALIBABA_EPC}. Requested: {EPC_MIB + 1}, Available: {EPC_MIB}"
    assert unavailable in refused["status"]["message"], refused["status"]


def test_restarting_the_device_plugin_keeps_the_allocatable(node: Node, kube: Kube) -> None:
    node.start_device_plugin("alibaba", f"--epc-mib={EPC_MIB}")
    wait_allocatable(kube, node, ALIBABA_EPC, str(EPC_MIB))
    node.stop_device_plugin()
    wait_allocatable(kube, node, ALIBABA_EPC, "0")  # the kubelet marks a gone plugin's devices unhealthy
    node.start_device_plugin("alibaba", f"--epc-mib={EPC_MIB}")
    wait_allocatable(kube, node, ALIBABA_EPC, str(EPC_MIB))


def test_intel_plugin_devices_and_nfd_epc_reach_the_container(
    node: Node,
    kube: Kube,
    node_namespace: str,
    pods: Callable[..., JSON],
    runtime_class: Callable[[str], str],
) -> None:
    node.start_device_plugin("intel", "--enclave-limit=20", "--provision-limit=20")
    wait_allocatable(kube, node, "sgx.intel.com/enclave", "20")
    wait_allocatable(kube, node, "sgx.intel.com/provision", "20")
    # sgx.intel.com/epc comes from node-feature-discovery: an extended resource in the Node's capacity.
    kube.patch(
        f"/api/v1/nodes/{node.name}/status",
        [{"op": "add", "path": "/status/capacity/sgx.intel.com~1epc", "value": INTEL_EPC_BYTES}],
        content_type=JSON_PATCH,
    )
    try:
        wait_allocatable(kube, node, INTEL_EPC, INTEL_EPC_BYTES)
        runv = runtime_class("runv")
        wanted = {INTEL_EPC: "8Mi", "sgx.intel.com/enclave": "1", "sgx.intel.com/provision": "1"}
        pods(check_pod(node, "enclave", SGX_CHECK, wanted, runtimeClassName=runv), namespace=node_namespace)
        pod = wait_phase(kube, node_namespace, "enclave", ("Succeeded", "Failed"))
        log = pod_log(kube, node_namespace, "enclave")
        assert pod["status"]["phase"] == "Succeeded", (pod["status"], log)
        devices = device_lines(log)
        assert devices["/dev/sgx_enclave"] == "character special file 1:3", log
        assert devices["/dev/sgx_provision"] == "character special file 1:3", log
        assert devices["/dev/sgx/enclave"] == "character special file 1:3", (
            log
        )  # the deprecated /dev/sgx mount

        too_big = {INTEL_EPC: f"{EPC_MIB + 1}Mi", "sgx.intel.com/enclave": "1"}
        pods(check_pod(node, "too-big", "true", too_big), namespace=node_namespace)
        refused = wait_phase(kube, node_namespace, "too-big", ("Failed", "Succeeded", "Running"))
        assert refused["status"]["phase"] == "Failed"
        assert refused["status"]["reason"] == f"OutOf{INTEL_EPC}", refused["status"]
    finally:
        node.stop_device_plugin()
        with contextlib.suppress(ApiError):
            kube.patch(
                f"/api/v1/nodes/{node.name}/status",
                [{"op": "remove", "path": "/status/capacity/sgx.intel.com~1epc"}],
                content_type=JSON_PATCH,
            )


def test_restarting_the_kubelet_keeps_the_plugin_and_the_pod_its_devices(
    node: Node, kube: Kube, node_namespace: str, pods: Callable[..., JSON]
) -> None:
    plugin = node.start_device_plugin("alibaba", f"--epc-mib={EPC_MIB}")
    wait_allocatable(kube, node, ALIBABA_EPC, str(EPC_MIB))
    pods(check_pod(node, "holder", "exec sleep 600", {ALIBABA_EPC: "8"}), namespace=node_namespace)
    before = wait_phase(kube, node_namespace, "holder", ("Running", "Failed"))
    assert before["status"]["phase"] == "Running", before["status"]

    node.stop_kubelet()
    node.start_kubelet()  # it removes every socket of the device-plugin directory; the plugin registers again
    wait_until(lambda: "registering again" in plugin.log_text(), timeout=60, what="the plugin to re-register")
    wait_until(node.ready, timeout=60, what="the node Ready again")
    wait_allocatable(kube, node, ALIBABA_EPC, str(EPC_MIB))
    after = kube.get(f"/api/v1/namespaces/{node_namespace}/pods/holder")
    assert after["status"]["phase"] == "Running"
    (status,) = after["status"]["containerStatuses"]
    assert status["restartCount"] == 0
    assert status["containerID"] == before["status"]["containerStatuses"][0]["containerID"]
