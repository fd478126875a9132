"""Filter and score nodes by free EPC: the extender's decisions, as pure functions.

Input is the pod's effective EPC (bytes) and, for each node kube-scheduler asks about, its name and
accounting (``EpcLedger.usages(names)``: one consistent view, None for a node the ledger does not
know); output is plain data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from confidential_pods.quantities import format_bytes
from confidential_pods.settings import ScoringStrategy
from extender.ledger import NodeUsage
from extender.wire import MAX_EXTENDER_PRIORITY, MIN_EXTENDER_PRIORITY

#: (node name, its accounting or None when unknown), as ``EpcLedger.usages`` returns them.
NodeView = tuple[str, NodeUsage | None]


@dataclass(frozen=True)
class FilterOutcome:
    """Which nodes passed, and why the others did not.

    ``failed`` nodes might fit after preemption (running pods hold the EPC); ``unresolvable`` ones
    cannot fit whatever is evicted (no EPC, too little in total, unknown to the ledger).
    """

    passed: frozenset[str]
    failed: dict[str, str] = field(default_factory=dict)
    unresolvable: dict[str, str] = field(default_factory=dict)


def unfit_reason(pod_epc: int, usage: NodeUsage | None, resource: str) -> tuple[str, bool] | None:
    """Why a pod needing ``pod_epc`` bytes does not fit, and whether that is unresolvable; None if it fits."""
    if pod_epc <= 0:
        return None
    if usage is None:
        return "node is not in the extender's EPC ledger (not listed or watched yet)", True
    if usage.capacity is None:
        return f"node has no SGX EPC ({resource})", True
    if pod_epc > usage.capacity:
        return (
            f"insufficient SGX EPC: pod requests {format_bytes(pod_epc)}, "
            f"node has only {format_bytes(usage.capacity)} in total",
            True,
        )
    free = usage.free
    assert free is not None  # capacity is set
    if free < pod_epc:
        return (
            f"insufficient SGX EPC: pod requests {format_bytes(pod_epc)}, "
            f"node has {format_bytes(max(free, 0))} free of {format_bytes(usage.capacity)}",
            False,
        )
    return None


def filter_nodes(pod_epc: int, nodes: Iterable[NodeView], resource: str) -> FilterOutcome:
    """Keep the nodes with at least ``pod_epc`` bytes of free EPC. A pod needing none passes everywhere."""
    if pod_epc <= 0:
        return FilterOutcome(passed=frozenset(name for name, _ in nodes))
    passed: set[str] = set()
    failed: dict[str, str] = {}
    unresolvable: dict[str, str] = {}
    for name, usage in nodes:
        if (
            usage is not None
            and usage.capacity is not None
            and usage.capacity - usage.used - usage.reserved >= pod_epc
        ):
            passed.add(name)  # the common case, without building a verdict
            continue
        verdict = unfit_reason(pod_epc, usage, resource)
        if verdict is None:
            passed.add(name)
        elif verdict[1]:
            unresolvable[name] = verdict[0]
        else:
            failed[name] = verdict[0]
    return FilterOutcome(passed=frozenset(passed), failed=failed, unresolvable=unresolvable)


def node_score(pod_epc: int, usage: NodeUsage | None, strategy: ScoringStrategy) -> int:
    """0..10 for one node, like the NodeResourcesFit strategies with the pod placed on the node.

    ``LeastAllocated``: share of EPC still free after placement (spreads). ``MostAllocated``: share in
    use after placement (bin-packs). 0 when the pod does not fit, the node has no EPC, or the pod
    needs no EPC (the extender has no opinion then).
    """
    return score_nodes(pod_epc, [("", usage)], strategy)[0][1]


def score_nodes(pod_epc: int, nodes: Iterable[NodeView], strategy: ScoringStrategy) -> list[tuple[str, int]]:
    """(node, score) for each node asked, in the order asked (see :func:`node_score`)."""
    if pod_epc <= 0:
        return [(name, MIN_EXTENDER_PRIORITY) for name, _ in nodes]
    most = strategy == "MostAllocated"
    scores: list[tuple[str, int]] = []
    append = scores.append
    for name, usage in nodes:  # one loop, no call per node: kube-scheduler may ask about 5,000
        capacity = usage.capacity if usage is not None else None
        if not capacity or usage is None:
            append((name, MIN_EXTENDER_PRIORITY))
            continue
        requested = usage.used + usage.reserved + pod_epc
        if requested > capacity:
            append((name, MIN_EXTENDER_PRIORITY))
        elif most:
            append((name, requested * MAX_EXTENDER_PRIORITY // capacity))
        else:
            append((name, (capacity - requested) * MAX_EXTENDER_PRIORITY // capacity))
    return scores


def best_node(scores: Iterable[tuple[str, int]], eligible: Iterable[str]) -> str | None:
    """The eligible node with the highest score, ties broken by node name; None when none is eligible."""
    allowed = set(eligible)
    ranked = sorted((-score, name) for name, score in scores if name in allowed)
    return ranked[0][1] if ranked else None
