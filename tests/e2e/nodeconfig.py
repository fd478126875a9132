"""The files the e2e node's daemons read: containerd's config, the KubeletConfiguration, the CNI conflist.

Pure functions of paths (tests/e2e/test_node_offline.py checks them); :mod:`tests.e2e.node` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.harness import SERVICE_CLUSTER_IP_RANGE
from tests.machine import free_port

BRIDGE = "cpe2e0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = "10.244.0.1"
PREFIX_LENGTH = 24
#: RuntimeClass handlers the node's containerd runs with runc (the product's RuntimeClasses use them).
RUNTIME_HANDLERS = ("kata", "kata-qemu", "kata-clh", "runv")
CNI_BIN_DIR = Path("/usr/lib/cni")


def containerd_config(workdir: Path, sandbox_image: str) -> str:
    """containerd's config v2 for the node: everything under ``workdir``, the CRI as this machine needs it."""
    base = workdir / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    lines = [
        "version = 2",
        f"root = {json.dumps(str(base / 'root'))}",
        f"state = {json.dumps(str(base / 'state'))}",
        "[grpc]",
        f"  address = {json.dumps(str(base / 'containerd.sock'))}",
        "[ttrpc]",
        f"  address = {json.dumps(str(base / 'containerd.sock.ttrpc'))}",
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {json.dumps(str(base / 'opt'))}",
        f"[{cri}]",
        f"  sandbox_image = {json.dumps(sandbox_image)}",
        "  restrict_oom_score_adj = true  # the VM withholds CAP_SYS_RESOURCE",
        "  disable_apparmor = true",
        "  tolerate_missing_hugepages_controller = true",
        "  netns_mounts_under_state_dir = true",
        f"[{cri}.cni]",
        f"  bin_dir = {json.dumps(str(CNI_BIN_DIR))}",
        f"  conf_dir = {json.dumps(str(workdir / 'cni' / 'net.d'))}",
        "  max_conf_num = 1",
        f"[{cri}.containerd]",
        '  default_runtime_name = "runc"',
    ]
    for handler in ("runc", *RUNTIME_HANDLERS):
        lines += [
            f"[{cri}.containerd.runtimes.{json.dumps(handler)}]",
            '  runtime_type = "io.containerd.runc.v2"',
        ]
    return "\n".join(lines) + "\n"


def kubelet_config(client_ca: Path, containerd_socket: Path) -> dict[str, object]:
    """The KubeletConfiguration: cgroup v1 with cgroupfs, x509 + webhook auth, no eviction or image GC."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": free_port(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{containerd_socket}",
        "resolvConf": "",
        "localStorageCapacityIsolation": False,
        # The images cannot be pulled again: never collect them; no disk-pressure evictions on a CI disk.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "0%", "imagefs.available": "0%"},
    }


def cni_conflist(ipam_dir: Path) -> dict[str, object]:
    """bridge + host-local on :data:`BRIDGE`: no default route, no masquerading, no IP forwarding."""
    return {
        "cniVersion": "1.0.0",
        "name": "e2e",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    # The Service range via the node (test_on_node.py forwards the ``kubernetes`` Service's
                    # address there to the apiserver): the one route off the pod range.
                    "routes": [{"dst": SERVICE_CLUSTER_IP_RANGE, "gw": NODE_IP}],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }
