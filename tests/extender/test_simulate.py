"""`confidential-pods simulate`: the extender's logic over a snapshot, and its report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from confidential_pods.cli import main
from confidential_pods.profiles import PROFILES
from confidential_pods.quantities import MiB
from confidential_pods.settings import Settings, settings_from_mapping
from extender.modes import MODES, Mode
from extender.simulate import example_facts, render, simulate
from extender.snapshot import SnapshotFacts, snapshot_facts
from tests.commands import cli
from tests.extender import scheduler_json as sj

INJECTION = "confidential-pods.io/injection"
NATIVE_LINE = (
    "Mode native: kube-scheduler counts, scores (NodeResourcesFit LeastAllocated, EPC only here) and binds; "
    "the extender filters"
)


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
    result = simulate(small_cluster(), Settings(), mode="ledger")
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
    result = simulate(small_cluster(), Settings(), "MostAllocated", "ledger")
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


@pytest.mark.parametrize("mode", MODES)
def test_example_cluster_is_realistic(mode: Mode) -> None:
    snapshot = example_facts(Settings())
    assert len(snapshot.capacities) >= 4 and len(snapshot.pods) >= 15
    result = simulate(snapshot, Settings(), mode=mode)
    assert any(p.node for p in result.placements)
    assert [p.name for p in result.placements if p.unschedulable] == [
        "confidential-postgres-1",
        "trainer-large-0",
    ]
    assert any(n.capacity is None for n in result.nodes)
    # the cordoned node takes the daemon pod only; the Deployment's pods stay on the nodes it selects
    on_cordoned = [p.name for p in result.placements if p.node == "cn-hangzhou.10.0.1.14"]
    assert on_cordoned == ["attestation-agent-3"]
    checkout = {p.node for p in result.placements if p.origin == "Deployment payments/checkout"}
    assert checkout <= {"cn-hangzhou.10.0.1.11", "cn-hangzhou.10.0.1.12"} and len(checkout) > 0
    assert result.workloads == (
        ("DaemonSet kms/attestation-agent", 5, "one per eligible node, 5 of 6"),
        ("Deployment payments/checkout", 3, "replicas 3"),
    )


def test_cli_default_runs_the_example_in_native_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Built-in example cluster")
    assert out.splitlines()[2] == NATIVE_LINE
    assert "Scoring strategy LeastAllocated" in out and "Unschedulable (2)" in out
    assert "SCORE 0-100, higher is preferred: NodeResourcesFit's EPC share, LeastAllocated favours" in out
    assert "kms/attestation-agent-0        16Mi    cn-hangzhou.10.0.1.11            59\n" in out


def test_cli_ledger_mode_runs_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--mode", "ledger"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2] == "Mode ledger: the extender filters, scores LeastAllocated 0-10 and binds"
    assert "Scoring strategy LeastAllocated" in out and "Unschedulable (2)" in out
    assert "SCORE 0-10, higher is preferred: LeastAllocated favours the most EPC left" in out
    assert "kms/attestation-agent-0        16Mi    cn-hangzhou.10.0.1.11            5\n" in out


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


# --- issue 23, item 5: the webhook first, kube-scheduler's filters, workloads, hints, the score range -----

ANNOTATED = {"confidential-pods.io/confidential": "true", "confidential-pods.io/epc": "2Gi"}
ADMITS = settings_from_mapping({"runtimeClass": "none", "aesm": "none"})


def written(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A pod as a user writes it for creation (no uid: it has not been admitted yet)."""
    metadata: dict[str, Any] = {"name": name, "namespace": "shop"}
    if annotations:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {"containers": [{"name": "app", "image": "app:1"}], **spec}}


def test_the_webhook_mutation_comes_first() -> None:
    """An annotated pod needs what the webhook gives it: 2Gi here, not 0 (placed anywhere) as before."""
    snapshot = cluster(
        nodes=(sj.node("small", 1024), sj.node("big", 4096)), pods=(written("enclave", ANNOTATED),)
    )
    (placement,) = simulate(snapshot, ADMITS).placements
    assert (placement.epc, placement.node) == (2 * 1024 * MiB, "big")


