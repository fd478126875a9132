"""EPC of Pods and Nodes by Kubernetes' rules: one count for the webhook and the extender.

Pure functions over raw Kubernetes JSON (mappings as the API server sends them). The rules follow
``k8s.io/component-helpers/resource`` ``PodRequests`` / ``AggregateContainerRequests`` (KEP-753 for
native sidecars):

* app containers and native sidecars (init containers with ``restartPolicy: Always``) are summed;
* each regular init container needs its own request plus the sidecars started before it;
* the pod needs the larger of the two, plus ``spec.overhead``.

A container that sets only a limit gets a request equal to it: the API server's defaulting
(``SetDefaults_Pod`` in ``pkg/apis/core/v1/defaults.go``) copies limits into missing requests, so pods
read from the API already carry it; pods read from files (snapshots, ``simulate``) may not, so the same
rule is applied here.

Shapes are read leniently (a field of the wrong JSON type counts as absent: the webhook checks shapes
before it counts, and the API server's pods have the right ones). A quantity that cannot be read — not
the grammar, beyond int64, not a whole number of units — counts as 0 for that container or node, and is
described in ``unreadable`` when the caller passes a list: the extender's filter refuses such a pod, and
the ledger reports it (see docs/extender.md, "Unreadable quantities").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confidential_pods.errors import QuantityError
from confidential_pods.profiles import Profile
from confidential_pods.wire import mapping, sequence


def _amount(
    resources: Mapping[str, Any], profile: Profile, unreadable: list[str] | None, *where: object
) -> int:
    """``resources[epc_resource]`` in bytes (0 when absent or unreadable). ``where`` names the field,
    joined only when a value is unreadable: the common path builds no strings."""
    if profile.epc_resource not in resources:
        return 0
    try:
        amount = profile.parse_resource(resources[profile.epc_resource])
    except QuantityError as exc:
        if unreadable is not None:
            unreadable.append(f"{''.join(map(str, where))}[{profile.epc_resource}]: {exc}")
        return 0
    return max(amount, 0)


def container_request(
    container: Mapping[str, Any], profile: Profile, unreadable: list[str] | None = None, *where: object
) -> int:
    """A container's request of the EPC resource in bytes; the limit when only the limit is set."""
    resources = mapping(container.get("resources"))
    requests = mapping(resources.get("requests"))
    if profile.epc_resource in requests:
        return _amount(requests, profile, unreadable, *where, ".resources.requests")
    return _amount(mapping(resources.get("limits")), profile, unreadable, *where, ".resources.limits")


def effective_epc(pod: Mapping[str, Any], profile: Profile, unreadable: list[str] | None = None) -> int:
    """The pod's effective EPC request in bytes (what the scheduler must find free on a node).

    ``unreadable``: where given, each quantity that could not be read (and so counted 0) is described
    in it, naming the field and the value.
    """
    spec = mapping(pod.get("spec"))
    total = 0
    for index, container in enumerate(sequence(spec.get("containers"))):
        total += container_request(mapping(container), profile, unreadable, "spec.containers[", index, "]")
    sidecars = 0
    init_peak = 0
    for index, raw in enumerate(sequence(spec.get("initContainers"))):
        container = mapping(raw)
        request = container_request(container, profile, unreadable, "spec.initContainers[", index, "]")
        if container.get("restartPolicy") == "Always":
            total += request
            sidecars += request
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, request + sidecars)
    return max(total, init_peak) + _amount(
        mapping(spec.get("overhead")), profile, unreadable, "spec.overhead"
    )


def node_capacity(
    node: Mapping[str, Any], profile: Profile, unreadable: list[str] | None = None
) -> int | None:
    """EPC a node offers (``status.allocatable``) in bytes; None when it has none (not an SGX node).

    An unreadable allocatable counts as no EPC (and is described in ``unreadable`` where given).
    """
    allocatable = mapping(mapping(node.get("status")).get("allocatable"))
    if profile.epc_resource not in allocatable:
        return None
    try:
        capacity = profile.parse_resource(allocatable[profile.epc_resource])
    except QuantityError as exc:
        if unreadable is not None:
            unreadable.append(f"status.allocatable[{profile.epc_resource}]: {exc}")
        return None
    return max(capacity, 0)
