"""``confidential-pods simulate``: place pending pods on a snapshot as the webhook, kube-scheduler and the
extender would.

:func:`simulate` fills a ledger from a snapshot's facts and, for each pending pod in file order (a
workload's pods in its place: :mod:`extender.workloads`):

1. admits it through the webhook's own core (``webhook.offline.admission``, as ``inject``): an annotated
   pod gets the EPC the annotation asks for, or is refused with the webhook's message. A pod the API
   server already stores (``metadata.uid`` set: ``kubectl get pods -o yaml``) has passed admission and
   is placed as it is;
2. keeps the nodes kube-scheduler's own filters leave it (:mod:`extender.placement`: cordons, taints and
   tolerations, nodeSelector, required node affinity);
3. asks the extender's filter (:meth:`~extender.verbs.Verbs.filter`, the code kube-scheduler reaches over
   HTTP) about those nodes, then chooses and binds as the scheduling mode does (:mod:`extender.modes`):

   - **native** (the shipped default): kube-scheduler scores the nodes left with NodeResourcesFit
     (:func:`fit_score`: EPC only here, 0-100) and binds; the extender's watch then sees the pod on its node,
     so the ledger counts it as used. No reservation.
   - **ledger**: the extender's prioritize (0-10) and bind, a bind being final in memory.

   The highest score wins, ties go to the node name that sorts first (kube-scheduler picks among equals at
   random).

What kube-scheduler checks besides is named in the report (:func:`~extender.placement.unmodelled`).
:func:`render` turns the result into the report.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import jsonpatch

from confidential_pods.documents import printable
from confidential_pods.epc import effective_epc
from confidential_pods.errors import BindRefused
from confidential_pods.profiles import PROFILES
from confidential_pods.quantities import format_bytes
from confidential_pods.settings import ScoringStrategy, Settings
from confidential_pods.terminal import BAR_WIDTH, bar, table
from confidential_pods.wire import mapping
from extender.binding import MemoryBinder
from extender.ledger import EpcLedger, NodeEpc, NodeUsage
from extender.modes import Mode
from extender.placement import (
    NodeFacts,
    PlacementError,
    PodConstraints,
    pod_constraints,
    refusal,
    unmodelled,
)
from extender.podepc import pod_facts, pod_uid
from extender.snapshot import SnapshotFacts, fill_ledger_from_facts, snapshot_facts
from extender.verbs import Verbs
from extender.wire import MAX_EXTENDER_PRIORITY, MIN_EXTENDER_PRIORITY, BindRequest, Candidates
from extender.workloads import expand
from webhook.mutation import Mutation
from webhook.offline import Scope, admission, namespace_facts

#: What the SCORE column means, per strategy.
PREFERS = {
    "LeastAllocated": "the most EPC left after placing (spreads)",
    "MostAllocated": "the least EPC left after placing (packs)",
}
#: kube-scheduler's ``framework.MaxNodeScore``: a score plugin's range is 0..100.
MAX_NODE_SCORE = 100
#: What native mode's SCORE leaves out (in the report's "Not modelled" part, counting the pods scored).
UNSCORED = (
    "NodeResourcesFit's cpu and memory scores (the overlays weigh them 1, 1 to EPC's 3), other score plugins"
)


@dataclass(frozen=True)
class Placement:
    """What happened to one pending pod. ``node`` is None when it was not placed."""

    namespace: str
    name: str
    epc: int
    node: str | None = None
    score: int | None = None
    #: Why each node was refused (kube-scheduler's filters, then the extender), when none was chosen.
    reasons: dict[str, str] = field(default_factory=dict)
    #: The pod's EPC request could not be read (``reasons`` says why).
    unreadable: bool = False
    #: The workload the pod belongs to (``Deployment ml/web``); "" for a pod of the files.
    origin: str = ""
    #: Why the pod is never created: the webhook refuses it, or the API server would.
    refused: str = ""
    #: A pod needing no EPC: how many of the ``of`` nodes kube-scheduler's filters leave it.
    fits: int = 0
    of: int = 0

    @property
    def needs_epc(self) -> bool:
        return self.epc > 0 or self.unreadable

    @property
    def unschedulable(self) -> bool:
        if self.refused or self.node is not None:
            return False
        return self.needs_epc or self.fits == 0


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
    #: (workload, how many pods and why) for every workload of the files, in file order.
    workloads: tuple[tuple[str, int, str], ...] = ()
    #: What kube-scheduler checks that simulate does not, with how many pods it concerns.
    unmodelled: dict[str, int] = field(default_factory=dict)
    #: When no node advertises the profile's EPC resource but some advertise another profile's.
    hint: str = ""
    #: Who scores and binds (:mod:`extender.modes`); ``Placement.score`` is 0-100 in native, 0-10 in ledger.
    mode: Mode = "native"


def example_facts(settings: Settings) -> SnapshotFacts:
    """The built-in example cluster (``extender/examples/cluster.yaml``), pending pods kept."""
    text = resources.files("extender.examples").joinpath("cluster.yaml").read_text(encoding="utf-8")
    return snapshot_facts(text, settings.profile, "built-in example cluster", keep_pending=True)


def simulate(
    facts: SnapshotFacts,
    settings: Settings,
    strategy: ScoringStrategy | None = None,
    mode: Mode = "native",
) -> SimulationResult:
    """Place the snapshot's pending pods and workloads (``facts.pending``) one by one, in file order, as
    ``mode`` schedules them; ``strategy`` overrides the settings' (in native mode it stands for
    NodeResourcesFit's ``scoringStrategy.type``)."""
    settings = replace(settings, scoring_strategy=strategy or settings.scoring_strategy)
    ledger = EpcLedger()
    fill_ledger_from_facts(ledger, facts)
    used_before = {name: usage.used for name in ledger.nodes() if (usage := ledger.usage(name)) is not None}
    # A snapshot is judged as it was taken: its node conditions never go stale here.
    binder = MemoryBinder(known=facts.pods)
    verbs = Verbs(ledger, settings, binder, clock=lambda: 0.0, wall_clock=lambda: None)
    names = tuple(ledger.nodes())
    nodes = tuple(facts.nodes.get(name) or NodeFacts(name) for name in names)
    scope = Scope({name: namespace_facts({"metadata": {"labels": labels}})
                   for name, labels in facts.namespaces.items()})  # fmt: skip

    def admit(pod: dict[str, Any]) -> Mutation:
        namespace = str(mapping(pod.get("metadata")).get("namespace") or "default")
        return admission(pod, namespace, settings, scope)

    placements: list[Placement] = []
    workloads: list[tuple[str, int, str]] = []
    ignored: Counter[str] = Counter()
    for obj in facts.pending:
        expansion = expand(obj, nodes)
        if expansion.origin:
            workloads.append((expansion.origin, len(expansion.pods), expansion.how))
        for pod in expansion.pods:
            placement, admitted = _place(verbs, pod, nodes, admit, expansion.origin, mode)
            placements.append(placement)
            ignored.update(unmodelled(admitted))
            if mode == "native" and placement.score is not None:
                ignored[UNSCORED] += 1
    return SimulationResult(
        strategy=settings.scoring_strategy,
        resource=settings.profile.epc_resource,
        placements=tuple(placements),
        nodes=tuple(n for n in (ledger.node(name) for name in names) if n is not None),
        used_before=used_before,
        unreadable=tuple(facts.unreadable),
        workloads=tuple(workloads),
        unmodelled=dict(ignored),
        hint=profile_hint(facts, settings.profile.epc_resource),
        mode=mode,
    )


