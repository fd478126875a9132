"""What ``kubectl confidential-pods nodes`` and ``why`` print (pure: objects in, text out).

``nodes``: EPC per SGX node, from the stored pods (what any reader of the API can compute: capacity, used,
held for nominated pods) or from the extender's ``/inspect`` (which also knows its reservations: binds
the watch has not shown yet; read by ``operate/inspection.py``). ``why``: the extender's filter answer
for a pending pod, computed with the extender's own code over the stored state, beside kube-scheduler's
FailedScheduling events.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confidential_pods.documents import printable
from confidential_pods.epc import effective_epc
from confidential_pods.quantities import format_bytes
from confidential_pods.settings import Settings
from confidential_pods.terminal import bar, table
from confidential_pods.wire import mapping
from extender.binding import MemoryBinder
from extender.ledger import EpcLedger, NodeEpc
from extender.podepc import pod_uid
from extender.readiness import Readiness, is_stale
from extender.verbs import Verbs
from extender.wire import Candidates


@dataclass(frozen=True)
class NodeRow:
    """One SGX node's EPC, bytes."""

    name: str
    capacity: int
    used: int
    reserved: int
    nominated: int
    pods: int
    #: The node's SGXAttestationReady as the table shows it: ``ready``, ``NOT READY (<reason>)``, ``unknown``,
    #: or ``-`` when the node has no such condition (no probe there).
    attestation: str = "-"

    @property
    def free(self) -> int:
        return self.capacity - self.used - self.reserved


def rows_from_ledger(ledger: EpcLedger, now: float | None = None) -> list[NodeRow]:
    """Rows of a ledger read once (``now``, default the present: when, for a condition not renewed)."""
    now = time.time() if now is None else now
    nodes = [n for n in (ledger.node(name) for name in sorted(ledger.nodes())) if n is not None]
    return [_row(n, ledger.readiness(n.name), now) for n in nodes if n.capacity is not None]


def attestation_text(status: str | None, reason: str = "", stale: bool = False) -> str:
    """A node's SGXAttestationReady for the table (``status`` None: no condition). A ``True`` the probe
    stopped renewing is ``unknown (not renewed)``: the extender no longer counts it as ready."""
    if status is None:
        return "-"
    if status == "True":
        return "unknown (not renewed)" if stale else "ready"
    if status == "False":
        return f"NOT READY ({reason})" if reason else "NOT READY"
    return "unknown"


def _row(node: NodeEpc, readiness: Readiness | None = None, now: float | None = None) -> NodeRow:
    return NodeRow(
        name=node.name,
        capacity=node.capacity or 0,
        used=node.used,
        reserved=node.reserved,
        nominated=sum(p.epc for p in node.nominated),
        pods=len(node.pods),
        attestation=attestation_text(
            *((readiness.status, readiness.reason, is_stale(readiness, now)) if readiness else (None,))
        ),
    )


def render_nodes(rows: Sequence[NodeRow], resource: str, source: str) -> str:
    """The table: a bar (``#`` used, ``+`` reserved, ``.`` free), used and reserved of capacity, free,
    EPC held for nominated pods, pod count; then the totals."""
    lines = [f"EPC per SGX node ({resource}; from {source})", ""]
    if not rows:
        return "\n".join([*lines, "no node advertises " + resource]) + "\n"
    header = (
        "NODE", "EPC (# used, + reserved)", "IN USE / CAPACITY", "FREE", "NOMINATED", "PODS", "ATTESTATION"
    )  # fmt: skip
    body = [
        (
            printable(row.name),
            bar(row.used, row.reserved, row.capacity),
            f"{format_bytes(row.used + row.reserved)} / {format_bytes(row.capacity)}",
            format_bytes(max(row.free, 0)),
            format_bytes(row.nominated) if row.nominated else "-",
            str(row.pods),
            printable(row.attestation),
        )
        for row in rows
    ]
    lines.extend(table([header, *body]))
    capacity = sum(row.capacity for row in rows)
    used = sum(row.used + row.reserved for row in rows)
    share = f"{used / capacity:.0%}" if capacity else "-"
    lines.append("")
    lines.append(f"{len(rows)} node(s): {format_bytes(used)} of {format_bytes(capacity)} in use ({share})")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Why:
    """Why a pod is where it is, or is not placed: the extender's filter answer over the stored state."""

    namespace: str
    name: str
    node: str | None
    scheduler: str
    epc: int
    unreadable: str
    passed: tuple[str, ...]
    reasons: dict[str, str]


