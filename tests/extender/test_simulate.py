"""`confidential-pods simulate`: the extender's logic over a snapshot, and its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from confidential_pods.cli import main
from confidential_pods.profiles import PROFILES
from confidential_pods.quantities import MiB
from confidential_pods.settings import Settings
from extender.simulate import example_facts, render, simulate
from extender.snapshot import SnapshotFacts, snapshot_facts
from tests.extender import scheduler_json as sj


def cluster(nodes: tuple[dict[str, Any], ...] = (), pods: tuple[dict[str, Any], ...] = ()) -> SnapshotFacts:
    """A snapshot's facts (pending pods kept, as simulate reads files) from Node and Pod objects."""
    items = [{"kind": "Node", **node} for node in nodes] + [{"kind": "Pod", **pod} for pod in pods]
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    return snapshot_facts(text, PROFILES["alibaba"], keep_pending=True)


def small_cluster() -> SnapshotFacts:
    return cluster(
        nodes=(sj.node("b-node", 100), sj.node("a-node", 100), sj.node("plain", None)),
        pods=(
            sj.pod("running", epc_mib=40, node_name="b-node", phase="Running"),
            sj.pod("first", epc_mib=30),
            sj.pod("second", epc_mib=30),
            sj.pod("third", epc_mib=50),
            sj.pod("huge", epc_mib=500),
            sj.pod("no-epc", epc_mib=0),
        ),
    )


def test_least_allocated_spreads_and_ties_go_by_name() -> None:
    result = simulate(small_cluster(), Settings())
    placed = {p.name: (p.node, p.score) for p in result.placements}
    assert placed["first"] == ("a-node", 7)  # a: 70 free after vs b: 30 free after
    assert placed["second"] == ("a-node", 4)  # a: 40 free after vs b: 30 -> a again
    assert placed["third"] == ("b-node", 1)  # a has 40 free only: b (60 free) is the only fit
    assert placed["huge"] == (None, None)
    assert placed["no-epc"] == (None, None)
    huge = next(p for p in result.placements if p.name == "huge")
    assert huge.unschedulable and set(huge.reasons) == {"a-node", "b-node", "plain"}
    assert huge.reasons["a-node"] == "insufficient SGX EPC: pod requests 500Mi, node has only 100Mi in total"
    no_epc = next(p for p in result.placements if p.name == "no-epc")
    assert not no_epc.unschedulable and not no_epc.needs_epc
    used = {n.name: n.used for n in result.nodes}
    assert used == {"a-node": 60 * MiB, "b-node": 90 * MiB, "plain": 0}
    assert all(n.reserved == 0 for n in result.nodes)  # placements were confirmed as the watch would
    assert result.used_before == {"a-node": 0, "b-node": 40 * MiB, "plain": 0}


def test_most_allocated_packs() -> None:
    result = simulate(small_cluster(), Settings(), "MostAllocated")
    placed = {p.name: p.node for p in result.placements}
    assert placed["first"] == "b-node"  # b already holds 40: packing prefers it
    assert placed["second"] == "b-node"  # exactly fills b: 10, a-node would score 3
    assert placed["third"] == "a-node"
    assert result.strategy == "MostAllocated"


def test_ties_break_by_node_name() -> None:
    snapshot = cluster(nodes=(sj.node("zeta", 64), sj.node("alpha", 64)), pods=(sj.pod("p", epc_mib=8),))
    assert simulate(snapshot, Settings()).placements[0].node == "alpha"


def test_report_shows_table_bars_and_reasons() -> None:
    report = render(simulate(small_cluster(), Settings()))
    assert "5 pending pod(s): 3 placed, 1 unschedulable, 1 without EPC" in report
    assert "payments/first" in report and "a-node" in report
    assert "[" + "#" * 12 + "+" * 15 + "...]" in report  # b-node: 40 before, 50 placed, of 100 (30 cells)
    assert "60Mi / 100Mi" in report and "no SGX EPC" in report
    assert "payments/huge requests 500Mi:" in report
    assert "node has no SGX EPC (alibabacloud.com/sgx_epc_MiB)" in report


def test_example_cluster_is_realistic() -> None:
    snapshot = example_facts(Settings())
    assert len(snapshot.capacities) >= 4 and len(snapshot.pods) >= 15
    result = simulate(snapshot, Settings())
    assert any(p.node for p in result.placements)
    assert [p.name for p in result.placements if p.unschedulable] == ["trainer-large-0"]
    assert any(n.capacity is None for n in result.nodes)


def test_cli_default_runs_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Built-in example cluster")
    assert "Scoring strategy LeastAllocated" in out and "Unschedulable (1)" in out


def test_cli_with_files_and_strategy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = tmp_path / "nodes.yaml"
    pods = tmp_path / "pods.yaml"
    nodes.write_text(yaml.safe_dump_all([{"kind": "Node", **sj.node("n1", 64)}]))
    pods.write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "PodList", "items": [sj.pod("p1", epc_mib=16)]})
    )
    assert main(["simulate", "--nodes", str(nodes), "--pods", str(pods), "--strategy", "MostAllocated"]) == 0
    out = capsys.readouterr().out
    assert "Scoring strategy MostAllocated" in out
    assert "payments/p1  16Mi  n1" in out


def test_cli_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--nodes", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read snapshot" in capsys.readouterr().err


def test_report_without_nodes() -> None:
    report = render(simulate(cluster(pods=(sj.pod("lonely", epc_mib=16),)), Settings()))
    assert "(no nodes in the snapshot)" in report
    assert "payments/lonely requests 16Mi:\n    no nodes in the snapshot" in report
