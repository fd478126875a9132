"""The one-loop verb paths: ``filter_names``/``score_names`` over ``EpcLedger.with_usages``, and the
answer writers (``filter_result_in_order``, ``PrioritizeWriter``) against the plain definitions."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confidential_pods.quantities import MiB
from confidential_pods.settings import ScoringStrategy
from extender.ledger import EpcLedger, NodeUsage
from extender.podepc import PodEpc
from extender.scheduling import filter_names, score_names, unfit_reason
from extender.wire import Candidates, PrioritizeWriter, filter_result, filter_result_in_order
from tests.extender.ledgers import ledger_of

RES = "alibabacloud.com/sgx_epc_MiB"
NODES = ("n1", "n2", "n3", "n4", "n5")

capacities = st.one_of(st.none(), st.integers(min_value=0, max_value=64).map(lambda m: m * MiB))


@st.composite
def ledgers(draw: st.DrawFn) -> EpcLedger:
    ledger = EpcLedger()
    for name in draw(st.lists(st.sampled_from(NODES), unique=True)):
        ledger.set_node(name, draw(capacities))
    for i in range(draw(st.integers(min_value=0, max_value=8))):
        node = draw(st.sampled_from(NODES))
        pod = PodEpc(f"u{i}", "ns", f"p{i}", node, draw(st.integers(min_value=1, max_value=24)) * MiB)
        if draw(st.booleans()):
            ledger.set_pod(pod)
        else:
            ledger.reserve(pod, now=0)
    return ledger


asked = st.lists(st.sampled_from((*NODES, "ghost")), max_size=12)  # unknown names and duplicates
pod_epcs = st.one_of(st.just(0), st.integers(min_value=1, max_value=80).map(lambda m: m * MiB))
strategies = st.sampled_from(("LeastAllocated", "MostAllocated"))


def model_score(pod: int, usage: NodeUsage | None, strategy: ScoringStrategy) -> int:
    """docs/extender.md: the pod placed on the node, rounded down; 0 when it does not fit."""
    if pod <= 0 or usage is None or not usage.capacity:
        return 0
    taken = usage.used + usage.reserved + pod
    if taken > usage.capacity:
        return 0
    if strategy == "MostAllocated":
        return taken * 10 // usage.capacity
    return (usage.capacity - taken) * 10 // usage.capacity


@settings(max_examples=300, deadline=None)
@given(ledger=ledgers(), names=asked, pod=pod_epcs)
def test_filter_names_is_unfit_reason_per_name_in_order(
    ledger: EpcLedger, names: list[str], pod: int
) -> None:
    outcome = ledger.with_usages(lambda usages: filter_names(pod, names, usages, RES))
    verdicts = {name: unfit_reason(pod, ledger.usage(name), RES) for name in names}
    assert outcome.passed == tuple(name for name in names if verdicts[name] is None)
    assert outcome.failed == {n: v[0] for n, v in verdicts.items() if v is not None and not v[1]}
    assert outcome.unresolvable == {n: v[0] for n, v in verdicts.items() if v is not None and v[1]}


@settings(max_examples=300, deadline=None)
@given(ledger=ledgers(), names=asked, pod=pod_epcs, strategy=strategies)
def test_score_names_is_the_documented_formula_in_order(
    ledger: EpcLedger, names: list[str], pod: int, strategy: ScoringStrategy
) -> None:
    scores = ledger.with_usages(lambda usages: score_names(pod, names, usages, strategy))
    assert scores == [model_score(pod, ledger.usage(name), strategy) for name in names]


def test_filter_names_messages_and_order() -> None:
    ledger = ledger_of(
        {"roomy": 93 * MiB, "tight": 93 * MiB, "plain": None}, [PodEpc("u1", "ns", "a", "tight", 61 * MiB)]
    )
    names = ("tight", "roomy", "ghost", "plain", "roomy")
    outcome = ledger.with_usages(lambda usages: filter_names(64 * MiB, names, usages, RES))
    assert outcome.passed == ("roomy", "roomy")
    assert outcome.failed == {"tight": "insufficient SGX EPC: pod requests 64Mi, node has 32Mi free of 93Mi"}
    assert outcome.unresolvable == {
        "ghost": "node is not in the extender's EPC ledger (not listed or watched yet)",
        "plain": f"node has no SGX EPC ({RES})",
    }
    # a pod requesting no EPC passes every node, known or not, in the order asked
    assert filter_names(0, names, {}, RES).passed == names


def test_with_usages_holds_the_lock_for_the_whole_read() -> None:
    ledger = EpcLedger()
    ledger.set_node("a", 10)
    inside = threading.Event()
    release = threading.Event()
    writer_done = threading.Event()

    def read(usages: Any) -> int | None:
        inside.set()
        release.wait(5)
        return usages["a"].capacity  # type: ignore[no-any-return]

    def write() -> None:
        inside.wait(5)
        ledger.set_node("a", 20)
        writer_done.set()

    writer = threading.Thread(target=write)
    writer.start()
    result: list[int | None] = []
    reader = threading.Thread(target=lambda: result.append(ledger.with_usages(read)))
    reader.start()
    inside.wait(5)
    assert not writer_done.wait(0.2)  # the writer waits for the read to finish
    release.set()
    reader.join(5)
    writer.join(5)
    assert result == [10]
    assert ledger.usage("a") == NodeUsage("a", 20, 0, 0, 20)


# --------------------------------------------------------------------------- answer writers


def dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.text(max_size=12), st.integers(min_value=0, max_value=10)),
        max_size=20,
    ),
    max_names=st.integers(min_value=1, max_value=8),
)
def test_prioritize_writer_writes_what_json_dumps_writes(
    pairs: list[tuple[str, int]], max_names: int
) -> None:
    writer = PrioritizeWriter(max_names=max_names)
    names = [name for name, _ in pairs]
    scores = [score for _, score in pairs]
    expected = dumps([{"Host": name, "Score": score} for name, score in pairs])
    assert writer.write(names, scores) == expected
    assert writer.write(names, scores) == expected  # from the cache
    assert len(writer) <= max(max_names, len(set(names)))


def test_prioritize_writer_escapes_and_bounds_its_cache() -> None:
    writer = PrioritizeWriter(max_names=3)
    names = ['we"ird\\', "nödé", "a", "b"]
    assert json.loads(writer.write(names, [1, 2, 3, 10])) == [
        {"Host": 'we"ird\\', "Score": 1},
        {"Host": "nödé", "Score": 2},
        {"Host": "a", "Score": 3},
        {"Host": "b", "Score": 10},
    ]
    assert writer.write(["c", "d"], [0, 0]) == '[{"Host":"c","Score":0},{"Host":"d","Score":0}]'
    assert len(writer) <= 4


def test_prioritize_writer_scores_outside_the_range_still_valid_json() -> None:
    writer = PrioritizeWriter()
    assert writer.write(["a", "b"], [-1, 11]) == dumps(
        [{"Host": "a", "Score": -1}, {"Host": "b", "Score": 11}]
    )
    with pytest.raises(ValueError, match="2 names but 1 scores"):
        writer.write(["a", "b"], [1])


NODE_LIST: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "NodeList",
    "metadata": {"resourceVersion": "7"},
    "items": [{"metadata": {"name": n}, "status": {}} for n in ("a", "b", "c", "b")],
}


@pytest.mark.parametrize(
    "candidates",
    [
        Candidates(pod={}, names=("a", "b", "c", "b")),
        Candidates(pod={}, names=("a", "b", "c", "b"), nodes=tuple(NODE_LIST["items"]), node_list=NODE_LIST),
    ],
    ids=["NodeNames", "Nodes"],
)
def test_filter_result_in_order_equals_filter_result(candidates: Candidates) -> None:
    failed = {"a": "insufficient SGX EPC"}
    unresolvable = {"c": "node has no SGX EPC"}
    passed = ("b", "b")
    assert filter_result_in_order(candidates, passed, failed, unresolvable) == filter_result(
        candidates, frozenset(passed), failed, unresolvable
    )
