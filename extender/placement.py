"""kube-scheduler's own node filters that ``simulate`` applies before asking the extender (pure).

The extender only sees the nodes kube-scheduler's filter plugins left; ``simulate`` runs the plugins that
decide most placements, with the scheduler's semantics (``k8s.io/component-helpers/scheduling/corev1``,
``k8s.io/api/core/v1`` ``Toleration.ToleratesTaint``), in the scheduler's order, first refusal wins:

1. NodeUnschedulable: a cordoned node (``spec.unschedulable``) takes only pods that tolerate the taint
   ``node.kubernetes.io/unschedulable:NoSchedule``;
2. TaintToleration: every ``NoSchedule`` and ``NoExecute`` taint must be tolerated (``PreferNoSchedule``
   only lowers a score);
3. NodeAffinity: ``spec.nodeSelector`` (every label equal) and the required node affinity
   (``nodeSelectorTerms`` ORed; within a term every ``matchExpressions`` and ``matchFields`` requirement
   ANDed; a term that cannot be read, or has no requirement, matches nothing).

What the scheduler checks besides (CPU and memory, pod affinity, topology spread, ports…) is not modelled:
:func:`unmodelled` names it for the report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confidential_pods.documents import printable
from confidential_pods.wire import mapping

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
#: Taint effects the TaintToleration filter enforces.
FILTERED_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
#: What the DaemonSet controller adds to every daemon pod (``AddOrUpdateDaemonPodTolerations``): a daemon
#: pod runs on cordoned, not-ready and pressured nodes.
DAEMON_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"},
)
#: The only field a ``matchFields`` requirement may name.
NODE_NAME_FIELD = "metadata.name"
#: strconv.ParseInt(s, 10, 64): what Gt and Lt compare.
_INT64 = re.compile(r"[+-]?[0-9]{1,19}")


class PlacementError(ValueError):
    """A pod's scheduling fields cannot be read (the message names the field)."""


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return (
            f"{{{self.key}: {self.value}}} ({self.effect})" if self.value else f"{self.key} ({self.effect})"
        )


@dataclass(frozen=True)
class NodeFacts:
    """What the filters read of a Node."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Term:
    """One ``nodeSelectorTerm``: its label requirements and its field requirements."""

    expressions: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()


@dataclass(frozen=True)
class PodConstraints:
    """What the filters read of a Pod. ``terms`` None: no required node affinity."""

    node_selector: Mapping[str, str] = field(default_factory=dict)
    terms: tuple[Term, ...] | None = None
    tolerations: tuple[Mapping[str, Any], ...] = ()


def node_facts(node: Mapping[str, Any]) -> NodeFacts:
    """A Node's name, labels, taints and cordon (fields of another type are left out: the API server
    never stores them)."""
    metadata, spec = mapping(node.get("metadata")), mapping(node.get("spec"))
    labels = {k: v for k, v in mapping(metadata.get("labels")).items() if isinstance(v, str)}
    taints = tuple(
        Taint(str(t.get("key") or ""), str(t.get("value") or ""), str(t.get("effect") or ""))
        for t in _list(spec.get("taints"))
        if isinstance(t, dict)
    )
    return NodeFacts(str(metadata.get("name") or ""), labels, taints, spec.get("unschedulable") is True)


def pod_constraints(pod: Mapping[str, Any]) -> PodConstraints:
    """The pod's nodeSelector, required node affinity and tolerations; :class:`PlacementError` names a
    field of the wrong type."""
    spec = mapping(pod.get("spec"))
    selector = _string_map(spec.get("nodeSelector"), "spec.nodeSelector")
    tolerations = tuple(_objects(spec.get("tolerations"), "spec.tolerations"))
    affinity = _object(_object(spec.get("affinity"), "spec.affinity").get("nodeAffinity"), "nodeAffinity")
    where = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    terms = None
    if required is not None:
        listed = _object(required, where).get("nodeSelectorTerms")
        terms = tuple(
            _term(t, f"{where}.nodeSelectorTerms[{i}]") for i, t in enumerate(_objects(listed, where))
        )
    return PodConstraints(selector, terms, tolerations)


def refusal(pod: PodConstraints, node: NodeFacts) -> str | None:
    """Why kube-scheduler's filters refuse ``node`` for the pod (the first that does), or None."""
    if node.unschedulable and not any(
        tolerates(t, Taint(UNSCHEDULABLE_TAINT, "", "NoSchedule")) for t in pod.tolerations
    ):
        return "node is cordoned (spec.unschedulable)"
    taint = untolerated(node.taints, pod.tolerations)
    if taint is not None:
        return f"node has a taint the pod does not tolerate: {printable(str(taint))}"
    for key, value in pod.node_selector.items():
        if node.labels.get(key) != value:
            return f"node does not match the pod's nodeSelector ({printable(key)}={printable(value)})"
    if pod.terms is not None and not any(matches(term, node) for term in pod.terms):
        return "node does not match the pod's required node affinity"
    return None


