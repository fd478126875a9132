"""Snapshot files: v1 Lists, multi-document YAML and JSON of Nodes and Pods."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from confidential_pods.profiles import PROFILES
from confidential_pods.quantities import MiB
from extender.ledger import EpcLedger
from extender.snapshot import SnapshotError, fill_ledger_from_facts, load_snapshot_facts, snapshot_facts
from tests.extender import scheduler_json as sj

PROFILE = PROFILES["alibaba"]


def test_v1_list_json() -> None:
    text = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"kind": "Node", **sj.node("a", 93)},
                {"kind": "Pod", **sj.pod("run", epc_mib=30, node_name="a", phase="Running")},
                {"kind": "Pod", **sj.pod("wait", epc_mib=8)},
            ],
        }
    )
    snapshot = snapshot_facts(text, PROFILE, keep_pending=True)
    assert list(snapshot.capacities) == ["a"]
    assert [p["metadata"]["name"] for p in snapshot.pending] == ["wait"]
    ledger = EpcLedger()
    fill_ledger_from_facts(ledger, snapshot)
    usage = ledger.usage("a")
    assert usage is not None and (usage.capacity, usage.used) == (93 * MiB, 30 * MiB)


def test_multi_document_yaml_with_typed_lists() -> None:
    text = """
kind: NodeList
apiVersion: v1
items:
- metadata: {name: n1}
  status: {allocatable: {alibabacloud.com/sgx_epc_MiB: "64"}}
---
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  nodeName: n1
  containers: [{name: c, resources: {limits: {alibabacloud.com/sgx_epc_MiB: "16"}}}]
"""
    snapshot = snapshot_facts(text, PROFILE)
    assert snapshot.pods.keys() == {"default/p"}
    ledger = EpcLedger()
    fill_ledger_from_facts(ledger, snapshot)
    assert ledger.usage("n1").used == 16 * MiB  # type: ignore[union-attr]
    assert ledger.pod("default/p") is not None  # no uid in the file: namespace/name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Service\nmetadata: {name: s}\n", "kind 'Service' is not Node, Pod"),
        ("- 1\n- 2\n", "not a Kubernetes object"),
        ("kind: Node\nmetadata: {}\n", "Node without metadata.name"),
        ("kind: Pod\nmetadata: {name: p}\n", "Pod p without spec"),
        ("kind: List\nitems: 5\n", "items must be a list"),
        ("kind: List\nitems: [3]\n", "items[0]: not a Kubernetes object"),
        ("{unclosed", "not valid YAML or JSON"),
    ],
)
def test_bad_snapshots_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(SnapshotError, match=message.replace("[", r"\[").replace("]", r"\]")):
        snapshot_facts(text, PROFILE, "f.yaml")


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="cannot read snapshot"):
        load_snapshot_facts(tmp_path / "missing.yaml", PROFILE)


def test_snapshots_add_up() -> None:
    one = snapshot_facts(json.dumps({"kind": "Node", **sj.node("a", 1)}), PROFILE)
    two = snapshot_facts(json.dumps({"kind": "Pod", **sj.pod()}), PROFILE, keep_pending=True)
    both = one + two
    assert both.capacities == one.capacities and both.pods == two.pods and both.pending == two.pending
