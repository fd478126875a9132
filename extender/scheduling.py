"""Filter and score nodes by free EPC: the extender's decisions, as pure functions.

Input is the pod's effective EPC (bytes), the names kube-scheduler asks about and the accounting of
every known node (``EpcLedger.with_usages``: one consistent view; a name missing from it is a node
the ledger does not know); output is plain data. One loop over the names, in the order asked, with
one dictionary lookup per name and nothing built per passing node (kube-scheduler may ask about
5,000 nodes per scheduling cycle).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confidential_pods.quantities import format_bytes
from confidential_pods.settings import ScoringStrategy
from extender.ledger import NodeUsage, usage_of
from extender.wire import MAX_EXTENDER_PRIORITY, MIN_EXTENDER_PRIORITY


@dataclass(frozen=True, slots=True)
class NamesFilterOutcome:
    """Which nodes passed, in the order asked (duplicates kept), and why the others did not.

    ``failed`` nodes might fit after preemption (running pods hold the EPC); ``unresolvable`` ones
    cannot fit whatever is evicted (no EPC, too little in total, unknown to the ledger).
    """

    passed: tuple[str, ...]
    failed: dict[str, str] = field(default_factory=dict)
    unresolvable: dict[str, str] = field(default_factory=dict)


def unfit_reason(
    pod_epc: int, usage: NodeUsage | None, resource: str, held: int = 0
) -> tuple[str, bool] | None:
    """Why a pod needing ``pod_epc`` bytes does not fit, and whether that is unresolvable; None if it fits.

    ``held``: EPC of the node held for nominated pods that matter as much as this one (not free to it).
    """
    if held and usage is not None:
        usage = with_held(usage, held)
    return _unfit_reason(pod_epc, usage, resource, format_bytes)


def with_held(usage: NodeUsage, held: int) -> NodeUsage:
    """``usage`` with ``held`` more bytes unavailable (counted as reserved: kept for a nominated pod)."""
    return usage_of(usage.name, usage.capacity, usage.used, usage.reserved + held)


def held_view(usages: Mapping[str, NodeUsage], holds: Mapping[str, int]) -> Mapping[str, NodeUsage]:
    """The ledger's accounting as one pod sees it: nodes with EPC held for nominated pods have less free.

    ``holds`` is usually empty (no preemption under way): then ``usages`` itself, at no cost.
    """
    if not holds:
        return usages
    adjusted = {name: with_held(usages[name], held) for name, held in holds.items() if name in usages}
    return _Overlay(adjusted, usages)


class _Overlay(Mapping[str, NodeUsage]):
    """``adjusted`` over ``base`` without copying ``base`` (the ledger's, 15,000 nodes)."""

    def __init__(self, adjusted: dict[str, NodeUsage], base: Mapping[str, NodeUsage]) -> None:
        self._adjusted = adjusted
        self._base = base

    def __getitem__(self, name: str) -> NodeUsage:
        found = self._adjusted.get(name)
        return found if found is not None else self._base[name]

    def get(self, name: str, default: Any = None) -> Any:
        found = self._adjusted.get(name)
        return found if found is not None else self._base.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)


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
            free = usage.free
            if free is not None and free >= pod_epc:
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
        _, capacity, _, _, free = usage
        if not capacity or free is None or free < pod_epc:
            append(MIN_EXTENDER_PRIORITY)
        elif most:
            append((capacity - free + pod_epc) * MAX_EXTENDER_PRIORITY // capacity)
        else:
            append((free - pod_epc) * MAX_EXTENDER_PRIORITY // capacity)
    return scores