def test_a_pod_the_webhook_refuses_is_reported_with_its_message() -> None:
    snapshot = cluster(nodes=(sj.node("big", 4096),), pods=(written("enclave", ANNOTATED),))
    result = simulate(snapshot, settings_from_mapping({"runtimeClass": "kata"}))  # no aesmd sidecar image
    (placement,) = result.placements
    assert placement.node is None and not placement.unschedulable
    assert placement.refused.startswith("the webhook refuses it: an aesmd sidecar is needed")
    report = render(result)
    assert "1 refused" in report and "shop/enclave  -    - refused" in report
    assert "Refused (1)\n  shop/enclave: the webhook refuses it: an aesmd sidecar is needed" in report


def test_a_namespace_labelled_in_the_files_opts_its_pods_in() -> None:
    namespace = {"kind": "Namespace", "metadata": {"name": "shop", "labels": {INJECTION: "enabled"}}}
    plain = written("plain")
    text = json.dumps({"kind": "List", "items": [{"kind": "Node", **sj.node("n", 1024)}, namespace,
                                                  {"kind": "Pod", **plain}]})  # fmt: skip
    (placement,) = simulate(snapshot_facts(text, PROFILES["alibaba"], keep_pending=True), ADMITS).placements
    assert placement.epc == 64 * MiB and placement.node == "n"  # defaultEPC, injected
    disabled = text.replace('"enabled"', '"disabled"').replace('"plain"}', '"plain", "annotations": {}}')
    annotated = disabled.replace(
        '"annotations": {}', '"annotations": {"confidential-pods.io/confidential": "true"}'
    )
    (skipped,) = simulate(
        snapshot_facts(annotated, PROFILES["alibaba"], keep_pending=True), ADMITS
    ).placements
    assert skipped.epc == 0  # a disabled namespace is never sent to the webhook


def test_a_stored_pod_is_placed_as_it_is() -> None:
    """A pod the API server stores (a uid) has passed admission: not mutated again."""
    stored = {
        **written("enclave", ANNOTATED),
        "metadata": {**written("enclave", ANNOTATED)["metadata"], "uid": "u"},
    }
    (placement,) = simulate(cluster(nodes=(sj.node("n", 4096),), pods=(stored,)), ADMITS).placements
    assert placement.epc == 0


def tainted(name: str, epc_mib: int, **spec: Any) -> dict[str, Any]:
    found = sj.node(name, epc_mib)
    return {**found, "spec": {**found.get("spec", {}), **spec}}


def test_cordoned_and_tainted_nodes_are_left_out() -> None:
    """The empty nodes would win (LeastAllocated): cordoned and tainted, they are not candidates."""
    cordon = [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]
    nodes = (
        tainted("empty-cordoned", 1024, unschedulable=True, taints=cordon),
        tainted("empty-tainted", 1024, taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        sj.node("busy", 1024),
    )
    running = sj.pod("running", epc_mib=512, node_name="busy", phase="Running")
    tolerant = sj.pod("tolerant", epc_mib=64)
    tolerant["spec"]["tolerations"].append({"key": "dedicated", "operator": "Equal", "value": "db"})
    result = simulate(cluster(nodes, (running, sj.pod("plain", epc_mib=64), tolerant)), Settings())
    placed = {p.name: p.node for p in result.placements}
    assert placed == {"plain": "busy", "tolerant": "empty-tainted"}
    big = simulate(cluster(nodes, (sj.pod("big", epc_mib=600), running)), Settings()).placements[0]
    assert big.reasons == {
        "busy": "insufficient SGX EPC: pod requests 600Mi, node has 512Mi free of 1Gi",
        "empty-cordoned": "node is cordoned (spec.unschedulable)",
        "empty-tainted": "node has a taint the pod does not tolerate: {dedicated: db} (NoSchedule)",
    }


def test_node_selector_and_required_affinity_choose_among_the_nodes() -> None:
    nodes = (sj.node("a", 1024), sj.node("b", 1024), sj.node("c", 1024))
    selected = sj.pod("selected", epc_mib=8)
    selected["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "c"}
    affine = sj.pod("affine", epc_mib=8)
    affine["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn",
                                                     "values": ["a"]}]}]}}}  # fmt: skip
    placed = {p.name: p.node for p in simulate(cluster(nodes, (selected, affine)), Settings()).placements}
    assert placed == {"selected": "c", "affine": "b"}  # b: c already holds "selected"


