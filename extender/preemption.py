"""EPC-aware preemption: which of kube-scheduler's candidate nodes really free enough EPC, and with whom.

kube-scheduler's DefaultPreemption proposes, per node, the victims its dry run found (in-tree filters
only: in the ``confidential-scheduler-preempting`` profile NodeResourcesFit counts EPC from the scheduler's
cache). The
extender then judges each candidate by its own ledger, which also knows its reservations (binds not yet
seen by the watch), EPC held for other nominated pods and pods the scheduler's cache has not seen:

* a node where a proposed victim has equal or higher priority than the preemptor is dropped, whoever
  proposed it: kube-scheduler evicts what the answer names without checking priorities again. The
  priority is the ledger's for the pods it knows there (pods holding EPC), and also, when kube-scheduler
  sent whole Pods (no ``nodeCacheCapable``), the one in the Pod sent; a victim known to neither (a pod
  without EPC, sent by UID) is left to kube-scheduler's own dry run;
* a node without SGX EPC, or with less EPC in total than the preemptor needs, is dropped: no eviction
  can help;
* a node where the free EPC plus the proposed victims' EPC is enough is kept as proposed;
* otherwise further EPC-holding pods of *lower* priority than the preemptor, known to the ledger on that
  node, are added — the largest first, so that as few pods as possible are evicted — and the node is
  dropped when even all of them would not be enough. A pod of equal or higher priority is never added.

When some candidates need no added victims, the ones that do are dropped: an added victim's
PodDisruptionBudget was not counted by the dry run (``NumPDBViolations`` is passed on unchanged and
kube-scheduler prefers the candidate with the fewest). Pure: plain data in, plain data out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from confidential_pods.errors import shown
from extender.ledger import NodeEpc
from extender.podepc import PodEpc


@dataclass(frozen=True)
class Victims:
    """What a candidate node costs: the UIDs of the pods to evict, and the PDBs that violates."""

    uids: tuple[str, ...]
    pdb_violations: int = 0
    #: The victims' ``spec.priority`` by uid, when kube-scheduler sent whole Pods (``NodeNameToVictims``);
    #: empty when it sent UIDs only (``NodeNameToMetaVictims``).
    priorities: Mapping[str, int] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Preemptor:
    uid: str
    epc: int
    priority: int


@dataclass(frozen=True)
class Refined:
    """The answer, and what it did (for the metrics)."""

    kept: dict[str, Victims]
    dropped: dict[str, str]
    added: int


def refine(
    preemptor: Preemptor, candidates: Mapping[str, Victims], nodes: Mapping[str, NodeEpc | None]
) -> Refined:
    """Judge every candidate node (``nodes``: the ledger's view of each, None when unknown)."""
    kept: dict[str, Victims] = {}
    additions: dict[str, int] = {}
    dropped: dict[str, str] = {}
    for name, victims in candidates.items():
        node = nodes.get(name)
        verdict: tuple[Victims, int] | str = _outranking(preemptor, victims, node)
        if not verdict:  # EPC: judged by the ledger; a pod without EPC is not an EPC matter (no opinion)
            verdict = _judge(preemptor, victims, node) if preemptor.epc > 0 else (victims, 0)
        if isinstance(verdict, str):
            dropped[name] = verdict
        else:
            kept[name], additions[name] = verdict
    if any(count == 0 for count in additions.values()):
        for name in [n for n, count in additions.items() if count]:
            del kept[name]
            dropped[name] = "another candidate needs no victims beyond the scheduler's"
            additions[name] = 0
    return Refined(kept=kept, dropped=dropped, added=sum(additions.values()))


def _outranking(preemptor: Preemptor, victims: Victims, node: NodeEpc | None) -> str:
    """Why a proposed victim may not be evicted for the preemptor (equal or higher priority), or ""."""
    known = {p.uid: p.priority for p in node.pods + node.reservations} if node is not None else {}
    for uid in victims.uids:
        priorities = [p for p in (known.get(uid), victims.priorities.get(uid)) if p is not None]
        if priorities and max(priorities) >= preemptor.priority:
            return (
                f"victim {shown(uid)} has priority {max(priorities)}, "
                f"not lower than the pod's {preemptor.priority}"
            )
    return ""


def _judge(preemptor: Preemptor, victims: Victims, node: NodeEpc | None) -> tuple[Victims, int] | str:
    """The node's victims (and how many the extender added), or why no eviction there can help."""
    if node is None:
        return "node is not in the extender's EPC ledger"
    if node.capacity is None or node.free is None:
        return "node has no SGX EPC"
    if preemptor.epc > node.capacity:
        return "node has less SGX EPC in total than the pod requests"
    proposed = set(victims.uids)
    held = sum(p.epc for p in node.nominated if p.uid != preemptor.uid and p.priority >= preemptor.priority)
    free = node.free - held
    freed = sum(p.epc for p in node.pods if p.uid in proposed)
    if free + freed >= preemptor.epc:
        return (victims, 0) if victims.uids else "nothing to evict on the node"
    others = sorted(
        (p for p in node.pods if p.uid not in proposed and p.priority < preemptor.priority and p.epc > 0),
        key=_evict_first,
    )
    added: list[PodEpc] = []
    for pod in others:
        if free + freed >= preemptor.epc:
            break
        added.append(pod)
        freed += pod.epc
    if free + freed < preemptor.epc:
        return "evicting every pod of lower priority would not free enough SGX EPC"
    uids = victims.uids + tuple(p.uid for p in sorted(added, key=lambda p: -p.priority))
    if not uids:  # kube-scheduler refuses a candidate without victims (an error unless ignorable)
        return "nothing to evict on the node"
    return Victims(uids=uids, pdb_violations=victims.pdb_violations), len(added)


def _evict_first(pod: PodEpc) -> tuple[int, int, str]:
    """The largest first (fewest pods evicted), then the least important, then by uid (stable)."""
    return (-pod.epc, pod.priority, pod.uid)
