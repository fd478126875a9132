"""``confidential-pods simulate``: place pending pods on a snapshot with the extender's own verbs.

:func:`simulate` fills a ledger from a snapshot's facts and, for each pending pod in file order, calls
the same :class:`~extender.verbs.Verbs` methods kube-scheduler reaches over HTTP — filter, prioritize,
bind — with the same arguments (the pod, every node's name): the highest score wins, ties go to the
node name that sorts first (kube-scheduler picks among equals at random). Binds are final in memory.
:func:`render` turns the result into the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from confidential_pods.documents import printable
from confidential_pods.epc import effective_epc
from confidential_pods.quantities import format_bytes
from confidential_pods.settings import ScoringStrategy, Settings
from confidential_pods.terminal import BAR_WIDTH, bar, table
from extender.binding import MemoryBinder
from extender.ledger import EpcLedger, NodeEpc
from extender.podepc import pod_uid
from extender.snapshot import SnapshotFacts, fill_ledger_from_facts, snapshot_facts
from extender.verbs import Verbs
from extender.wire import BindRequest, Candidates


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
    #: The pod's EPC request could not be read (``reasons`` says why).
    unreadable: bool = False

    @property
    def needs_epc(self) -> bool:
        return self.epc > 0 or self.unreadable

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
    #: Quantities of the snapshot that could not be read (counted as no EPC).
    unreadable: tuple[str, ...] = ()


def example_facts(settings: Settings) -> SnapshotFacts:
    """The built-in example cluster (``extender/examples/cluster.yaml``), pending pods kept."""
    text = resources.files("extender.examples").joinpath("cluster.yaml").read_text(encoding="utf-8")
    return snapshot_facts(text, settings.profile, "built-in example cluster", keep_pending=True)


def simulate(
    facts: SnapshotFacts, settings: Settings, strategy: ScoringStrategy | None = None
) -> SimulationResult:
    """Place the snapshot's pending pods (``facts.pending``) one by one, as the extender answers."""
    settings = replace(settings, scoring_strategy=strategy or settings.scoring_strategy)
    ledger = EpcLedger()
    fill_ledger_from_facts(ledger, facts)
    used_before = {name: usage.used for name in ledger.nodes() if (usage := ledger.usage(name)) is not None}
    verbs = Verbs(ledger, settings, MemoryBinder(known=facts.pods), clock=lambda: 0.0)
    names = tuple(ledger.nodes())
    placements = tuple(_place(verbs, pod, names) for pod in facts.pending)
    nodes = tuple(n for n in (ledger.node(name) for name in names) if n is not None)
    return SimulationResult(
        strategy=settings.scoring_strategy,
        resource=settings.profile.epc_resource,
        placements=placements,
        nodes=nodes,
        used_before=used_before,
        unreadable=tuple(facts.unreadable),
    )


def _place(verbs: Verbs, pod: dict[str, Any], names: tuple[str, ...]) -> Placement:
    """filter → prioritize → bind for one pod, through the verbs' own answers."""
    metadata = pod["metadata"]
    namespace, name = str(metadata["namespace"]), str(metadata["name"])
    unreadable: list[str] = []
    epc = effective_epc(pod, verbs.settings.profile, unreadable)
    if epc <= 0 and not unreadable:
        return Placement(namespace=namespace, name=name, epc=0)
    filtered = verbs.filter(Candidates(pod=pod, names=names)).body
    passed: list[str] = filtered["NodeNames"] or []
    if not passed:
        reasons = {**filtered["FailedNodes"], **filtered["FailedAndUnresolvableNodes"]}
        return Placement(
            namespace=namespace,
            name=name,
            epc=epc,
            reasons=dict(sorted(reasons.items())),
            unreadable=bool(unreadable),
        )
    priorities = json.loads(verbs.prioritize(Candidates(pod=pod, names=tuple(passed))).body)
    best = min(priorities, key=lambda entry: (-entry["Score"], entry["Host"]))  # ties: first by name
    node, score = best["Host"], best["Score"]
    request = BindRequest(pod_name=name, pod_namespace=namespace, pod_uid=pod_uid(pod), node=node)
    error = verbs.bind(request).body["Error"]
    if error:  # cannot happen single-threaded; kept honest rather than assumed
        return Placement(namespace=namespace, name=name, epc=epc, reasons={node: error})
    return Placement(namespace=namespace, name=name, epc=epc, node=node, score=score)


def render(result: SimulationResult) -> str:
    """The simulation report: placements, EPC per node with a bar, unschedulable pods and why.

    Names and reasons come from files: every one is printed with control characters escaped.
    """
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
    lines.extend(table([("POD", "EPC", "NODE", "SCORE"), *(_placement_row(p) for p in result.placements)]))
    lines.append("")
    lines.append(f"EPC per node  (# running before, + placed now, . free; bar = {BAR_WIDTH} cells)")
    node_rows = [
        ("NODE", "USE", "", "USED / CAPACITY", "FREE"),
        *(_node_row(n, result) for n in result.nodes),
    ]
    lines.extend(table(node_rows) if result.nodes else ["(no nodes in the snapshot)"])
    if stuck:
        lines.append("")
        lines.append(f"Unschedulable ({len(stuck)})")
        for p in stuck:
            asks = "an unreadable amount" if p.unreadable else format_bytes(p.epc)
            lines.append(f"  {printable(p.namespace)}/{printable(p.name)} requests {asks}:")
            width = max(len(printable(n)) for n in p.reasons) if p.reasons else 0
            for node_name, reason in p.reasons.items():
                lines.append(f"    {printable(node_name).ljust(width)}  {printable(reason)}")
            if not p.reasons:
                lines.append("    no nodes in the snapshot")
    if result.unreadable:
        lines.append("")
        lines.append(f"Unreadable quantities, counted as no EPC ({len(result.unreadable)})")
        lines.extend(f"  {printable(problem)}" for problem in result.unreadable)
    return "\n".join(lines) + "\n"


def _placement_row(p: Placement) -> tuple[str, ...]:
    pod = f"{printable(p.namespace)}/{printable(p.name)}"
    if p.node is not None:
        return (pod, format_bytes(p.epc), printable(p.node), str(p.score))
    if p.unreadable:
        return (pod, "?", "- unschedulable (unreadable EPC)", "-")
    if p.needs_epc:
        return (pod, format_bytes(p.epc), "- unschedulable", "-")
    return (pod, "0", "- any node (needs no EPC)", "-")


def _node_row(node: NodeEpc, result: SimulationResult) -> tuple[str, ...]:
    name = printable(node.name)
    if node.capacity is None or node.free is None:
        return (name, "no SGX EPC", "", "-", "-")
    before = min(result.used_before.get(node.name, 0), node.used)
    share = (node.used + node.reserved) / node.capacity if node.capacity else 0.0
    return (
        name,
        bar(before, node.used + node.reserved - before, node.capacity),
        f"{share:4.0%}",
        f"{format_bytes(node.used + node.reserved)} / {format_bytes(node.capacity)}",
        format_bytes(max(node.free, 0)),
    )