def tolerates(toleration: Mapping[str, Any], taint: Taint) -> bool:
    """``Toleration.ToleratesTaint``: an empty effect matches every effect, an empty key every key (with
    ``Exists``); ``Equal`` (or no operator) compares values; any other operator tolerates nothing."""
    effect, key = toleration.get("effect") or "", toleration.get("key") or ""
    if effect and effect != taint.effect:
        return False
    if key and key != taint.key:
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Equal":
        return (toleration.get("value") or "") == taint.value
    return operator == "Exists"


def untolerated(taints: Iterable[Taint], tolerations: Iterable[Mapping[str, Any]]) -> Taint | None:
    """The first ``NoSchedule``/``NoExecute`` taint no toleration tolerates."""
    listed = tuple(tolerations)
    for taint in taints:
        if taint.effect in FILTERED_EFFECTS and not any(tolerates(t, taint) for t in listed):
            return taint
    return None


def matches(term: Term, node: NodeFacts) -> bool:
    """Whether a node selector term selects the node (a term without requirements selects nothing)."""
    if not term.expressions and not term.fields:
        return False
    return all(_label_matches(r, node.labels) for r in term.expressions) and all(
        _field_matches(r, node.name) for r in term.fields
    )


def _label_matches(requirement: Requirement, labels: Mapping[str, str]) -> bool:
    """``labels.Requirement.Matches``; a requirement the API would refuse (In without values, Gt with two)
    matches nothing, as its term is then dropped by the scheduler."""
    op, values, present = requirement.operator, requirement.values, requirement.key in labels
    value = labels.get(requirement.key, "")
    if op in ("In", "NotIn"):
        if not values:
            return False
        return (present and value in values) if op == "In" else not (present and value in values)
    if op in ("Exists", "DoesNotExist"):
        return not values and (present if op == "Exists" else not present)
    if op in ("Gt", "Lt"):
        if len(values) != 1 or not present:
            return False
        bound, actual = _int64(values[0]), _int64(value)
        if bound is None or actual is None:
            return False
        return actual > bound if op == "Gt" else actual < bound
    return False


def _field_matches(requirement: Requirement, name: str) -> bool:
    """``matchFields``: only ``metadata.name``, In or NotIn with exactly one value."""
    if requirement.key != NODE_NAME_FIELD or len(requirement.values) != 1:
        return False
    if requirement.operator == "In":
        return name == requirement.values[0]
    return requirement.operator == "NotIn" and name != requirement.values[0]


def _int64(text: str) -> int | None:
    if not _INT64.fullmatch(text):
        return None
    number = int(text)
    return number if -(2**63) <= number < 2**63 else None


def unmodelled(pod: Mapping[str, Any], epc_like: Iterable[str] = ("sgx",)) -> tuple[str, ...]:
    """What kube-scheduler checks of ``pod`` that ``simulate`` does not (names for the report)."""
    spec = mapping(pod.get("spec"))
    containers = [mapping(c) for part in ("initContainers", "containers") for c in _list(spec.get(part))]
    found: list[str] = []
    resources = sorted(
        {
            str(name)
            for c in containers
            for kind in ("requests", "limits")
            for name in mapping(mapping(c.get("resources")).get(kind))
            if not any(marker in str(name) for marker in epc_like)
        }
    )
    if resources:
        found.append(f"resources {', '.join(resources)}")
    affinity = mapping(spec.get("affinity"))
    if mapping(affinity.get("nodeAffinity")).get("preferredDuringSchedulingIgnoredDuringExecution"):
        found.append("preferred node affinity")
    found += [text for key, text in _AFFINITIES if affinity.get(key)]
    if spec.get("topologySpreadConstraints"):
        found.append("topology spread constraints")
    if any(mapping(port).get("hostPort") for c in containers for port in _list(c.get("ports"))):
        found.append("host ports")
    if spec.get("runtimeClassName"):
        found.append("RuntimeClass scheduling (its nodeSelector and tolerations)")
    return tuple(found)


_AFFINITIES = (("podAffinity", "pod affinity"), ("podAntiAffinity", "pod anti-affinity"))


# --- reading the pod's fields -----------------------------------------------------------------------


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _object(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PlacementError(f"{where} must be an object")
    return value


def _objects(value: object, where: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PlacementError(f"{where} must be a list")
    return [_object(item, f"{where}[{index}]") for index, item in enumerate(value)]


def _string_map(value: object, where: str) -> dict[str, str]:
    found = _object(value, where)
    for key, item in found.items():
        if not isinstance(item, str):
            raise PlacementError(f"{where}.{printable(str(key))} must be a string")
    return dict(found)


def _term(term: Mapping[str, Any], where: str) -> Term:
    return Term(
        tuple(
            _requirement(r, f"{where}.matchExpressions")
            for r in _objects(term.get("matchExpressions"), where)
        ),
        tuple(_requirement(r, f"{where}.matchFields") for r in _objects(term.get("matchFields"), where)),
    )


def _requirement(requirement: Mapping[str, Any], where: str) -> Requirement:
    key, operator, values = requirement.get("key"), requirement.get("operator"), requirement.get("values")
    if not isinstance(key, str) or not isinstance(operator, str):
        raise PlacementError(f"{where}: key and operator must be strings")
    if values is not None and (not isinstance(values, list) or not all(isinstance(v, str) for v in values)):
        raise PlacementError(f"{where}: values must be a list of strings")
    return Requirement(key, operator, tuple(values or ()))
