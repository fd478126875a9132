"""Snapshot files: Nodes and Pods from a v1 List or multi-document YAML/JSON, for clusterless use.

``extender serve --snapshot`` fills the ledger from one (:func:`load_snapshot_facts`: only the
facts are kept, not the parsed objects); ``simulate`` reads them whole for its cluster
(:func:`load_snapshot`). Assigned pods (``spec.nodeName`` set) are running pods that hold EPC; the
others are pending pods waiting to be placed (by ``simulate``, or bound through ``/bind`` in
snapshot mode).

A file whose text starts with ``{`` or ``[`` is read with ``json.loads`` first (``kubectl get -o
json``: 27 MB for 5,000 nodes and 50,000 pods parse in well under a second, where the pure-Python
YAML parser takes over a minute); anything else, or JSON that does not parse, with YAML's C
``CSafeLoader`` when PyYAML was built with libyaml, else its ``SafeLoader``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from confidential_pods.epc import node_capacity
from confidential_pods.errors import MalformedInput
from confidential_pods.profiles import Profile
from extender.binding import KnownPod
from extender.ledger import EpcLedger
from extender.podepc import PodEpc, pod_facts

_LIST_KINDS = {"List", "NodeList", "PodList"}


class SnapshotError(MalformedInput):
    """A snapshot file cannot be read or holds something that is not a Node, Pod or list of them."""


@dataclass(frozen=True)
class Snapshot:
    """The Nodes and Pods of a snapshot, as raw Kubernetes JSON, in file order."""

    nodes: tuple[dict[str, Any], ...] = ()
    pods: tuple[dict[str, Any], ...] = ()

    def __add__(self, other: Snapshot) -> Snapshot:
        return Snapshot(nodes=self.nodes + other.nodes, pods=self.pods + other.pods)

    @property
    def pending_pods(self) -> tuple[dict[str, Any], ...]:
        """Pods not yet assigned to a node, in file order."""
        return tuple(p for p in self.pods if not (p.get("spec") or {}).get("nodeName"))

    def pods_by_name(self) -> dict[str, dict[str, Any]]:
        """Pods keyed ``namespace/name`` (namespace ``default`` when unset)."""
        return {f"{_namespace(p)}/{_name(p)}": p for p in self.pods}


@dataclass(frozen=True)
class SnapshotFacts:
    """What serving a snapshot keeps of it: the ledger's content and what a bind may need.

    ``capacities``: EPC of every node (None without EPC). ``assigned``: the ledger entries of the pods
    holding EPC. ``pods``: every pod's UID and EPC by ``namespace/name`` (for a bind of a pod that was
    never filtered, see ``MemoryBinder``).
    """

    capacities: dict[str, int | None] = field(default_factory=dict)
    assigned: list[PodEpc] = field(default_factory=list)
    pods: dict[str, KnownPod] = field(default_factory=dict)


def parse_snapshot(text: str, source: str = "snapshot") -> Snapshot:
    """Parse multi-document YAML (JSON is YAML) of Nodes, Pods and v1 Lists of them."""
    nodes: list[dict[str, Any]] = []
    pods: list[dict[str, Any]] = []
    for kind, obj in _kubernetes_objects(_documents(text, source), source):
        (nodes if kind == "Node" else pods).append(obj)
    return Snapshot(nodes=tuple(nodes), pods=tuple(pods))


def snapshot_facts(text: str, profile: Profile, source: str = "snapshot") -> SnapshotFacts:
    """Parse a snapshot like :func:`parse_snapshot` and keep only its facts (see :class:`SnapshotFacts`).

    The facts are first written down as one compact JSON text while the parsed objects are freed,
    then read back: the objects kept are then allocated after the parsed file is gone. Kept directly,
    the strings they share with the parsed objects (names, UIDs) would pin most of the memory pages
    the parse used (measured: 200 MB instead of about 100 MB of RSS at 50,000 pods).
    """
    nodes: list[tuple[str, int | None]] = []
    pods: list[tuple[str, str, str, int, tuple[str, str, int] | None]] = []
    for kind, obj in _kubernetes_objects(_documents(text, source), source):
        if kind == "Node":
            nodes.append((_name(obj), node_capacity(obj, profile)))
            continue
        held = pod_facts(obj, profile)
        known = KnownPod.of(obj, profile, None if held is None else held.epc)  # EPC computed once
        row = None if held is None else (held.uid, held.node, held.epc)
        pods.append((_namespace(obj), _name(obj), known.uid, known.epc, row))
    packed = json.dumps([nodes, pods], separators=(",", ":"))
    del nodes, pods
    packed_nodes, packed_pods = json.loads(packed)
    del packed
    facts = SnapshotFacts(capacities=dict(packed_nodes))
    intern = sys.intern  # 50,000 pods share a few namespaces and 5,000 node names
    for namespace, name, uid, epc, held_row in packed_pods:
        namespace = intern(namespace)
        facts.pods[f"{namespace}/{name}"] = KnownPod(uid=uid, epc=epc)
        if held_row is not None:
            held_uid, node, held_epc = held_row
            facts.assigned.append(
                PodEpc(uid=held_uid, namespace=namespace, name=name, node=intern(node), epc=held_epc)
            )
    return facts


def load_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Read and parse a snapshot file."""
    return parse_snapshot(_read(path), os.fspath(path))


