"""filter_nodes / score_nodes: the decisions, table-driven over a small ledger."""

from __future__ import annotations

import pytest

from confidential_pods.quantities import MiB
from extender.ledger import EpcLedger
from extender.podepc import PodEpc
from extender.scheduling import best_node, filter_nodes, node_score, score_nodes

RES = "alibabacloud.com/sgx_epc_MiB"


@pytest.fixture
def ledger() -> EpcLedger:
    ledger = EpcLedger()
    ledger.set_node("roomy", 93 * MiB)
    ledger.set_node("tight", 93 * MiB)
    ledger.set_node("plain", None)
    ledger.set_node("tiny", 32 * MiB)
    ledger.set_pod(PodEpc("u1", "ns", "a", "tight", 40 * MiB))
    ledger.reserve(PodEpc("u2", "ns", "b", "tight", 21 * MiB), now=0)
    return ledger


def test_filter_splits_nodes_with_actionable_reasons(ledger: EpcLedger) -> None:
    outcome = filter_nodes(64 * MiB, ledger.usages(["roomy", "tight", "plain", "tiny", "ghost"]), RES)
    assert outcome.passed == {"roomy"}
    assert outcome.failed == {"tight": "insufficient SGX EPC: pod requests 64Mi, node has 32Mi free of 93Mi"}
    assert outcome.unresolvable == {
        "plain": f"node has no SGX EPC ({RES})",
        "tiny": "insufficient SGX EPC: pod requests 64Mi, node has only 32Mi in total",
        "ghost": "node is not in the extender's EPC ledger (not listed or watched yet)",
    }


def test_reservations_count_against_free(ledger: EpcLedger) -> None:
    assert filter_nodes(32 * MiB, ledger.usages(["tight"]), RES).passed == {"tight"}
    assert filter_nodes(33 * MiB, ledger.usages(["tight"]), RES).passed == frozenset()
    ledger.unreserve("u2")
    assert filter_nodes(53 * MiB, ledger.usages(["tight"]), RES).passed == {"tight"}


def test_pod_without_epc_passes_every_node(ledger: EpcLedger) -> None:
    outcome = filter_nodes(0, ledger.usages(["roomy", "plain", "ghost"]), RES)
    assert outcome.passed == {"roomy", "plain", "ghost"}
    assert not outcome.failed and not outcome.unresolvable


def test_overcommitted_node_reports_zero_free() -> None:
    ledger = EpcLedger()
    ledger.set_node("n", 10 * MiB)
    ledger.set_pod(PodEpc("u", "ns", "p", "n", 12 * MiB))
    outcome = filter_nodes(MiB, ledger.usages(["n"]), RES)
    assert outcome.failed == {"n": "insufficient SGX EPC: pod requests 1Mi, node has 0 free of 10Mi"}


@pytest.mark.parametrize(
    ("capacity", "used", "pod", "least", "most"),
    [
        (100, 0, 10, 9, 1),
        (100, 0, 100, 0, 10),
        (100, 50, 10, 4, 6),
        (100, 89, 10, 0, 9),
        (100, 95, 10, 0, 0),  # does not fit: 0 whatever the strategy
        (100, 0, 0, 0, 0),  # no EPC asked: no opinion
        (0, 0, 1, 0, 0),
        (30720, 12288, 8192, 3, 6),
    ],
)
def test_node_score(capacity: int, used: int, pod: int, least: int, most: int) -> None:
    ledger = EpcLedger()
    ledger.set_node("n", capacity * MiB)
    if used:
        ledger.set_pod(PodEpc("u", "ns", "p", "n", used * MiB))
    usage = ledger.usage("n")
    assert node_score(pod * MiB, usage, "LeastAllocated") == least
    assert node_score(pod * MiB, usage, "MostAllocated") == most


def test_score_nodes_one_entry_per_node_in_order(ledger: EpcLedger) -> None:
    scores = score_nodes(
        16 * MiB, ledger.usages(["tiny", "plain", "roomy", "ghost", "tight"]), "LeastAllocated"
    )
    assert [name for name, _ in scores] == ["tiny", "plain", "roomy", "ghost", "tight"]
    assert dict(scores) == {"tiny": 5, "plain": 0, "roomy": 8, "ghost": 0, "tight": 1}
    packed = dict(score_nodes(16 * MiB, ledger.usages(["tiny", "roomy", "tight"]), "MostAllocated"))
    assert packed == {"tiny": 5, "roomy": 1, "tight": 8}


def test_best_node_highest_score_then_name() -> None:
    scores = [("b", 5), ("a", 5), ("c", 7), ("d", 9)]
    assert best_node(scores, {"a", "b", "c"}) == "c"
    assert best_node(scores, {"a", "b"}) == "a"
    assert best_node(scores, set()) is None
