"""Ledgers for tests, written as what they hold: node capacities (None: no SGX), pods, reservations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from extender.ledger import EpcLedger
from extender.podepc import PodEpc


def ledger_of(
    nodes: Mapping[str, int | None],
    pods: Iterable[PodEpc] = (),
    *,
    reserved: Iterable[PodEpc] = (),
    nominated: Iterable[PodEpc] = (),
) -> EpcLedger:
    """A ledger with these nodes, ``pods`` bound, ``reserved`` reserved (at time 0) and ``nominated``."""
    ledger = EpcLedger()
    for name, capacity in nodes.items():
        ledger.set_node(name, capacity)
    for pod in pods:
        ledger.set_pod(pod)
    for pod in reserved:
        ledger.reserve(pod, now=0)
    for pod in nominated:
        ledger.nominate(pod)
    return ledger
