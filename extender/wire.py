"""Scheduler extender wire format (``k8s.io/kube-scheduler/extender/v1``): typed dicts and parsing.

The Go structs have no json tags, so the JSON keys are the Go field names (``Pod``, ``NodeNames``,
``FailedNodes``, ``Host``, ``Score`` ...). Pods and Nodes inside stay raw Kubernetes JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, TypedDict, TypeVar

from confidential_pods.errors import MalformedInput, shown
from confidential_pods.wire import decode_json, depth_exceeds
from extender.podepc import pod_priority
from extender.preemption import Victims

#: Highest score an extender may give (``MaxExtenderPriority``).
MAX_EXTENDER_PRIORITY = 10
#: Lowest score (``MinExtenderPriority``).
MIN_EXTENDER_PRIORITY = 0


class NodeList(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: dict[str, Any]
    items: list[dict[str, Any]]


class ExtenderArgs(TypedDict, total=False):
    """Body of ``/filter`` and ``/prioritize``: ``Nodes`` unless nodeCacheCapable, then ``NodeNames``."""

    Pod: dict[str, Any]
    Nodes: NodeList | None
    NodeNames: list[str] | None


class ExtenderFilterResult(TypedDict):
    Nodes: NodeList | None
    NodeNames: list[str] | None
    FailedNodes: dict[str, str]
    FailedAndUnresolvableNodes: dict[str, str]
    Error: str


class HostPriority(TypedDict):
    Host: str
    Score: int


class ExtenderBindingArgs(TypedDict, total=False):
    PodName: str
    PodNamespace: str
    PodUID: str
    Node: str


class ExtenderBindingResult(TypedDict):
    Error: str


class MetaPod(TypedDict, total=False):
    UID: str


class MetaVictims(TypedDict, total=False):
    """Victims of one candidate node, by UID (``nodeCacheCapable``; the answer always uses this)."""

    Pods: list[MetaPod]
    NumPDBViolations: int


class VictimPods(TypedDict, total=False):
    """Victims of one candidate node as whole Pods (without ``nodeCacheCapable``)."""

    Pods: list[dict[str, Any]]
    NumPDBViolations: int


class ExtenderPreemptionArgs(TypedDict, total=False):
    Pod: dict[str, Any]
    NodeNameToVictims: dict[str, VictimPods] | None
    NodeNameToMetaVictims: dict[str, MetaVictims] | None


class ExtenderPreemptionResult(TypedDict):
    NodeNameToMetaVictims: dict[str, MetaVictims]


class MalformedRequest(MalformedInput):
    """The body is not the extender request the endpoint expects: answered with HTTP 400."""


@dataclass(frozen=True)
class Candidates:
    """A parsed ``ExtenderArgs``: the pod and the nodes to judge, in the mode they came in.

    ``nodes`` is None in NodeNames mode (nodeCacheCapable); in Nodes mode it holds the NodeList items
    (to echo back unchanged) and ``node_list`` the list itself.
    """

    pod: Mapping[str, Any]
    names: tuple[str, ...]
    nodes: tuple[dict[str, Any], ...] | None = None
    node_list: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class BindRequest:
    """A parsed ``ExtenderBindingArgs``."""

    pod_name: str
    pod_namespace: str
    pod_uid: str
    node: str


#: Deepest nesting accepted in the Node objects echoed back in Nodes mode (a Node nests about 8 deep).
MAX_NODE_DEPTH = 64

T = TypeVar("T")


def go_struct(data: object, struct: type[T], name: str) -> T:
    """A JSON object read as Go's ``encoding/json`` reads it into a struct without json tags.

    The extender structs have no tags, so Go matches the object's keys to the field names exactly
    first and then case-insensitively (``{"pod": …}`` sets ``Pod``); a later key for the same field
    wins; unknown keys are ignored. A Go extender accepts all of that, and so does this one. The field
    names are the keys of the ``TypedDict`` ``struct``.
    """
    if not isinstance(data, dict):
        raise MalformedRequest(f"{name} must be a JSON object")
    names = frozenset(struct.__annotations__)
    folded = {field.casefold(): field for field in names}
    fields: dict[str, Any] = {}
    for key, value in data.items():
        field = key if key in names else folded.get(key.casefold())
        if field is not None:
            fields[field] = value
    return fields  # type: ignore[return-value]


#: Go's ``int64``, the type of ``NumPDBViolations`` in kube-scheduler's structs.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def go_int64(value: object, name: str) -> int:
    """A JSON value read as Go's ``encoding/json`` reads it into an ``int64`` field.

    ``null`` leaves the field at 0. Go takes only integer syntax within int64 (``strconv.ParseInt``):
    it refuses ``1.5``, ``1.0``, ``1e3`` and ``-0.0`` (which Python reads as floats), numbers past
    int64, booleans and strings. What Go refuses is refused here too: echoed back, it would fail
    kube-scheduler's decoding of the whole answer.
    """
    if value is None:
        return 0
    if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:  # bool is not int here
        raise MalformedRequest(f"{name} must be an integer within int64, not {shown(value)}")
    return value


def _decode(body: bytes, struct: type[T], name: str) -> T:
    try:
        data = decode_json(body)
    except MalformedInput as exc:
        raise MalformedRequest(str(exc)) from None
    return go_struct(data, struct, name)


def parse_extender_args(body: bytes) -> Candidates:
    """Decode an ``ExtenderArgs`` body. ``Nodes`` (when not null) wins over ``NodeNames``."""
    data = _decode(body, ExtenderArgs, "ExtenderArgs")
    pod = data.get("Pod")
    if not isinstance(pod, dict):
        raise MalformedRequest("ExtenderArgs.Pod must be a Pod object")
    for section in ("metadata", "spec"):
        if section in pod and pod[section] is not None and not isinstance(pod[section], dict):
            raise MalformedRequest(f"ExtenderArgs.Pod.{section} must be an object")
    node_list = data.get("Nodes")
    if node_list is not None:
        if not isinstance(node_list, dict):
            raise MalformedRequest("ExtenderArgs.Nodes must be a NodeList object")
        items = node_list.get("items") or []
        if not isinstance(items, list):
            raise MalformedRequest("ExtenderArgs.Nodes.items must be a list of Nodes")
        if depth_exceeds(node_list, MAX_NODE_DEPTH):  # echoed back: json.dumps must not recurse out
            raise MalformedRequest(f"ExtenderArgs.Nodes nests deeper than {MAX_NODE_DEPTH} levels")
        names = []
        for index, item in enumerate(items):
            metadata = item.get("metadata") if isinstance(item, dict) else None
            name = metadata.get("name") if isinstance(metadata, dict) else None
            if not isinstance(name, str) or not name:
                raise MalformedRequest(f"ExtenderArgs.Nodes.items[{index}] has no metadata.name")
            names.append(name)
        return Candidates(pod=pod, names=tuple(names), nodes=tuple(items), node_list=node_list)
    node_names = data.get("NodeNames")
    if node_names is None:
        raise MalformedRequest("ExtenderArgs needs Nodes or NodeNames")
    if not isinstance(node_names, list) or not set(map(type, node_names)) <= {str}:
        raise MalformedRequest("ExtenderArgs.NodeNames must be a list of node names")
    return Candidates(pod=pod, names=tuple(node_names))


def parse_binding_args(body: bytes) -> BindRequest:
    """Decode an ``ExtenderBindingArgs`` body; every field is a required non-empty string."""
    data = _decode(body, ExtenderBindingArgs, "ExtenderBindingArgs")
    values = {}
    for key in ("PodName", "PodNamespace", "PodUID", "Node"):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise MalformedRequest(f"ExtenderBindingArgs.{key} must be a non-empty string")
        values[key] = value
    return BindRequest(
        pod_name=values["PodName"],
        pod_namespace=values["PodNamespace"],
        pod_uid=values["PodUID"],
        node=values["Node"],
    )


def filter_result(
    candidates: Candidates,
    passed: frozenset[str] | set[str],
    failed: Mapping[str, str],
    unresolvable: Mapping[str, str],
) -> ExtenderFilterResult:
    """Build the answer in the mode the request came in (Nodes in → Nodes out, names → names)."""
    if candidates.nodes is not None:
        meta = candidates.node_list.get("metadata") if candidates.node_list is not None else None
        node_list: NodeList = {
            "apiVersion": "v1",
            "kind": "NodeList",
            "metadata": dict(meta) if isinstance(meta, dict) else {},
            "items": [
                node for node, name in zip(candidates.nodes, candidates.names, strict=True) if name in passed
            ],
        }
        return {
            "Nodes": node_list,
            "NodeNames": None,
            "FailedNodes": dict(failed),
            "FailedAndUnresolvableNodes": dict(unresolvable),
            "Error": "",
        }
    return {
        "Nodes": None,
        "NodeNames": [name for name in candidates.names if name in passed],
        "FailedNodes": dict(failed),
        "FailedAndUnresolvableNodes": dict(unresolvable),
        "Error": "",
    }


def filter_result_in_order(
    candidates: Candidates,
    passed: Sequence[str],
    failed: Mapping[str, str],
    unresolvable: Mapping[str, str],
) -> ExtenderFilterResult:
    """:func:`filter_result` when ``passed`` already lists the passing names in the order asked.

    In NodeNames mode that list is the answer as it is (no membership test per name).
    """
    if candidates.nodes is not None:
        return filter_result(candidates, frozenset(passed), failed, unresolvable)
    return {
        "Nodes": None,
        "NodeNames": list(passed),
        "FailedNodes": dict(failed),
        "FailedAndUnresolvableNodes": dict(unresolvable),
        "Error": "",
    }


class PrioritizeWriter:
    """Writes the ``/prioritize`` answer, ``[{"Host": name, "Score": n}, …]``, as compact JSON text.

    The same text ``json.dumps(..., separators=(",", ":"))`` gives for the list of HostPriority
    dicts, without building 5,000 dicts per call: each node name's ``{"Host":"<name>","Score":``
    is encoded once and kept (node names repeat on every scheduling cycle). The cache is bounded:
    it is emptied when it reaches ``max_names`` (names sent by hand or of deleted nodes do not pile
    up). Safe to share between threads (single dict operations only).
    """

    def __init__(self, max_names: int = 100_000) -> None:
        self._max_names = max_names
        self._heads: dict[str, str] = {}

    def write(self, names: Sequence[str], scores: Sequence[int]) -> str:
        """JSON of ``[{"Host": names[i], "Score": scores[i]}, …]``; both sequences have one entry per node."""
        if len(names) != len(scores):
            raise ValueError(f"{len(names)} names but {len(scores)} scores")
        try:
            return self._write(names, scores)
        except KeyError:
            pass
        self._learn(names)
        try:
            return self._write(names, scores)
        except KeyError:  # a score outside 0..10, or names evicted meanwhile by another thread
            return "[" + ",".join(map(_host_priority, names, scores)) + "]"

    def _write(self, names: Sequence[str], scores: Sequence[int]) -> str:
        heads = self._heads
        tails = _SCORE_TAILS
        return (
            "["
            + ",".join([heads[name] + tails[score] for name, score in zip(names, scores, strict=True)])
            + "]"
        )

    def _learn(self, names: Sequence[str]) -> None:
        heads = self._heads
        missing = {name for name in names if name not in heads}
        if len(heads) + len(missing) > self._max_names:
            heads.clear()
        for name in missing:
            heads[name] = '{"Host":' + encode_basestring_ascii(name) + ',"Score":'

    def __len__(self) -> int:
        return len(self._heads)


#: ``<score>}`` for every score an extender may give (a dict: a score outside 0..10 is a KeyError).
_SCORE_TAILS = {score: f"{score}}}" for score in range(MIN_EXTENDER_PRIORITY, MAX_EXTENDER_PRIORITY + 1)}


def _host_priority(name: str, score: int) -> str:
    entry: HostPriority = {"Host": name, "Score": score}
    return json.dumps(entry, separators=(",", ":"))


def error_filter_result(message: str) -> ExtenderFilterResult:
    """A filter answer that reports an error (kube-scheduler then fails this scheduling attempt)."""
    return {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": message,
    }


@dataclass(frozen=True)
class PreemptionRequest:
    """A parsed ``ExtenderPreemptionArgs``: the preemptor, and per candidate node its victims' UIDs."""

    pod: Mapping[str, Any]
    candidates: Mapping[str, Victims]