def load_snapshot_facts(path: str | os.PathLike[str], profile: Profile) -> SnapshotFacts:
    """Read a snapshot file and keep only its facts (:func:`snapshot_facts`)."""
    return snapshot_facts(_read(path), profile, os.fspath(path))


def fill_ledger_from_facts(ledger: EpcLedger, facts: SnapshotFacts) -> None:
    """Replace the ledger's content with the snapshot's nodes and assigned pods."""
    ledger.replace(facts.capacities, facts.assigned)


def fill_ledger(ledger: EpcLedger, snapshot: Snapshot, profile: Profile) -> None:
    """Replace the ledger's content with the snapshot's nodes and assigned pods."""
    capacities = {_name(node): node_capacity(node, profile) for node in snapshot.nodes}
    facts = (pod_facts(pod, profile) for pod in snapshot.pods)
    ledger.replace(capacities, (f for f in facts if f is not None))


def _read(path: str | os.PathLike[str]) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {os.fspath(path)}: {exc.strerror}") from None


#: libyaml's loader when PyYAML has it (about 3x faster), else the pure-Python one; both are "safe".
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _documents(text: str, source: str) -> list[object]:
    """The documents of a snapshot: one JSON value, else every document of a YAML stream."""
    if text.lstrip()[:1] in ("{", "["):
        try:
            return [json.loads(text)]
        except ValueError:
            pass  # YAML flow style, several documents, or broken: YAML decides and names the error
    try:
        return list(yaml.load_all(text, Loader=_YAML_LOADER))
    except yaml.YAMLError as exc:
        raise SnapshotError(f"{source} is not valid YAML or JSON: {exc}") from None


def _kubernetes_objects(
    documents: list[object], source: str
) -> Iterator[tuple[Literal["Node", "Pod"], dict[str, Any]]]:
    """Every Node and Pod, checked (names set, pods with a spec, namespace defaulted), in file order.

    Each document is dropped from ``documents`` once read, so that a caller keeping only facts
    does not hold the whole parsed file until the end.
    """
    for index in range(len(documents)):
        document, documents[index] = documents[index], None
        for where, obj in _objects(document, index, source):
            kind = obj.get("kind")
            if kind == "Node":
                if not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
                    raise SnapshotError(f"{where}: Node without metadata.name")
                yield "Node", obj
            elif kind == "Pod":
                if not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
                    raise SnapshotError(f"{where}: Pod without metadata.name")
                if not isinstance(obj.get("spec"), dict):
                    raise SnapshotError(f"{where}: Pod {obj['metadata']['name']} without spec")
                obj["metadata"].setdefault("namespace", "default")
                yield "Pod", obj
            else:
                raise SnapshotError(f"{where}: kind {kind!r} is not Node, Pod or a List of them")


def _objects(document: object, index: int, source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if document is None:
        return
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
