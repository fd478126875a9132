"""ExtenderArgs and the objects in them, shaped as kube-scheduler sends them.

What the apiserver adds to every pod (owner reference, default toleration, container defaults) comes from
:mod:`tests.webhook.samples`.

kube-scheduler marshals Go structs without json tags: keys are Go field names (``Pod``, ``Nodes``,
``NodeNames``). Exactly one of ``Nodes`` / ``NodeNames`` is set, the other is ``null``; a NodeList it
builds itself has empty TypeMeta (no apiVersion/kind) and ``"metadata": {}``.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from tests.webhook.samples import CONTAINER_DEFAULTS, no_execute_toleration, replica_set_owner

RESOURCE = "alibabacloud.com/sgx_epc_MiB"


def node(name: str, epc_mib: int | None, *, resource: str = RESOURCE) -> dict[str, Any]:
    """A Node as the API server serves it (and kube-scheduler forwards it)."""
    allocatable = {
        "cpu": "31800m",
        "ephemeral-storage": "114396791822",
        "memory": "126208436Ki",
        "pods": "110",
    }
    capacity = {"cpu": "32", "ephemeral-storage": "123722704Ki", "memory": "130694772Ki", "pods": "110"}
    if epc_mib is not None:
        allocatable[resource] = str(epc_mib)
        capacity[resource] = str(epc_mib)
    return {
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "resourceVersion": "918273",
            "creationTimestamp": "2026-11-02T08:15:30Z",
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "ecs.g7t.8xlarge" if epc_mib else "ecs.g7.2xlarge",
                "topology.kubernetes.io/zone": "cn-hangzhou-k",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": "172.20.1.0/24", "providerID": f"cn-hangzhou.i-{name[-6:]}"},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastHeartbeatTime": "2026-11-26T23:00:00Z",
                    "lastTransitionTime": "2026-11-02T08:16:10Z",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "10.0.1.11"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "machineID": "20240201153012345678901234567890",
                "systemUUID": "3f2a1b7c-0d4e-4f6a-9b8c-7d6e5f4a3b2c",
                "bootID": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
                "kernelVersion": "5.10.134-16.3.al8.x86_64",
                "osImage": "Alibaba Cloud Linux 3.2104 U10 (OpenAnolis Edition)",
                "kubeProxyVersion": "v1.31.1-aliyun.1",
                "kubeletVersion": "v1.31.1-aliyun.1",
                "containerRuntimeVersion": "containerd://1.6.28",
                "architecture": "amd64",
                "operatingSystem": "linux",
            },
        },
    }


def pod(
    name: str = "enclave-7d9f-abcde",
    *,
    namespace: str = "payments",
    epc_mib: int = 64,
    uid: str | None = None,
    node_name: str | None = None,
    phase: str = "Pending",
    resource: str = RESOURCE,
) -> dict[str, Any]:
    """A pod after admission (defaults applied, EPC injected), as the scheduler sees it."""
    limits: dict[str, Any] = {"cpu": "1", "memory": "2Gi"}
    requests: dict[str, Any] = {"cpu": "1", "memory": "2Gi"}
    if epc_mib:
        limits[resource] = str(epc_mib)
        requests[resource] = str(epc_mib)
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "app",
                "image": "registry.example.com/payments/tokenizer:1.4.2",
                "resources": {"limits": limits, "requests": requests},
                **CONTAINER_DEFAULTS,
            }
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "runtimeClassName": "kata",
        "overhead": {"cpu": "250m", "memory": "160Mi"},
        "tolerations": [no_execute_toleration("not-ready")],
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    if node_name:
        spec["nodeName"] = node_name
    return {
        "metadata": {
            "name": name,
            "generateName": name.rsplit("-", 1)[0] + "-",
            "namespace": namespace,
            "uid": uid or str(uuid.uuid4()),
            "resourceVersion": "1200345",
            "creationTimestamp": "2026-11-26T23:40:01Z",
            "labels": {"app": "tokenizer", "pod-template-hash": "7d9f"},
            "annotations": {"confidential-pods.io/confidential": "true"},
            "ownerReferences": [replica_set_owner("tokenizer-7d9f", "5e0b1f0e-3a6f-4c47-9a43-1c2b8d6e0f11")],
        },
        "spec": spec,
        "status": {"phase": phase, "qosClass": "Guaranteed"},
    }


def args_with_names(the_pod: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """ExtenderArgs from a nodeCacheCapable extender config."""
    return {"Pod": copy.deepcopy(the_pod), "Nodes": None, "NodeNames": list(names)}


def args_with_nodes(the_pod: dict[str, Any], nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """ExtenderArgs without nodeCacheCapable: whole Node objects in a NodeList."""
    return {
        "Pod": copy.deepcopy(the_pod),
        "Nodes": {"metadata": {}, "items": copy.deepcopy(nodes)},
        "NodeNames": None,
    }


def binding_args(the_pod: dict[str, Any], node_name: str) -> dict[str, Any]:
    return {
        "PodName": the_pod["metadata"]["name"],
        "PodNamespace": the_pod["metadata"]["namespace"],
        "PodUID": the_pod["metadata"]["uid"],
        "Node": node_name,
    }


def preemption_args(
    the_pod: dict[str, Any], victims: dict[str, list[str]], *, pdb_violations: Any = 0
) -> dict[str, Any]:
    """ExtenderPreemptionArgs from a nodeCacheCapable extender config: per candidate node, the victims'
    UIDs (``NodeNameToMetaVictims``; ``NodeNameToVictims`` is null)."""
    return {
        "Pod": copy.deepcopy(the_pod),
        "NodeNameToVictims": None,
        "NodeNameToMetaVictims": {
            node: {"Pods": [{"UID": uid} for uid in uids], "NumPDBViolations": pdb_violations}
            for node, uids in victims.items()
        },
    }


def preemption_args_with_pods(
    the_pod: dict[str, Any], victims: dict[str, list[dict[str, Any]]], *, pdb_violations: int = 0
) -> dict[str, Any]:
    """ExtenderPreemptionArgs without nodeCacheCapable: the victims as whole Pods (``NodeNameToVictims``)."""
    return {
        "Pod": copy.deepcopy(the_pod),
        "NodeNameToVictims": {
            node: {"Pods": copy.deepcopy(pods), "NumPDBViolations": pdb_violations}
            for node, pods in victims.items()
        },
        "NodeNameToMetaVictims": None,
    }
