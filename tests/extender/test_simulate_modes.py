"""`confidential-pods simulate --mode`: native (kube-scheduler's NodeResourcesFit scores EPC 0-100 and binds)
and ledger (the extender's prioritize 0-10 and bind), and the report saying which."""

from __future__ import annotations

import logging

import pytest

from confidential_pods.cli import main
from confidential_pods.quantities import MiB
from confidential_pods.settings import ScoringStrategy, Settings
from extender.ledger import usage_of
from extender.modes import Mode
from extender.simulate import example_facts, fit_score, render, simulate
from tests.extender import scheduler_json as sj
from tests.extender.test_simulate import cluster, small_cluster

UNSCORED = (
    "NodeResourcesFit's cpu and memory scores (the overlays weigh them 1, 1 to EPC's 3), other score plugins"
)


@pytest.mark.parametrize(
    ("epc", "capacity", "used", "reserved", "strategy", "score"),
    [
        (1, 3, 0, 0, "LeastAllocated", 66),  # (3 - 1) * 100 // 3, rounded down as kube-scheduler does
        (1, 3, 0, 0, "MostAllocated", 33),
        (30, 100, 40, 0, "LeastAllocated", 30),  # requested after placing: 40 + 30
        (30, 100, 40, 0, "MostAllocated", 70),
        (10, 100, 40, 20, "LeastAllocated", 30),  # what is reserved counts as requested
        (70, 100, 40, 0, "LeastAllocated", 0),  # does not fit: leastRequestedScore's 0
        (70, 100, 40, 0, "MostAllocated", 100),  # mostRequestedScore caps requested at capacity
        (8, 0, 0, 0, "LeastAllocated", 0),
        (8, None, 0, 0, "MostAllocated", 0),  # no EPC on the node
    ],
)
def test_fit_score_is_node_resources_fit_for_epc(
    epc: int, capacity: int | None, used: int, reserved: int, strategy: ScoringStrategy, score: int
) -> None:
    assert fit_score(epc, usage_of("n", capacity, used, reserved), strategy) == score


def test_fit_score_of_an_unknown_node_is_0() -> None:
    assert fit_score(8, None, "MostAllocated") == 0


def placed(
    mode: Mode, strategy: ScoringStrategy = "LeastAllocated"
) -> dict[str, tuple[str | None, int | None]]:
    return {
        p.name: (p.node, p.score) for p in simulate(small_cluster(), Settings(), strategy, mode).placements
    }


@pytest.mark.parametrize(
    ("strategy", "native", "ledger"),
    [
        ("LeastAllocated", [("a-node", 70), ("a-node", 40), ("b-node", 10)], [("a-node", 7), ("a-node", 4),
                                                                              ("b-node", 1)]),
        ("MostAllocated", [("b-node", 70), ("b-node", 100), ("a-node", 50)], [("b-node", 7), ("b-node", 10),
                                                                              ("a-node", 5)]),
    ],
)  # fmt: skip
def test_the_modes_choose_alike_here_each_on_its_own_scale(
    strategy: ScoringStrategy, native: list[tuple[str, int]], ledger: list[tuple[str, int]]
) -> None:
    names = ("first", "second", "third")
    assert [placed("native", strategy)[name] for name in names] == native
    assert [placed("ledger", strategy)[name] for name in names] == ledger


@pytest.mark.parametrize(
    ("strategy", "a_used", "b_used", "epc", "native", "ledger"),
    [
        # a: 71 left after placing, b: 75; both 7 on 0-10, where the tie goes to a by name
        ("LeastAllocated", 25, 21, 4, ("b", 75), ("a", 7)),
        # a: 86 requested after placing, b: 89; both 8 on 0-10
        ("MostAllocated", 81, 84, 5, ("b", 89), ("a", 8)),
    ],
)
def test_the_modes_choose_differently_where_0_10_rounds_to_a_tie(
    strategy: ScoringStrategy,
    a_used: int,
    b_used: int,
    epc: int,
    native: tuple[str, int],
    ledger: tuple[str, int],
) -> None:
    snapshot = cluster(
        nodes=(sj.node("a", 100), sj.node("b", 100)),
        pods=(
            sj.pod("on-a", epc_mib=a_used, node_name="a", phase="Running"),
            sj.pod("on-b", epc_mib=b_used, node_name="b", phase="Running"),
            sj.pod("new", epc_mib=epc),
        ),
    )
    chosen: dict[Mode, tuple[str, int]] = {"native": native, "ledger": ledger}
    for mode, expected in chosen.items():
        (placement,) = simulate(snapshot, Settings(), strategy, mode).placements
        assert (placement.node, placement.score) == expected, mode


