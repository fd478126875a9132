"""Snapshot files: Nodes and Pods from a v1 List or multi-document YAML/JSON, for clusterless use.

One loader for ``extender serve --snapshot`` and ``simulate``: the file is read by the kit's
document reader (:mod:`confidential_pods.documents`: JSON first, libyaml, bounded alias expansion,
bounded nesting) and reduced at once to its facts (:class:`SnapshotFacts`): node capacities, the pods
holding EPC, and every pod's UID, EPC and node for a bind. The parsed objects are not kept (at 5,000
nodes and 50,000 pods they would take gigabytes). Assigned pods (``spec.nodeName`` set) are running
pods that hold EPC; the others are pending pods waiting to be placed (by ``simulate``, or bound through
``/bind``).

A quantity that cannot be read (a node's allocatable, a pod's request) counts as no EPC and is listed
in :attr:`SnapshotFacts.unreadable`, which both commands report.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confidential_pods.documents import load_documents, printable, read_text
from confidential_pods.epc import node_capacity
from confidential_pods.errors import MalformedInput
from confidential_pods.profiles import PROFILES, Profile
from confidential_pods.wire import POD_TEMPLATES, mapping
from extender.binding import KnownPod
from extender.ledger import EpcLedger
from extender.placement import NodeFacts, node_facts
from extender.podepc import PodEpc, pod_facts
from extender.readiness import Readiness, node_readiness

_LIST_KINDS = {"List", "NodeList", "PodList"}


class SnapshotError(MalformedInput):
    """A snapshot file cannot be read or holds something that is not a Node, Pod or list of them."""


@dataclass
class SnapshotFacts:
    """What a snapshot is reduced to: the ledger's content and what a bind or a placement needs.

    ``capacities``: EPC of every node (None without EPC). ``assigned``: the ledger entries of the pods
    holding EPC. ``pods``: every pod's UID, EPC and node by ``namespace/name``, in file order (a pod
    with no node is pending). ``unreadable``: quantities that could not be read, with where they were.
    """

    capacities: dict[str, int | None] = field(default_factory=dict)
    assigned: list[PodEpc] = field(default_factory=list)
    pods: dict[str, KnownPod] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    #: The pending pods and workloads as raw JSON, in file order: kept only when asked (``simulate``
    #: places them).
    pending: list[dict[str, Any]] = field(default_factory=list)
    #: Kept with the pending pods: what the scheduler's filters read of each node,
    nodes: dict[str, NodeFacts] = field(default_factory=dict)
    #: the labels of the Namespaces in the files,
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    #: and the EPC resources of every profile each node advertises (a hint when none is the profile's).
    advertised: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Each node's SGXAttestationReady condition, where it has one (extender/readiness.py).
    readiness: dict[str, Readiness] = field(default_factory=dict)

    def __add__(self, other: SnapshotFacts) -> SnapshotFacts:
        return SnapshotFacts(
            capacities={**self.capacities, **other.capacities},
            assigned=self.assigned + other.assigned,
            pods={**self.pods, **other.pods},
            unreadable=self.unreadable + other.unreadable,
            pending=self.pending + other.pending,
            nodes={**self.nodes, **other.nodes},
            namespaces={**self.namespaces, **other.namespaces},
            readiness={**self.readiness, **other.readiness},
            advertised={**self.advertised, **other.advertised},
        )


def snapshot_facts(
    text: str, profile: Profile, source: str = "snapshot", *, keep_pending: bool = False
) -> SnapshotFacts:
    """Parse a snapshot's text (JSON or multi-document YAML) and keep only its facts (and, with
    ``keep_pending``, the pending pods as they are)."""
    try:
        documents = load_documents(text, source)
    except MalformedInput as exc:
        raise SnapshotError(str(exc)) from None
    return facts_of(_kubernetes_objects(documents, source), profile, keep_pending=keep_pending)


def load_snapshot_facts(
    path: str | os.PathLike[str], profile: Profile, *, keep_pending: bool = False
) -> SnapshotFacts:
    """Read a snapshot file and keep only its facts (:func:`snapshot_facts`)."""
    name = os.fspath(path)
    try:
        text = read_text(name, "snapshot")
    except MalformedInput as exc:
        raise SnapshotError(str(exc)) from None
    return snapshot_facts(text, profile, name, keep_pending=keep_pending)


def facts_of(
    objects: Iterable[tuple[str, dict[str, Any]]],
    profile: Profile,
    *,
    keep_pending: bool = False,
) -> SnapshotFacts:
    """Reduce checked Nodes and Pods to their facts.

    The facts are first written down as one compact JSON text while the parsed objects are freed,
    then read back: the objects kept are then allocated after the parsed file is gone. Kept directly,
    the strings they share with the parsed objects (names, UIDs) would pin most of the memory pages
    the parse used (measured: 200 MB instead of about 100 MB of RSS at 50,000 pods).
    """
    nodes: list[tuple[str, int | None]] = []
    pods: list[tuple[str, str, str, int, str, str, tuple[str, str, int, int] | None]] = []
    unreadable: list[str] = []
    pending: list[dict[str, Any]] = []
    kept = SnapshotFacts(pending=pending)  # what only simulate keeps
    for kind, obj in objects:
        if kind == "Node":
            found: list[str] = []
            nodes.append((_name(obj), node_capacity(obj, profile, found)))
            if (readiness := node_readiness(obj)) is not None:
                kept.readiness[_name(obj)] = readiness
            unreadable.extend(f"Node {printable(_name(obj))} {problem}" for problem in found)
            if keep_pending:
                _keep_node(kept, obj)
            continue
        if kind != "Pod":
            if keep_pending and kind == "Namespace":
                labels = mapping(mapping(obj.get("metadata")).get("labels"))
                kept.namespaces[_name(obj)] = {k: v for k, v in labels.items() if isinstance(v, str)}
            elif keep_pending:
                pending.append(obj)  # a workload: simulate places its pods
            continue
        known = KnownPod.of(obj, profile)
        held = pod_facts(obj, profile, epc=known.epc)  # the EPC counted once
        row = None if held is None else (held.uid, held.node, held.epc, held.priority)
        pods.append((_namespace(obj), _name(obj), known.uid, known.epc, known.node, known.unreadable, row))
        if known.unreadable:
            unreadable.append(f"Pod {printable(_namespace(obj))}/{printable(_name(obj))} {known.unreadable}")
        if keep_pending and not known.node:
            pending.append(obj)
    packed = json.dumps([nodes, pods], separators=(",", ":"))
    del nodes, pods
    packed_nodes, packed_pods = json.loads(packed)
    del packed
    facts = SnapshotFacts(
        capacities=dict(packed_nodes),
        unreadable=unreadable,
        pending=pending,
        nodes=kept.nodes,
        namespaces=kept.namespaces,
        advertised=kept.advertised,
        readiness=kept.readiness,
    )
    intern = sys.intern  # 50,000 pods share a few namespaces and 5,000 node names
    for namespace, name, uid, epc, node, problem, held_row in packed_pods:
        namespace = intern(namespace)
        facts.pods[f"{namespace}/{name}"] = KnownPod(uid=uid, epc=epc, node=intern(node), unreadable=problem)
        if held_row is not None:
            held_uid, held_node, held_epc, held_priority = held_row
            facts.assigned.append(
                PodEpc(
                    uid=held_uid,
                    namespace=namespace,
                    name=name,
                    node=intern(held_node),
                    epc=held_epc,
                    priority=held_priority,
                )
            )
    return facts


#: Every profile's EPC resource.
_EPC_RESOURCES = tuple(sorted({p.epc_resource for p in PROFILES.values()}))


def _keep_node(kept: SnapshotFacts, node: dict[str, Any]) -> None:
    facts = node_facts(node)
    kept.nodes[facts.name] = facts
    allocatable = mapping(mapping(node.get("status")).get("allocatable"))
    offered = tuple(r for r in _EPC_RESOURCES if r in allocatable)
    if offered:
        kept.advertised[facts.name] = offered


def fill_ledger_from_facts(ledger: EpcLedger, facts: SnapshotFacts) -> None:
    """Replace the ledger's content with the snapshot's nodes (and their readiness) and assigned pods."""
    with ledger.lock:
        ledger.replace(facts.capacities, facts.assigned)
        for name in facts.capacities:
            ledger.set_readiness(name, facts.readiness.get(name))


def _kubernetes_objects(documents: list[object], source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Node, Pod, Namespace and workload, checked (names set, pods with a spec, namespace defaulted),
    in file order.

    Each document is dropped from ``documents`` once read, so that a caller keeping only facts
    does not hold the whole parsed file until the end.
    """
    allowed = ("Node", "Pod", "Namespace", *POD_TEMPLATES)
    for index in range(len(documents)):
        document, documents[index] = documents[index], None
        for where, obj in _objects(document, index, printable(source)):
            kind = obj.get("kind")
            if kind not in allowed:
                shown = printable(repr(kind))[:60]
                raise SnapshotError(
                    f"{where}: kind {shown} is not Node, Pod, Namespace, a workload or a List of them"
                )
            yield kind, _checked(kind, obj, where)


