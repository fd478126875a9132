"""``kubectl confidential-pods nodes`` and ``why``: the text they print from a ledger or /inspect (a wrong
/inspect answer: test_inspection.py)."""

from __future__ import annotations

from typing import Any

from confidential_pods.settings import settings_from_mapping
from extender.app import node_json
from extender.ledger import EpcLedger
from extender.podepc import PodEpc
from extender.readiness import Readiness
from operate.inspection import rows_from_inspect
from operate.views import NodeRow, render_nodes, render_why, rows_from_ledger, why
from tests.extender.ledgers import ledger_of

MIB = 2**20
EPC = "alibabacloud.com/sgx_epc_MiB"
SETTINGS = settings_from_mapping({"schedulerName": "confidential-scheduler"})


def ledger() -> EpcLedger:
    return ledger_of(
        {"sgx-a": 96 * MIB, "sgx-b": 64 * MIB, "plain": None},
        [
            PodEpc("uid-kms", "shop", "kms", "sgx-a", 48 * MIB),
            PodEpc("uid-db", "shop", "db", "sgx-b", 60 * MIB),
        ],
        nominated=[PodEpc("uid-vip", "shop", "vip", "sgx-a", 16 * MIB, 1000)],
    )


def test_rows_from_the_ledger_and_from_inspect_agree() -> None:
    source = ledger()
    source.reserve(PodEpc("uid-new", "shop", "new", "sgx-b", 2 * MIB), now=0.0)
    source.set_readiness("sgx-a", Readiness("False", "PCCSUnreachable", "PCCS https://p unreachable"))
    rows = rows_from_ledger(source)
    assert rows == [
        NodeRow("sgx-a", 96 * MIB, 48 * MIB, 0, 16 * MIB, 1, "NOT READY (PCCSUnreachable)"),
        NodeRow("sgx-b", 64 * MIB, 60 * MIB, 2 * MIB, 0, 1, "-"),
    ]  # "plain" has no SGX: left out
    nodes = [n for n in (source.node(name) for name in source.nodes()) if n is not None]
    inspect = {"nodes": [node_json(n, source.readiness(n.name)) for n in nodes]}
    assert rows_from_inspect(inspect) == rows


def test_nodes_table() -> None:
    text = render_nodes(rows_from_ledger(ledger()), EPC, "the stored pods")
    lines = text.splitlines()
    assert lines[0] == f"EPC per SGX node ({EPC}; from the stored pods)"
    assert lines[2].split() == ["NODE", "EPC", "(#", "used,", "+", "reserved)", "IN", "USE", "/", "CAPACITY",
                                "FREE", "NOMINATED", "PODS", "ATTESTATION"]  # fmt: skip
    assert lines[3].startswith("sgx-a  [###############...............]  48Mi / 96Mi")
    assert lines[3].split()[-4:] == ["48Mi", "16Mi", "1", "-"]
    assert lines[4].split()[-4:] == ["4Mi", "-", "1", "-"]
    ready = ledger()
    ready.set_readiness("sgx-a", Readiness("True", "AllChecksPassed"))
    ready.set_readiness("sgx-b", Readiness("False", "AESMUnavailable"))
    lines = render_nodes(rows_from_ledger(ready), EPC, "x").splitlines()
    assert lines[3].split()[-1] == "ready"
    assert lines[4].split()[-2:] == ["NOT", "READY", "(AESMUnavailable)"][-2:] and "NOT READY" in lines[4]
    assert lines[-1] == "2 node(s): 108Mi of 160Mi in use (68%)"
    assert "no node advertises" in render_nodes([], EPC, "x")


def test_a_ready_condition_the_probe_stopped_renewing_shows_as_unknown() -> None:
    """The table says what the extender's filter does: a True not renewed for 15 minutes counts as unknown,
    both read once from the stored nodes (by the node's timestamp) and from the extender's /inspect."""
    now = 1_800_000_000.0
    source = ledger()
    source.set_readiness("sgx-a", Readiness("True", "AllChecksPassed", heartbeat=now - 16 * 60))
    source.set_readiness("sgx-b", Readiness("True", "AllChecksPassed", heartbeat=now - 60))
    rows = rows_from_ledger(source, now)
    assert [row.attestation for row in rows] == ["unknown (not renewed)", "ready"]
    nodes = [n for n in (source.node(name) for name in sorted(source.nodes())) if n is not None]
    inspect = {"nodes": [node_json(n, source.readiness(n.name), now) for n in nodes]}
    stale = {node["name"]: (node["attestation"] or {}).get("stale") for node in inspect["nodes"]}
    assert stale == {"plain": None, "sgx-a": True, "sgx-b": False}
    assert rows_from_inspect(inspect) == rows


def pending(epc: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "app", "image": "app", "resources": {"limits": {EPC: epc}}}
    spec = {"containers": [container], "schedulerName": "confidential-scheduler", **spec}
    return {"metadata": {"namespace": "shop", "name": "big"}, "spec": spec}


def test_why_gives_the_extenders_reasons_per_node() -> None:
    answer = why(pending("40"), ledger(), SETTINGS)
    assert answer.epc == 40 * MIB and answer.passed == ()
    assert answer.reasons == {
        "plain": f"node has no SGX EPC ({EPC})",
        "sgx-a": "insufficient SGX EPC: pod requests 40Mi, node has 32Mi free of 96Mi",
        "sgx-b": "insufficient SGX EPC: pod requests 40Mi, node has 4Mi free of 64Mi",
    }
    events = [
        {"message": "0/3 nodes are available: ...", "count": 4, "lastTimestamp": "2026-11-28T10:00:00Z"}
    ]
    text = render_why(answer, events, SETTINGS)
    assert "shop/big requests 40Mi of alibabacloud.com/sgx_epc_MiB" in text
    assert "refused on 3 node(s)" in text and "node has 32Mi free of 96Mi" in text
    assert "(x4) 0/3 nodes are available" in text


def test_why_for_pods_the_extender_has_no_say_in() -> None:
    fits = why(pending("16"), ledger(), SETTINGS)
    assert fits.passed == ("sgx-a",) and "fits now on 1 node(s): sgx-a" in render_why(fits, [], SETTINGS)
    other = why(pending("16", schedulerName="volcano"), ledger(), SETTINGS)
    assert "scheduled by volcano, not by confidential-scheduler" in render_why(other, [], SETTINGS)
    unreadable = why(pending("1e99999999"), ledger(), SETTINGS)
    assert "cannot be read" in render_why(unreadable, [], SETTINGS)
    bound = why(pending("16", nodeName="sgx-a"), ledger(), SETTINGS)
    assert "shop/big is bound to sgx-a" in render_why(bound, [], SETTINGS)


def test_why_never_counts_a_pod_against_its_own_node() -> None:
    """The running pod kms holds 48Mi of sgx-a (96Mi, 16Mi nominated for vip): asked why, it fits there,
    as the scheduler found when it placed it (counted against itself, 32Mi free < 48Mi)."""
    running = pending("48", nodeName="sgx-a")
    running["metadata"] = {"namespace": "shop", "name": "kms", "uid": "uid-kms"}
    answer = why(running, ledger(), SETTINGS)
    assert answer.passed == ("sgx-a",)
    assert answer.reasons["sgx-b"] == "insufficient SGX EPC: pod requests 48Mi, node has 4Mi free of 64Mi"
    assert "fits now on 1 node(s): sgx-a" in render_why(answer, [], SETTINGS)