def test_workloads_are_placed_as_their_pods() -> None:
    template = {
        "metadata": {"annotations": ANNOTATED},
        "spec": {"containers": [{"name": "app", "image": "a"}]},
    }
    deployment = {"kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
                  "spec": {"replicas": 3, "selector": {}, "template": template}}  # fmt: skip
    daemons = {"kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "shop"},
               "spec": {"selector": {}, "template": template}}  # fmt: skip
    cordon = [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]
    nodes = [
        {"kind": "Node", **sj.node("a", 6144)},
        {"kind": "Node", **tainted("b", 8192, unschedulable=True, taints=cordon)},
    ]
    text = json.dumps({"kind": "List", "items": [*nodes, deployment, daemons]})
    result = simulate(snapshot_facts(text, PROFILES["alibaba"], keep_pending=True), ADMITS)
    placed = [(p.name, p.node, p.epc) for p in result.placements]
    two = 2 * 1024 * MiB
    # a holds three: its daemon pod finds no EPC left; the cordoned b takes only its daemon pod
    assert placed == [("web-0", "a", two), ("web-1", "a", two), ("web-2", "a", two), ("agent-0", None, two),
                      ("agent-1", "b", two)]  # fmt: skip
    assert result.workloads == (("Deployment shop/web", 3, "replicas 3"),
                                ("DaemonSet shop/agent", 2, "one per eligible node, 2 of 2"))  # fmt: skip
    report = render(result)
    assert "Deployment shop/web: 3 pod(s), replicas 3" in report


def test_the_profile_the_nodes_advertise_is_hinted() -> None:
    nodes = (
        sj.node("n1", 1 << 30, resource="sgx.intel.com/epc"),
        sj.node("n2", 1 << 30, resource="sgx.intel.com/epc"),
    )
    result = simulate(cluster(nodes, (sj.pod("p", epc_mib=8),)), Settings())  # profile alibaba
    assert result.hint == (
        "No node advertises alibabacloud.com/sgx_epc_MiB; the nodes advertise sgx.intel.com/epc (2 node(s)): "
        "use --config with profile: intel (or epcResource: sgx.intel.com/epc)"
    )
    assert result.hint in render(result)
    assert simulate(small_cluster(), Settings()).hint == ""


def test_the_score_range_and_what_is_not_modelled_are_said() -> None:
    report = render(simulate(small_cluster(), Settings(), "MostAllocated", "ledger"))
    assert (
        "SCORE 0-10, higher is preferred: MostAllocated favours the least EPC left after placing (packs)"
        in report
    )
    assert (
        "Filters: cordons, taints and tolerations, nodeSelector, required node affinity, then free EPC"
        in report
    )
    assert (
        "Not modelled here (kube-scheduler still checks them)\n  resources cpu, memory: 5 pod(s)\n" in report
    )
    assert "NodeResourcesFit" not in report


NATIVE_SCORE = "SCORE 0-100, higher is preferred: NodeResourcesFit's EPC share, LeastAllocated favours the"
LEDGER_SCORE = "SCORE 0-10, higher is preferred: LeastAllocated favours the"


@pytest.mark.parametrize(
    ("mode", "score_line"),
    [((), f"{NATIVE_SCORE} most EPC left after placing (spreads)"),
     (("--mode", "ledger"), f"{LEDGER_SCORE} most EPC left after placing (spreads)")],
)  # fmt: skip
def test_the_installed_command_tells_the_truth(
    tmp_path: Path, mode: tuple[str, ...], score_line: str
) -> None:
    """End to end: files with a cordoned node, a Deployment of annotated pods and a configuration; native
    mode without --mode."""
    cordon = [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]
    nodes = tmp_path / "nodes.yaml"
    cordoned = tainted("cordoned", 65536, unschedulable=True, taints=cordon)
    nodes.write_text(
        yaml.safe_dump_all([{"kind": "Node", **sj.node("free", 8192)}, {"kind": "Node", **cordoned}])
    )
    pods = tmp_path / "pods.yaml"
    template = {
        "metadata": {"annotations": ANNOTATED},
        "spec": {"containers": [{"name": "app", "image": "a"}]},
    }
    spec = {"replicas": 2, "selector": {}, "template": template}
    metadata = {"name": "web", "namespace": "shop"}
    pods.write_text(
        yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec})
    )
    config = tmp_path / "config.yaml"
    config.write_text("runtimeClass: none\naesm: none\n")
    done = subprocess.run(
        cli("simulate", "--nodes", str(nodes), "--pods", str(pods), "--config", str(config), *mode),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "Deployment shop/web: 2 pod(s), replicas 2" in lines
    assert [line.split()[:3] for line in lines if line.startswith("shop/web-")] == [
        ["shop/web-0", "2Gi", "free"],
        ["shop/web-1", "2Gi", "free"],
    ]
    assert score_line in lines
