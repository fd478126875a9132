"""Workloads as the pods their controllers would create, for ``simulate`` (pure).

A Deployment, ReplicaSet, ReplicationController or StatefulSet becomes ``spec.replicas`` pods (default 1);
a Job ``spec.parallelism`` pods (default 1, at most ``spec.completions``, none while suspended), a CronJob
one run of its Job; a DaemonSet one pod per node its template may run on (the DaemonSet controller's own
test: required node affinity, nodeSelector and taints, with the tolerations it adds to every daemon pod),
each pinned to its node by ``matchFields`` as the controller pins it. Pods are named ``<name>-<index>``
(StatefulSet names; the other controllers would add random suffixes).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confidential_pods.wire import POD_TEMPLATES, mapping
from extender.placement import (
    DAEMON_TOLERATIONS,
    NODE_NAME_FIELD,
    NodeFacts,
    PlacementError,
    pod_constraints,
    refusal,
)

#: The field that says how many pods run at once, per kind (DaemonSet: one per eligible node).
_COUNTS = {
    "Deployment": "replicas",
    "StatefulSet": "replicas",
    "ReplicaSet": "replicas",
    "ReplicationController": "replicas",
    "Job": "parallelism",
    "CronJob": "parallelism",
}


@dataclass(frozen=True)
class Expansion:
    """The pods of one workload (or the pod itself), and how their number was decided."""

    pods: tuple[dict[str, Any], ...]
    #: ``Deployment ml/web``; "" for a Pod.
    origin: str = ""
    #: ``3 replicas``, ``one per eligible node (2 of 5)``; or why the workload gives no pod.
    how: str = ""


def expand(obj: Mapping[str, Any], nodes: Iterable[NodeFacts]) -> Expansion:
    """The pods ``obj`` stands for: itself for a Pod, its controller's pods for a workload."""
    kind = str(obj.get("kind"))
    if kind == "Pod":
        return Expansion((dict(obj),))
    metadata = mapping(obj.get("metadata"))
    namespace, name = str(metadata.get("namespace") or "default"), str(metadata.get("name") or "")
    origin = f"{kind} {namespace}/{name}"
    path = POD_TEMPLATES[kind]
    template: Any = obj
    for part in path:
        template = mapping(template).get(part)
    if not isinstance(template, dict):
        return Expansion((), origin, f"no pod template at {'.'.join(path)}")
    if kind == "DaemonSet":
        return _daemon_pods(template, namespace, name, origin, nodes)
    count, how = _count(kind, obj)
    pods = tuple(_pod(template, namespace, f"{name}-{index}") for index in range(count))
    return Expansion(pods, origin, how)


def _count(kind: str, obj: Mapping[str, Any]) -> tuple[int, str]:
    spec = mapping(obj.get("spec"))
    if kind == "CronJob":
        spec = mapping(mapping(spec.get("jobTemplate")).get("spec"))
    key = _COUNTS[kind]
    count = _whole(spec.get(key), 1)
    how = f"{key} {count}" if key in spec else f"{key} {count} (default)"
    if kind in ("Job", "CronJob"):
        completions = spec.get("completions")
        if completions is not None and _whole(completions, 1) < count:
            count = _whole(completions, 1)
            how = f"completions {count}"
        if spec.get("suspend") is True:
            count, how = 0, "suspended"
        if kind == "CronJob":
            how += ", one run"
    return count, how


def _whole(value: object, default: int) -> int:
    """A count as the API server stores it (int32, not negative); anything else: the default."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        return default
    return min(value, _MAX_PODS)


#: At most this many pods per workload are placed (a typo of 100000 replicas should not run for minutes).
_MAX_PODS = 1000


def _pod(template: Mapping[str, Any], namespace: str, name: str) -> dict[str, Any]:
    """The pod a controller creates from ``template``: its metadata and spec, in the workload's namespace."""
    metadata = copy.deepcopy(dict(mapping(template.get("metadata"))))
    metadata.pop("generateName", None)
    metadata.update(name=name, namespace=namespace)
    spec = copy.deepcopy(dict(mapping(template.get("spec"))))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _daemon_pods(
    template: Mapping[str, Any], namespace: str, name: str, origin: str, nodes: Iterable[NodeFacts]
) -> Expansion:
    listed = tuple(nodes)
    base = _pod(template, namespace, name)
    spec = base["spec"]
    tolerations = list(spec.get("tolerations") or []) if isinstance(spec.get("tolerations"), list) else []
    spec["tolerations"] = tolerations + [dict(t) for t in DAEMON_TOLERATIONS if t not in tolerations]
    try:
        constraints = pod_constraints(base)
    except PlacementError as exc:
        return Expansion((), origin, f"its pod template cannot be read: {exc}")
    eligible = [node.name for node in listed if refusal(constraints, node) is None]
    pods = tuple(_pinned(base, f"{name}-{index}", node) for index, node in enumerate(eligible))
    return Expansion(pods, origin, f"one per eligible node, {len(eligible)} of {len(listed)}")


def _pinned(base: Mapping[str, Any], name: str, node: str) -> dict[str, Any]:
    """The daemon pod for ``node``: the controller replaces the required node affinity's terms with one
    that names the node (``ReplaceDaemonSetPodNodeNameNodeAffinity``)."""
    pod = copy.deepcopy(dict(base))
    pod["metadata"]["name"] = name
    term = {"matchFields": [{"key": NODE_NAME_FIELD, "operator": "In", "values": [node]}]}
    affinity = pod["spec"].setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {}) if isinstance(affinity, dict) else {}
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [term]}
    return pod
