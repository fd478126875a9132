"""Filter and score nodes by free EPC: the extender's decisions, as pure functions.

Input is the pod's effective EPC (bytes), the names kube-scheduler asks about and the accounting of
every known node (``EpcLedger.with_usages``: one consistent view; a name missing from it is a node
the ledger does not know); output is plain data.

:func:`filter_names` and :func:`score_names` are what the HTTP verbs call: one loop over the names,
in the order asked, with one dictionary lookup per name and nothing built per passing node
(kube-scheduler may ask about 5,000 nodes per scheduling cycle). :func:`filter_nodes` and
:func:`score_nodes` take ``(name, accounting)`` pairs (``EpcLedger.usages``) and run the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
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


@dataclass(frozen=True, slots=True)
class NamesFilterOutcome:
    """:class:`FilterOutcome` with the passing names in the order asked (duplicates kept).

    That order is the order of the ``NodeNames`` answer, so the answer needs no second pass.
    """

    passed: tuple[str, ...]
    failed: dict[str, str] = field(default_factory=dict)
    unresolvable: dict[str, str] = field(default_factory=dict)


def unfit_reason(pod_epc: int, usage: NodeUsage | None, resource: str) -> tuple[str, bool] | None:
    """Why a pod needing ``pod_epc`` bytes does not fit, and whether that is unresolvable; None if it fits."""
    return _unfit_reason(pod_epc, usage, resource, format_bytes)


def _unfit_reason(
    pod_epc: int, usage: NodeUsage | None, resource: str, text: Callable[[int], str]
) -> tuple[str, bool] | None:
    """:func:`unfit_reason` with ``text`` formatting amounts (``format_bytes``, or a memo of it)."""
    if pod_epc <= 0:
        return None
    if usage is None:
        return "node is not in the extender's EPC ledger (not listed or watched yet)", True
    if usage.capacity is None:
        return f"node has no SGX EPC ({resource})", True
    if pod_epc > usage.capacity:
        return (
            f"insufficient SGX EPC: pod requests {text(pod_epc)}, "
            f"node has only {text(usage.capacity)} in total",
            True,
        )
    free = usage.free
    assert free is not None  # capacity is set
    if free < pod_epc:
        return (
            f"insufficient SGX EPC: pod requests {text(pod_epc)}, "
            f"node has {text(max(free, 0))} free of {text(usage.capacity)}",
            False,
        )
    return None


def _memo_format_bytes() -> Callable[[int], str]:
    """``format_bytes`` remembering its answers: for one filter call, where amounts repeat across nodes."""
    known: dict[int, str] = {}

    def text(amount: int) -> str:
        found = known.get(amount)
        if found is None:
            found = known[amount] = format_bytes(amount)
        return found

    return text


def filter_names(
    pod_epc: int, names: Sequence[str], usages: Mapping[str, NodeUsage], resource: str
) -> NamesFilterOutcome:
    """Keep the named nodes with at least ``pod_epc`` bytes of free EPC, in the order asked.

    ``usages`` holds the accounting of every node the ledger knows; a name not in it fails as
    unknown. A pod needing no EPC passes everywhere (known to the ledger or not).
    """
    if pod_epc <= 0:
        return NamesFilterOutcome(passed=tuple(names))
    passed: list[str] = []
    keep = passed.append
    failed: dict[str, str] = {}
    unresolvable: dict[str, str] = {}
    text = _memo_format_bytes()  # the pod's request and the common capacities repeat
    get = usages.get
    for name in names:  # one loop, no call per passing node: kube-scheduler may ask about 5,000
        usage = get(name)
        if usage is not None:
            _, capacity, used, reserved = usage
            if capacity is not None and capacity - used - reserved >= pod_epc:
                keep(name)  # the common case, without building a verdict
                continue
        verdict = _unfit_reason(pod_epc, usage, resource, text)
        if verdict is None:
            keep(name)
        elif verdict[1]:
            unresolvable[name] = verdict[0]
        else:
            failed[name] = verdict[0]
    return NamesFilterOutcome(passed=tuple(passed), failed=failed, unresolvable=unresolvable)


def filter_nodes(pod_epc: int, nodes: Iterable[NodeView], resource: str) -> FilterOutcome:
    """:func:`filter_names` over ``(name, accounting)`` pairs from one ledger view; ``passed`` as a set."""
    names, usages = _split(nodes)
    outcome = filter_names(pod_epc, names, usages, resource)
    return FilterOutcome(
        passed=frozenset(outcome.passed), failed=outcome.failed, unresolvable=outcome.unresolvable
    )


def node_score(pod_epc: int, usage: NodeUsage | None, strategy: ScoringStrategy) -> int:
    """0..10 for one node, like the NodeResourcesFit strategies with the pod placed on the node.

    ``LeastAllocated``: share of EPC still free after placement (spreads). ``MostAllocated``: share in
    use after placement (bin-packs). 0 when the pod does not fit, the node has no EPC, or the pod
    needs no EPC (the extender has no opinion then).
    """
    return score_nodes(pod_epc, [("", usage)], strategy)[0][1]


def score_names(
    pod_epc: int, names: Sequence[str], usages: Mapping[str, NodeUsage], strategy: ScoringStrategy
) -> list[int]:
    """The score of each named node, in the order asked (see :func:`node_score`).

    ``usages`` holds the accounting of every node the ledger knows; a name not in it scores 0.
    """
    if pod_epc <= 0:
        return [MIN_EXTENDER_PRIORITY] * len(names)
    most = strategy == "MostAllocated"
    scores: list[int] = []
    append = scores.append
    get = usages.get
    for name in names:  # one loop, no call per node: kube-scheduler may ask about 5,000
        usage = get(name)
        if usage is None:
            append(MIN_EXTENDER_PRIORITY)
            continue
        _, capacity, used, reserved = usage
        if not capacity:
            append(MIN_EXTENDER_PRIORITY)
            continue
        requested = used + reserved + pod_epc
        if requested > capacity:
            append(MIN_EXTENDER_PRIORITY)
        elif most:
            append(requested * MAX_EXTENDER_PRIORITY // capacity)
        else:
            append((capacity - requested) * MAX_EXTENDER_PRIORITY // capacity)
    return scores


def score_nodes(pod_epc: int, nodes: Iterable[NodeView], strategy: ScoringStrategy) -> list[tuple[str, int]]:
    """(node, score) for each node asked, in the order asked: :func:`score_names` over pairs."""
    names, usages = _split(nodes)
    return list(zip(names, score_names(pod_epc, names, usages, strategy), strict=True))


def best_node(scores: Iterable[tuple[str, int]], eligible: Iterable[str]) -> str | None:
    """The eligible node with the highest score, ties broken by node name; None when none is eligible."""
    allowed = set(eligible)
    ranked = sorted((-score, name) for name, score in scores if name in allowed)
    return ranked[0][1] if ranked else None


def _split(nodes: Iterable[NodeView]) -> tuple[list[str], dict[str, NodeUsage]]:
    """Names in order and the known nodes' accounting, from the pairs of one ledger view."""
    names: list[str] = []
    usages: dict[str, NodeUsage] = {}
    for name, usage in nodes:
        names.append(name)
        if usage is not None:
            usages[name] = usage
    return names, usages