def _checked(kind: str, obj: dict[str, Any], where: str) -> dict[str, Any]:
    """An object with a name (and a namespace defaulted but for Nodes and Namespaces), and a spec for a
    Pod."""
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(metadata, dict) or not isinstance(name, str) or not name:
        raise SnapshotError(f"{where}: {kind} without metadata.name")
    if not isinstance(metadata.get("namespace", ""), str):
        raise SnapshotError(f"{where}: {kind} {printable(name)}: metadata.namespace is not a string")
    if kind == "Pod" and not isinstance(obj.get("spec"), dict):
        raise SnapshotError(f"{where}: Pod {printable(name)} without spec")
    if kind not in ("Node", "Namespace"):
        metadata.setdefault("namespace", "default")
    return obj


def _objects(document: object, index: int, source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    where = f"{source} document {index + 1}"
    if not isinstance(document, dict):
        raise SnapshotError(f"{where}: not a Kubernetes object")
    if document.get("kind") in _LIST_KINDS:
        items = document.get("items") or []
        if not isinstance(items, list):
            raise SnapshotError(f"{where}: items must be a list")
        for item_index, item in enumerate(items):
            if not isinstance(item, dict):
                raise SnapshotError(f"{where} items[{item_index}]: not a Kubernetes object")
            if "kind" not in item and document["kind"] != "List":
                item = {**item, "kind": document["kind"][: -len("List")]}
            items[item_index] = None  # the caller holds what it keeps: the rest can go now
            yield f"{where} items[{item_index}]", item
    else:
        yield where, document


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _namespace(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "default")
