"""filter_names / score_names: the decisions, table-driven over a small ledger."""

from __future__ import annotations

import pytest

from confidential_pods.quantities import MiB
from extender.ledger import EpcLedger
from extender.podepc import PodEpc
from extender.scheduling import NamesFilterOutcome, filter_names, score_names
from tests.extender.ledgers import ledger_of

RES = "alibabacloud.com/sgx_epc_MiB"


def filter_on(ledger: EpcLedger, pod_epc: int, names: list[str]) -> NamesFilterOutcome:
    return ledger.with_usages(lambda usages: filter_names(pod_epc, names, usages, RES))


def scores_on(ledger: EpcLedger, pod_epc: int, names: list[str], strategy: str) -> dict[str, int]:
    scores = ledger.with_usages(lambda usages: score_names(pod_epc, names, usages, strategy))  # type: ignore[arg-type]
    assert len(scores) == len(names)
    return dict(zip(names, scores, strict=True))


@pytest.fixture
def ledger() -> EpcLedger:
    return ledger_of(
        {"roomy": 93 * MiB, "tight": 93 * MiB, "plain": None, "tiny": 32 * MiB},
        [PodEpc("u1", "ns", "a", "tight", 40 * MiB)],
        reserved=[PodEpc("u2", "ns", "b", "tight", 21 * MiB)],
    )


def test_filter_splits_nodes_with_actionable_reasons(ledger: EpcLedger) -> None:
    outcome = filter_on(ledger, 64 * MiB, ["roomy", "tight", "plain", "tiny", "ghost"])
    assert outcome.passed == ("roomy",)
    assert outcome.failed == {"tight": "insufficient SGX EPC: pod requests 64Mi, node has 32Mi free of 93Mi"}
    assert outcome.unresolvable == {
        "plain": f"node has no SGX EPC ({RES})",
        "tiny": "insufficient SGX EPC: pod requests 64Mi, node has only 32Mi in total",
        "ghost": "node is not in the extender's EPC ledger (not listed or watched yet)",
    }


def test_reservations_count_against_free(ledger: EpcLedger) -> None:
    assert filter_on(ledger, 32 * MiB, ["tight"]).passed == ("tight",)
    assert filter_on(ledger, 33 * MiB, ["tight"]).passed == ()
    ledger.unreserve("u2")
    assert filter_on(ledger, 53 * MiB, ["tight"]).passed == ("tight",)


def test_pod_without_epc_passes_every_node(ledger: EpcLedger) -> None:
    outcome = filter_on(ledger, 0, ["roomy", "plain", "ghost"])
    assert outcome.passed == ("roomy", "plain", "ghost")
    assert not outcome.failed and not outcome.unresolvable


def test_overcommitted_node_reports_zero_free() -> None:
    ledger = EpcLedger()
    ledger.set_node("n", 10 * MiB)
    ledger.set_pod(PodEpc("u", "ns", "p", "n", 12 * MiB))
    outcome = filter_on(ledger, MiB, ["n"])
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
    assert scores_on(ledger, pod * MiB, ["n"], "LeastAllocated") == {"n": least}
    assert scores_on(ledger, pod * MiB, ["n"], "MostAllocated") == {"n": most}


def test_scores_one_entry_per_node_in_order(ledger: EpcLedger) -> None:
    names = ["tiny", "plain", "roomy", "ghost", "tight"]
    scores = ledger.with_usages(lambda usages: score_names(16 * MiB, names, usages, "LeastAllocated"))
    assert scores == [5, 0, 8, 0, 1]
    packed = scores_on(ledger, 16 * MiB, ["tiny", "roomy", "tight"], "MostAllocated")
    assert packed == {"tiny": 5, "roomy": 1, "tight": 8}