def parse_preemption_args(body: bytes) -> PreemptionRequest:
    """Decode an ``ExtenderPreemptionArgs`` body in either mode (``NodeNameToMetaVictims`` wins).

    Victims come as ``{"Pods": [{"UID": …}], "NumPDBViolations": n}`` with ``nodeCacheCapable``, else
    as whole Pods, from which their ``metadata.uid`` is taken. Go field names match case-insensitively.
    """
    data = _decode(body, ExtenderPreemptionArgs, "ExtenderPreemptionArgs")
    pod = data.get("Pod")
    if not isinstance(pod, dict):
        raise MalformedRequest("ExtenderPreemptionArgs.Pod must be a Pod object")
    meta = data.get("NodeNameToMetaVictims")
    whole = data.get("NodeNameToVictims")
    if meta is not None:
        return PreemptionRequest(pod, _victims_by_node(meta, "NodeNameToMetaVictims", MetaVictims, _meta_uid))
    if whole is not None:
        return PreemptionRequest(pod, _victims_by_node(whole, "NodeNameToVictims", VictimPods, _pod_uid))
    raise MalformedRequest("ExtenderPreemptionArgs needs NodeNameToMetaVictims or NodeNameToVictims")


def _victims_by_node(
    value: object, where: str, struct: type[Any], uid_of: Callable[[object, str], str]
) -> dict[str, Victims]:
    """Victims per node; whole Pods also give their priority (``Victims.priorities``)."""
    if not isinstance(value, dict):
        raise MalformedRequest(f"ExtenderPreemptionArgs.{where} must map node names to victims")
    found: dict[str, Victims] = {}
    for node, raw in value.items():
        key = f"{where}[{shown(node)}]"
        at = f"ExtenderPreemptionArgs.{key}"
        fields = go_struct(raw, struct, at)
        pods = fields.get("Pods")
        if pods is None:
            pods = []
        elif not isinstance(pods, list):
            raise MalformedRequest(f"{at}.Pods must be a list")
        violations = go_int64(fields.get("NumPDBViolations"), f"{at}.NumPDBViolations")
        uids = tuple(uid_of(p, f"{key}.Pods[{i}]") for i, p in enumerate(pods))
        priorities = (
            {uid: pod_priority(p) for uid, p in zip(uids, pods, strict=True)} if struct is VictimPods else {}
        )
        found[node] = Victims(uids=uids, pdb_violations=violations, priorities=priorities)
    return found


def _meta_uid(value: object, where: str) -> str:
    uid = go_struct(value, MetaPod, where).get("UID")
    if not isinstance(uid, str) or not uid:
        raise MalformedRequest(f"ExtenderPreemptionArgs.{where}.UID must be a non-empty string")
    return uid


def _pod_uid(value: object, where: str) -> str:
    metadata = value.get("metadata") if isinstance(value, dict) else None
    uid = metadata.get("uid") if isinstance(metadata, dict) else None
    if not isinstance(uid, str) or not uid:
        raise MalformedRequest(f"ExtenderPreemptionArgs.{where} has no metadata.uid")
    return uid


def preemption_result(kept: Mapping[str, Victims]) -> ExtenderPreemptionResult:
    """``ExtenderPreemptionResult``: the nodes kept, with their victims by UID."""
    return {
        "NodeNameToMetaVictims": {
            node: {"Pods": [{"UID": uid} for uid in victims.uids], "NumPDBViolations": victims.pdb_violations}
            for node, victims in kept.items()
        }
    }