def why(pod: Mapping[str, Any], ledger: EpcLedger, settings: Settings) -> Why:
    """The filter verb's answer for ``pod`` on every node the ledger knows (stored state: no reservations).

    The pod's own entry is taken out of ``ledger`` first: a pod that is bound (or running) is asked about
    as the scheduler asked about it, without its own EPC counted against its node.
    """
    metadata, spec = mapping(pod.get("metadata")), mapping(pod.get("spec"))
    problems: list[str] = []
    epc = effective_epc(pod, settings.profile, problems)
    ledger.remove_pod(pod_uid(pod))
    names = tuple(sorted(ledger.nodes()))
    verbs = Verbs(ledger, settings, MemoryBinder(), clock=lambda: 0.0)
    answer = verbs.filter(Candidates(pod=pod, names=names)).body
    reasons = {**answer["FailedNodes"], **answer["FailedAndUnresolvableNodes"]}
    return Why(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        node=spec.get("nodeName") or None,
        scheduler=str(spec.get("schedulerName") or "default-scheduler"),
        epc=epc,
        unreadable=problems[0] if problems else "",
        passed=tuple(answer["NodeNames"] or ()),
        reasons=dict(sorted(reasons.items())),
    )


def render_why(answer: Why, events: Iterable[Mapping[str, Any]], settings: Settings) -> str:
    """The verdict, the nodes that would pass, each refused node's reason, and the scheduler's events."""
    pod = f"{printable(answer.namespace)}/{printable(answer.name)}"
    resource = settings.profile.epc_resource
    lines: list[str] = []
    if answer.node:
        lines.append(f"{pod} is bound to {printable(answer.node)}")
    ours = {n for n in (settings.scheduler_name, settings.preempting_scheduler_name) if n}
    if ours and answer.scheduler not in ours:
        lines.append(
            f"{pod} is scheduled by {printable(answer.scheduler)}, not by {'/'.join(sorted(ours))}: the "
            "extender is not asked about it"
        )
    if answer.unreadable:
        lines.append(f"{pod}: its SGX EPC request cannot be read: {printable(answer.unreadable)}")
    elif answer.epc <= 0:
        lines.append(f"{pod} requests no {resource}: the extender has no opinion on it")
    else:
        lines.append(f"{pod} requests {format_bytes(answer.epc)} of {resource}")
        if answer.passed:
            shown = ", ".join(printable(n) for n in answer.passed[:10])
            more = f" and {len(answer.passed) - 10} more" if len(answer.passed) > 10 else ""
            lines.append(f"  fits now on {len(answer.passed)} node(s): {shown}{more}")
        if answer.reasons:
            lines.append(f"  refused on {len(answer.reasons)} node(s) (the extender's reasons):")
            rows = [(f"    {printable(node)}", printable(reason)) for node, reason in answer.reasons.items()]
            lines.extend(table(rows))
    recorded = sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    if recorded:
        lines.append("")
        lines.append("kube-scheduler said (FailedScheduling events, latest last):")
        for event in recorded[-3:]:
            when = str(event.get("lastTimestamp") or event.get("eventTime") or "")
            count = event.get("count") or 1
            lines.append(f"  {when} (x{count}) {printable(str(event.get('message') or ''))}")
    return "\n".join(lines) + "\n"
