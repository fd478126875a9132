"""Scheduler extender wire format (``k8s.io/kube-scheduler/extender/v1``): typed dicts and parsing.

The Go structs have no json tags, so the JSON keys are the Go field names (``Pod``, ``NodeNames``,
``FailedNodes``, ``Host``, ``Score`` ...). Pods and Nodes inside stay raw Kubernetes JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

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


class ExtenderBindingArgs(TypedDict):
    PodName: str
    PodNamespace: str
    PodUID: str
    Node: str


class ExtenderBindingResult(TypedDict):
    Error: str


class MalformedRequest(ValueError):
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


def _decode(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedRequest("body must be a JSON object")
    return data


def parse_extender_args(body: bytes) -> Candidates:
    """Decode an ``ExtenderArgs`` body. ``Nodes`` (when not null) wins over ``NodeNames``."""
    data = _decode(body)
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
    data = _decode(body)
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


def error_filter_result(message: str) -> ExtenderFilterResult:
    """A filter answer that reports an error (kube-scheduler then fails this scheduling attempt)."""
    return {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": message,
    }