def profile_hint(facts: SnapshotFacts, resource: str) -> str:
    """Which profile the nodes' EPC resource belongs to, when no node advertises ``resource``."""
    if any(facts.capacities.values()):
        return ""
    counts = Counter(r for offered in facts.advertised.values() for r in offered if r != resource)
    if not counts:
        return ""
    profiles = {p.epc_resource: p.name for p in PROFILES.values()}
    advice = "; ".join(
        f"{other} ({count} node(s)): use --config with profile: {profiles[other]} (or epcResource: {other})"
        for other, count in sorted(counts.items())
    )
    return f"No node advertises {resource}; the nodes advertise {advice}"


def _place(
    verbs: Verbs,
    pod: dict[str, Any],
    nodes: Sequence[NodeFacts],
    admit: Callable[[dict[str, Any]], Mutation],
    origin: str,
    mode: Mode,
) -> tuple[Placement, dict[str, Any]]:
    """webhook → kube-scheduler's filters → the extender's filter → the mode's score and bind for one pod;
    and the pod as admitted."""
    metadata = mapping(pod.get("metadata"))
    namespace, name = str(metadata.get("namespace") or "default"), str(metadata.get("name") or "")
    mutation = admit(pod) if not metadata.get("uid") else Mutation("unchanged")  # stored: admitted already
    if not mutation.allowed:
        return Placement(
            namespace, name, 0, origin=origin, refused=f"the webhook refuses it: {mutation.message}"
        ), pod
    if mutation.patch:
        pod = jsonpatch.apply_patch(pod, [dict(op) for op in mutation.patch])
    unreadable: list[str] = []
    epc = effective_epc(pod, verbs.settings.profile, unreadable)
    try:
        constraints = pod_constraints(pod)
    except PlacementError as exc:
        return Placement(
            namespace, name, epc, origin=origin, refused=f"the API server refuses it: {exc}"
        ), pod
    eligible, reasons = _filtered(constraints, nodes)
    if epc <= 0 and not unreadable:
        kept = reasons if not eligible else {}
        return Placement(
            namespace, name, 0, reasons=kept, origin=origin, fits=len(eligible), of=len(nodes)
        ), pod
    unplaced = Placement(namespace, name, epc, unreadable=bool(unreadable), origin=origin)
    if not eligible:
        return replace(unplaced, reasons=dict(sorted(reasons.items()))), pod
    filtered = verbs.filter(Candidates(pod=pod, names=tuple(eligible))).body
    passed: list[str] = filtered["NodeNames"] or []
    if not passed:
        reasons.update({**filtered["FailedNodes"], **filtered["FailedAndUnresolvableNodes"]})
        return replace(unplaced, reasons=dict(sorted(reasons.items()))), pod
    node, score = _choose(verbs, pod, passed, epc, mode)
    request = BindRequest(pod_name=name, pod_namespace=namespace, pod_uid=pod_uid(pod), node=node)
    native = mode == "native"
    error = _scheduler_bind(verbs, pod, request, epc) if native else verbs.bind(request).body["Error"]
    if error:  # cannot happen single-threaded; kept honest rather than assumed
        return replace(unplaced, reasons={node: error}), pod
    return replace(unplaced, node=node, score=score), pod


