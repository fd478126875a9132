"""EPC facts of Pods and Nodes: the Kubernetes effective request of the profile's EPC resource.

Pure functions over raw Kubernetes JSON (mappings as the API server sends them). The rules follow
``k8s.io/component-helpers/resource`` ``PodRequests`` / ``AggregateContainerRequests`` (KEP-753 for
native sidecars):

* app containers and native sidecars (init containers with ``restartPolicy: Always``) are summed;
* each regular init container needs its own request plus the sidecars started before it;
* the pod needs the larger of the two, plus ``spec.overhead``.

A container that sets only a limit gets a request equal to it: the API server's defaulting
(``SetDefaults_Pod`` in ``pkg/apis/core/v1/defaults.go``) copies limits into missing requests, so pods
read from the API already carry it; pods read from files (snapshots, ``simulate``) may not, so the same
rule is applied here. An unparseable quantity counts as 0 for that container (the API server would have
refused the pod; a snapshot file is not worth failing over it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confidential_pods.profiles import Profile
from confidential_pods.quantities import QuantityError

#: Pod phases after which a pod holds no resources on its node.
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True)
class PodEpc:
    """What the ledger keeps of a pod: who it is, where it runs, how much EPC it holds (bytes)."""

    uid: str
    namespace: str
    name: str
    node: str
    epc: int


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> Iterable[Any]:
    return value if isinstance(value, list | tuple) else ()


def _amount(resources: Mapping[str, Any], profile: Profile) -> int:
    if profile.epc_resource not in resources:
        return 0
    try:
        amount = profile.parse_resource(resources[profile.epc_resource])
    except QuantityError:
        return 0
    return max(amount, 0)


def container_request(container: Mapping[str, Any], profile: Profile) -> int:
    """A container's request of the EPC resource in bytes; the limit when only the limit is set."""
    resources = _mapping(container.get("resources"))
    requests = _mapping(resources.get("requests"))
    if profile.epc_resource in requests:
        return _amount(requests, profile)
    return _amount(_mapping(resources.get("limits")), profile)


def effective_epc(pod: Mapping[str, Any], profile: Profile) -> int:
    """The pod's effective EPC request in bytes (what the scheduler must find free on a node)."""
    spec = _mapping(pod.get("spec"))
    total = sum(container_request(_mapping(c), profile) for c in _sequence(spec.get("containers")))
    sidecars = 0
    init_peak = 0
    for raw in _sequence(spec.get("initContainers")):
        container = _mapping(raw)
        request = container_request(container, profile)
        if container.get("restartPolicy") == "Always":
            total += request
            sidecars += request
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, request + sidecars)
    return max(total, init_peak) + _amount(_mapping(spec.get("overhead")), profile)


def node_capacity(node: Mapping[str, Any], profile: Profile) -> int | None:
    """EPC a node offers (``status.allocatable``) in bytes; None when it has none (not an SGX node)."""
    allocatable = _mapping(_mapping(node.get("status")).get("allocatable"))
    if profile.epc_resource not in allocatable:
        return None
    try:
        capacity = profile.parse_resource(allocatable[profile.epc_resource])
    except QuantityError:
        return None
    return max(capacity, 0)


def pod_facts(pod: Mapping[str, Any], profile: Profile) -> PodEpc | None:
    """The ledger entry for a pod, or None when the pod holds no EPC on any node.

    None when the pod is not assigned (no ``spec.nodeName``), has finished (phase Succeeded or
    Failed) or requests no EPC.

    A terminating pod (``metadata.deletionTimestamp`` set) still counts until it is deleted or
    reaches a final phase: its enclave holds the EPC until its containers stop, kubelet's admission
    keeps counting it, and kube-scheduler's own cache does the same. Releasing it at the
    deletionTimestamp would let a new pod be bound into EPC that is still in use — and with
    ``ignoredByScheduler: true`` (the shipped scheduler configuration) no other check would stop it;
    kubelet would then reject the new pod at admission.
    """
    metadata = _mapping(pod.get("metadata"))
    spec = _mapping(pod.get("spec"))
    node = spec.get("nodeName")
    if not isinstance(node, str) or not node:
        return None
    if _mapping(pod.get("status")).get("phase") in TERMINAL_PHASES:
        return None
    epc = effective_epc(pod, profile)
    if epc <= 0:
        return None
    namespace = str(metadata.get("namespace") or "")
    name = str(metadata.get("name") or "")
    return PodEpc(uid=pod_uid(pod), namespace=namespace, name=name, node=node, epc=epc)


def pod_uid(pod: Mapping[str, Any]) -> str:
    """The pod's UID; ``namespace/name`` for pods written by hand (snapshot files) without one."""
    metadata = _mapping(pod.get("metadata"))
    uid = metadata.get("uid")
    if isinstance(uid, str) and uid:
        return uid
    return f"{metadata.get('namespace') or ''}/{metadata.get('name') or ''}"
