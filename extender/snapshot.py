"""Snapshot files: Nodes and Pods from a v1 List or multi-document YAML/JSON, for clusterless use.

``extender serve --snapshot`` fills the ledger from one; ``simulate`` reads them for its cluster.
Assigned pods (``spec.nodeName`` set) are running pods that hold EPC; the others are pending pods
waiting to be placed (by ``simulate``, or bound through ``/bind`` in snapshot mode).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from confidential_pods.profiles import Profile
from extender.ledger import EpcLedger
from extender.podepc import node_capacity, pod_facts

_LIST_KINDS = {"List", "NodeList", "PodList"}


class SnapshotError(ValueError):
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


def parse_snapshot(text: str, source: str = "snapshot") -> Snapshot:
    """Parse multi-document YAML (JSON is YAML) of Nodes, Pods and v1 Lists of them."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise SnapshotError(f"{source} is not valid YAML or JSON: {exc}") from None
    nodes: list[dict[str, Any]] = []
    pods: list[dict[str, Any]] = []
    for where, obj in _objects(documents, source):
        kind = obj.get("kind")
        if kind == "Node":
            if not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
                raise SnapshotError(f"{where}: Node without metadata.name")
            nodes.append(obj)
        elif kind == "Pod":
            if not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
                raise SnapshotError(f"{where}: Pod without metadata.name")
            if not isinstance(obj.get("spec"), dict):
                raise SnapshotError(f"{where}: Pod {obj['metadata']['name']} without spec")
            obj["metadata"].setdefault("namespace", "default")
            pods.append(obj)
        else:
            raise SnapshotError(f"{where}: kind {kind!r} is not Node, Pod or a List of them")
    return Snapshot(nodes=tuple(nodes), pods=tuple(pods))


def load_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Read and parse a snapshot file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {os.fspath(path)}: {exc.strerror}") from None
    return parse_snapshot(text, os.fspath(path))


def fill_ledger(ledger: EpcLedger, snapshot: Snapshot, profile: Profile) -> None:
    """Replace the ledger's content with the snapshot's nodes and assigned pods."""
    capacities = {_name(node): node_capacity(node, profile) for node in snapshot.nodes}
    facts = (pod_facts(pod, profile) for pod in snapshot.pods)
    ledger.replace(capacities, (f for f in facts if f is not None))


def _objects(documents: Iterable[object], source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for index, document in enumerate(documents):
        if document is None:
            continue
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
                yield f"{where} items[{item_index}]", item
        else:
            yield where, document


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _namespace(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "default")