def _choose(
    verbs: Verbs, pod: dict[str, Any], passed: Sequence[str], epc: int, mode: Mode
) -> tuple[str, int]:
    """The best node of those the filters passed, scored as ``mode`` scores, and its score; ties go to the
    name that sorts first."""
    if mode == "native":
        strategy = verbs.settings.scoring_strategy
        scored = [(name, fit_score(epc, verbs.ledger.usage(name), strategy)) for name in passed]
    else:
        answer = json.loads(verbs.prioritize(Candidates(pod=pod, names=tuple(passed))).body)
        scored = [(entry["Host"], entry["Score"]) for entry in answer]
    node, score = min(scored, key=lambda entry: (-entry[1], entry[0]))
    return str(node), int(score)


def fit_score(epc: int, usage: NodeUsage | None, strategy: ScoringStrategy) -> int:
    """NodeResourcesFit's score (0..100) of a node for a pod requesting ``epc``, counting EPC alone.

    kube-scheduler's ``leastRequestedScore`` / ``mostRequestedScore`` (``pkg/scheduler/framework/plugins/
    noderesources``), with ``requested`` the node's requests after placing the pod: LeastAllocated
    ``(capacity - requested) * 100 // capacity`` (0 when it does not fit), MostAllocated
    ``requested * 100 // capacity`` (``requested`` capped at capacity). With EPC alone its weight cancels
    out; cpu and memory, which the overlays weigh 1 each against EPC's 3, are not modelled.
    """
    if usage is None or not usage.capacity:
        return 0
    capacity = usage.capacity
    requested = usage.used + usage.reserved + epc
    if strategy == "MostAllocated":
        return min(requested, capacity) * MAX_NODE_SCORE // capacity
    return 0 if requested > capacity else (capacity - requested) * MAX_NODE_SCORE // capacity


def _scheduler_bind(verbs: Verbs, pod: dict[str, Any], request: BindRequest, epc: int) -> str:
    """kube-scheduler's bind in native mode: the Binding (in memory), then the pod as the extender's watch
    sees it, assigned to the node and holding its EPC as used; no reservation. An error, or ""."""
    try:
        verbs.binder.bind(request)
    except BindRefused as exc:
        return f"binding {request.pod_namespace}/{request.pod_name} failed: {exc}"
    assigned = {**pod, "spec": {**mapping(pod.get("spec")), "nodeName": request.node}}
    entry = pod_facts(assigned, verbs.settings.profile, epc=epc)
    if entry is not None:
        verbs.ledger.set_pod(entry)
    return ""


def _filtered(constraints: PodConstraints, nodes: Sequence[NodeFacts]) -> tuple[list[str], dict[str, str]]:
    """The nodes kube-scheduler's filters leave the pod, and why each other node is refused."""
    eligible: list[str] = []
    reasons: dict[str, str] = {}
    for node in nodes:
        why = refusal(constraints, node)
        if why is None:
            eligible.append(node.name)
        else:
            reasons[node.name] = why
    return eligible, reasons


