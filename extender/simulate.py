"""``confidential-pods simulate``: place pending pods on a snapshot with the extender's own logic.

The core (:func:`simulate`) runs the same filter, prioritize and bind code as the HTTP extender
over a ledger filled from a snapshot, placing the pending pods in file order: the highest score
wins, ties go to the node name that sorts first. :func:`render` turns the result into the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources

from confidential_pods.epc import effective_epc
from confidential_pods.quantities import format_bytes
from confidential_pods.settings import ScoringStrategy, Settings
from extender.binding import MemoryBinder, bind_pod
from extender.ledger import EpcLedger, NodeEpc
from extender.podepc import PodEpc, pod_uid
from extender.scheduling import best_node, filter_nodes, score_nodes
from extender.snapshot import Snapshot, fill_ledger, parse_snapshot
from extender.wire import BindRequest

BAR_WIDTH = 30


@dataclass(frozen=True)
class Placement:
    """What happened to one pending pod. ``node`` is None when it was not placed."""

    namespace: str
    name: str
    epc: int
    node: str | None = None
    score: int | None = None
    #: Why each node was refused, when no node passed the filter.
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def needs_epc(self) -> bool:
        return self.epc > 0

    @property
    def unschedulable(self) -> bool:
        return self.needs_epc and self.node is None


@dataclass(frozen=True)
class SimulationResult:
    strategy: ScoringStrategy
    resource: str
    placements: tuple[Placement, ...]
    #: Every node after placement.
    nodes: tuple[NodeEpc, ...]
    #: EPC used per node before the pending pods were placed.
    used_before: dict[str, int]


def example_snapshot() -> Snapshot:
    """The built-in example cluster (``extender/examples/cluster.yaml``)."""
    text = resources.files("extender.examples").joinpath("cluster.yaml").read_text(encoding="utf-8")
    return parse_snapshot(text, "built-in example cluster")


def simulate(
    snapshot: Snapshot, settings: Settings, strategy: ScoringStrategy | None = None
) -> SimulationResult:
    """Place the snapshot's pending pods one by one, as the extender would answer kube-scheduler."""
    strategy = strategy or settings.scoring_strategy
    profile = settings.profile
    ledger = EpcLedger()
    fill_ledger(ledger, snapshot, profile)
    used_before = {name: usage.used for name in ledger.nodes() if (usage := ledger.usage(name)) is not None}
    binder = MemoryBinder(snapshot.pods_by_name())
    placements = []
    for pod in snapshot.pending_pods:
        metadata = pod["metadata"]
        namespace, name = str(metadata.get("namespace") or "default"), str(metadata["name"])
        epc = effective_epc(pod, profile)
        if epc <= 0:
            placements.append(Placement(namespace=namespace, name=name, epc=0))
            continue
        names = ledger.nodes()
        outcome = filter_nodes(epc, ledger.usages(names), profile.epc_resource)
        if not outcome.passed:
            reasons = {**outcome.failed, **outcome.unresolvable}
            placements.append(
                Placement(namespace=namespace, name=name, epc=epc, reasons=dict(sorted(reasons.items())))
            )
            continue
        scores = score_nodes(epc, ledger.usages(sorted(outcome.passed)), strategy)
        node = best_node(scores, outcome.passed)
        assert node is not None
        uid = pod_uid(pod)
        request = BindRequest(pod_name=name, pod_namespace=namespace, pod_uid=uid, node=node)
        bound = bind_pod(request, epc, ledger=ledger, binder=binder, profile=profile, now=0.0)
        if not bound.bound:  # cannot happen single-threaded; kept honest rather than assumed
            placements.append(Placement(namespace=namespace, name=name, epc=epc, reasons={node: bound.error}))
            continue
        # The watch would now show the pod on the node: the reservation becomes use.
        ledger.set_pod(PodEpc(uid=uid, namespace=namespace, name=name, node=node, epc=epc))
        placements.append(
            Placement(namespace=namespace, name=name, epc=epc, node=node, score=dict(scores)[node])
        )
    nodes = tuple(n for n in (ledger.node(name) for name in ledger.nodes()) if n is not None)
    return SimulationResult(
        strategy=strategy,
        resource=profile.epc_resource,
        placements=tuple(placements),
        nodes=nodes,
        used_before=used_before,
    )


def render(result: SimulationResult) -> str:
    """The simulation report: placements, EPC per node with a bar, unschedulable pods and why."""
    lines: list[str] = []
    placed = [p for p in result.placements if p.node is not None]
    stuck = [p for p in result.placements if p.unschedulable]
    free_riders = [p for p in result.placements if not p.needs_epc]
    lines.append(f"Scoring strategy {result.strategy}, EPC resource {result.resource}")
    lines.append(
        f"{len(result.placements)} pending pod(s): {len(placed)} placed, {len(stuck)} unschedulable, "
        f"{len(free_riders)} without EPC"
    )
    lines.append("")
    rows = [("POD", "EPC", "NODE", "SCORE")]
    for p in result.placements:
        if p.node is not None:
            rows.append((f"{p.namespace}/{p.name}", format_bytes(p.epc), p.node, str(p.score)))
        elif p.needs_epc:
            rows.append((f"{p.namespace}/{p.name}", format_bytes(p.epc), "- unschedulable", "-"))
        else:
            rows.append((f"{p.namespace}/{p.name}", "0", "- any node (needs no EPC)", "-"))
    lines.extend(_table(rows))
    lines.append("")
    lines.append(f"EPC per node  (# running before, + placed now, . free; bar = {BAR_WIDTH} cells)")
    node_rows = [("NODE", "USE", "", "USED / CAPACITY", "FREE")]
    for node in result.nodes:
        if node.capacity is None or node.free is None:
            node_rows.append((node.name, "no SGX EPC", "", "-", "-"))
            continue
        before = min(result.used_before.get(node.name, 0), node.used)
        share = (node.used + node.reserved) / node.capacity if node.capacity else 0.0
        node_rows.append(
            (
                node.name,
                _bar(before, node.used + node.reserved - before, node.capacity),
                f"{share:4.0%}",
                f"{format_bytes(node.used + node.reserved)} / {format_bytes(node.capacity)}",
                format_bytes(max(node.free, 0)),
            )
        )
    lines.extend(_table(node_rows) if result.nodes else ["(no nodes in the snapshot)"])
    if stuck:
        lines.append("")
        lines.append(f"Unschedulable ({len(stuck)})")
        for p in stuck:
            lines.append(f"  {p.namespace}/{p.name} requests {format_bytes(p.epc)}:")
            width = max(len(n) for n in p.reasons) if p.reasons else 0
            for node_name, reason in p.reasons.items():
                lines.append(f"    {node_name.ljust(width)}  {reason}")
            if not p.reasons:
                lines.append("    no nodes in the snapshot")
    return "\n".join(lines) + "\n"


def _bar(before: int, added: int, capacity: int) -> str:
    if capacity <= 0:
        return "[" + " " * BAR_WIDTH + "]"
    old = min(BAR_WIDTH, round(before * BAR_WIDTH / capacity))
    new = min(BAR_WIDTH - old, round((before + added) * BAR_WIDTH / capacity) - old)
    return "[" + "#" * old + "+" * max(new, 0) + "." * (BAR_WIDTH - old - max(new, 0)) + "]"


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