def test_native_binds_as_kube_scheduler_the_pod_then_counts_as_used() -> None:
    """No extender reservation: the pod is on its node, as the watch sees it; the next pod finds less EPC."""
    snapshot = cluster(
        nodes=(sj.node("only", 64),), pods=(sj.pod("one", epc_mib=40), sj.pod("two", epc_mib=40))
    )
    result = simulate(snapshot, Settings())
    one, two = result.placements
    assert (one.node, one.score) == ("only", 37)  # (64 - 40) * 100 // 64
    assert two.node is None and two.reasons == {
        "only": "insufficient SGX EPC: pod requests 40Mi, node has 24Mi free of 64Mi"
    }
    (node,) = result.nodes
    assert (node.used, node.reserved) == (40 * MiB, 0)


@pytest.mark.parametrize(("mode", "binds"), [("native", []), ("ledger", ["bound payments/p to n"])])
def test_only_ledger_mode_calls_the_extenders_bind(
    mode: Mode, binds: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="extender.verbs")
    (placement,) = simulate(
        cluster((sj.node("n", 64),), (sj.pod("p", epc_mib=8),)), Settings(), mode=mode
    ).placements
    assert placement.node == "n"
    assert [r.getMessage() for r in caplog.records if r.name == "extender.verbs"] == binds


def test_the_library_default_is_native() -> None:
    result = simulate(small_cluster(), Settings())
    assert result.mode == "native"
    assert [p.score for p in result.placements if p.node] == [70, 40, 10]


FILTERS = "Filters: cordons, taints and tolerations, nodeSelector, required node affinity, then free EPC"
STRATEGY = "Scoring strategy MostAllocated, EPC resource alibabacloud.com/sgx_epc_MiB"
PACKS = "MostAllocated favours the least EPC left after placing (packs)"


@pytest.mark.parametrize(
    ("mode", "strategy", "lines"),
    [
        ("native", "MostAllocated", [
            "Mode native: kube-scheduler counts, scores (NodeResourcesFit MostAllocated, EPC only here) and "
            "binds; the extender filters",
            STRATEGY,
            f"SCORE 0-100, higher is preferred: NodeResourcesFit's EPC share, {PACKS}",
            f"{FILTERS} (the extender, as NodeResourcesFit)",
        ]),
        ("ledger", "MostAllocated", [
            "Mode ledger: the extender filters, scores MostAllocated 0-10 and binds",
            STRATEGY,
            f"SCORE 0-10, higher is preferred: {PACKS}",
            f"{FILTERS} (the extender)",
        ]),
    ],
)  # fmt: skip
def test_the_report_starts_with_the_mode(mode: Mode, strategy: ScoringStrategy, lines: list[str]) -> None:
    report = render(simulate(small_cluster(), Settings(), strategy, mode))
    assert report.splitlines()[:4] == lines


def test_native_says_what_its_score_leaves_out() -> None:
    native = render(simulate(small_cluster(), Settings()))
    assert f"\n  {UNSCORED}: 3 pod(s)\n" in native  # the three pods it scored
    assert UNSCORED not in render(simulate(small_cluster(), Settings(), mode="ledger"))


def test_the_example_cluster_places_differently_by_mode() -> None:
    """Its checkout replicas: 0-10 ties .11 and .12 for the second (name wins); 0-100 does not."""

    def checkout(mode: Mode) -> list[tuple[str | None, int | None]]:
        result = simulate(example_facts(Settings()), Settings(), mode=mode)
        return [(p.node, p.score) for p in result.placements if p.origin == "Deployment payments/checkout"]

    assert checkout("native") == [
        ("cn-hangzhou.10.0.1.11", 56),
        ("cn-hangzhou.10.0.1.12", 56),
        ("cn-hangzhou.10.0.1.11", 53),
    ]
    assert checkout("ledger") == [
        ("cn-hangzhou.10.0.1.11", 5),
        ("cn-hangzhou.10.0.1.11", 5),
        ("cn-hangzhou.10.0.1.12", 5),
    ]


def test_an_unknown_mode_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--mode", "kube"])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert exited.value.code == 2 and captured.out == ""
    assert errors == [
        "confidential-pods simulate: error: argument --mode: invalid choice: 'kube' "
        "(choose from 'native', 'ledger')"
    ]