def render(result: SimulationResult) -> str:
    """The simulation report: how nodes are judged, placements, EPC per node with a bar, the pods not
    placed and why, what was not modelled.

    Names and reasons come from files: every one is printed with control characters escaped.
    """
    placed = [p for p in result.placements if p.node is not None]
    stuck = [p for p in result.placements if p.unschedulable]
    refused = [p for p in result.placements if p.refused]
    free_riders = [p for p in result.placements if not p.needs_epc and not p.unschedulable and not p.refused]
    lines = _mode_lines(result)
    if result.hint:
        lines.append(printable(result.hint))
    lines.append("")
    lines.extend(
        f"{printable(origin)}: {count} pod(s), {printable(how)}" for origin, count, how in result.workloads
    )
    counts = [f"{len(placed)} placed", f"{len(stuck)} unschedulable", f"{len(free_riders)} without EPC"]
    if refused:
        counts.append(f"{len(refused)} refused")
    lines.append(f"{len(result.placements)} pending pod(s): {', '.join(counts)}")
    lines.append("")
    lines.extend(table([("POD", "EPC", "NODE", "SCORE"), *(_placement_row(p) for p in result.placements)]))
    lines.append("")
    lines.append(f"EPC per node  (# running before, + placed now, . free; bar = {BAR_WIDTH} cells)")
    node_rows = [
        ("NODE", "USE", "", "USED / CAPACITY", "FREE"),
        *(_node_row(n, result) for n in result.nodes),
    ]
    lines.extend(table(node_rows) if result.nodes else ["(no nodes in the snapshot)"])
    lines.extend(_unschedulable(stuck))
    if refused:
        lines.append("")
        lines.append(f"Refused ({len(refused)})")
        lines.extend(
            f"  {printable(p.namespace)}/{printable(p.name)}: {printable(p.refused)}" for p in refused
        )
    if result.unreadable:
        lines.append("")
        lines.append(f"Unreadable quantities, counted as no EPC ({len(result.unreadable)})")
        lines.extend(f"  {printable(problem)}" for problem in result.unreadable)
    if result.unmodelled:
        lines.append("")
        lines.append("Not modelled here (kube-scheduler still checks them)")
        lines.extend(f"  {printable(rule)}: {count} pod(s)" for rule, count in result.unmodelled.items())
    return "\n".join(lines) + "\n"


def _mode_lines(result: SimulationResult) -> list[str]:
    """Who filters, scores and binds; the strategy; what SCORE means; the filters."""
    strategy, prefers = result.strategy, PREFERS[result.strategy]
    filters = "Filters: cordons, taints and tolerations, nodeSelector, required node affinity, then free EPC "
    if result.mode == "native":
        return [
            f"Mode native: kube-scheduler counts, scores (NodeResourcesFit {strategy}, EPC only here) and "
            "binds; the extender filters",
            f"Scoring strategy {strategy}, EPC resource {result.resource}",
            f"SCORE 0-{MAX_NODE_SCORE}, higher is preferred: NodeResourcesFit's EPC share, {strategy} "
            f"favours {prefers}",
            filters + "(the extender, as NodeResourcesFit)",
        ]
    return [
        f"Mode ledger: the extender filters, scores {strategy} "
        f"{MIN_EXTENDER_PRIORITY}-{MAX_EXTENDER_PRIORITY} and binds",
        f"Scoring strategy {strategy}, EPC resource {result.resource}",
        f"SCORE {MIN_EXTENDER_PRIORITY}-{MAX_EXTENDER_PRIORITY}, higher is preferred: {strategy} "
        f"favours {prefers}",
        filters + "(the extender)",
    ]


def _unschedulable(stuck: Sequence[Placement]) -> list[str]:
    if not stuck:
        return []
    lines = ["", f"Unschedulable ({len(stuck)})"]
    for p in stuck:
        asks = "an unreadable amount" if p.unreadable else format_bytes(p.epc) if p.epc else "no EPC"
        lines.append(f"  {printable(p.namespace)}/{printable(p.name)} requests {asks}:")
        width = max(len(printable(n)) for n in p.reasons) if p.reasons else 0
        for node_name, reason in p.reasons.items():
            lines.append(f"    {printable(node_name).ljust(width)}  {printable(reason)}")
        if not p.reasons:
            lines.append("    no nodes in the snapshot")
    return lines


def _placement_row(p: Placement) -> tuple[str, ...]:
    pod = f"{printable(p.namespace)}/{printable(p.name)}"
    if p.node is not None:
        return (pod, format_bytes(p.epc), printable(p.node), str(p.score))
    if p.refused:
        return (pod, format_bytes(p.epc) if p.epc else "-", "- refused", "-")
    if p.unreadable:
        return (pod, "?", "- unschedulable (unreadable EPC)", "-")
    if p.needs_epc or p.unschedulable:
        return (pod, format_bytes(p.epc), "- unschedulable", "-")
    where = "any node" if p.fits == p.of else f"any of {p.fits} nodes"
    return (pod, "0", f"- {where} (needs no EPC)", "-")


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
