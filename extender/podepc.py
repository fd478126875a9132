"""What the ledger keeps of a Pod: who it is, where it runs and the EPC it holds.

The EPC count itself is the kit's (:func:`confidential_pods.epc.effective_epc`, shared with the
webhook); this module decides when a pod holds it on a node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confidential_pods.epc import effective_epc
from confidential_pods.profiles import Profile
from confidential_pods.wire import mapping

#: Pod phases after which a pod holds no resources on its node.
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True)
class PodEpc:
    """What the ledger keeps of a pod: who it is, where it runs, how much EPC it holds (bytes)."""

    uid: str
    namespace: str
    name: str
    node: str
    epc: int
    #: ``spec.priority`` (the Priority admission plugin sets it from the PriorityClass; 0 without one).
    priority: int = 0
    #: The pod is on its way out (:func:`leaving`): it still holds its EPC, but the API server may have
    #: deleted it before the watch says so (see ``Verbs.filter``).
    leaving: bool = False


def pod_facts(
    pod: Mapping[str, Any], profile: Profile, unreadable: list[str] | None = None, *, epc: int | None = None
) -> PodEpc | None:
    """The ledger entry for a pod, or None when the pod holds no EPC on any node.

    None when the pod is not assigned (no ``spec.nodeName``), has finished (phase Succeeded or
    Failed) or requests no EPC. A quantity that cannot be read counts 0 and is described in
    ``unreadable`` (see :func:`~confidential_pods.epc.effective_epc`). ``epc``: the pod's effective
    EPC when the caller has already computed it.

    A terminating pod (``metadata.deletionTimestamp`` set) still counts until it is deleted or
    reaches a final phase: its enclave holds the EPC until its containers stop, kubelet's admission
    keeps counting it, and kube-scheduler's own cache does the same. Releasing it at the
    deletionTimestamp would let a new pod be bound into EPC that is still in use — and in the
    ``confidential-scheduler`` profile, where NodeResourcesFit ignores the EPC resource, no other check
    would stop it; kubelet would then reject the new pod at admission.
    """
    return _on_node(pod, mapping(pod.get("spec")).get("nodeName"), profile, unreadable, epc)


def nominated_facts(
    pod: Mapping[str, Any], profile: Profile, unreadable: list[str] | None = None
) -> PodEpc | None:
    """The EPC a pending pod that preemption nominated to a node needs there (``node`` is
    ``status.nominatedNodeName``), or None: not nominated, already assigned, finished, or no EPC.

    kube-scheduler sets the nomination after a successful preemption and counts the pod on that node
    while its victims terminate (so that no lower-priority pod takes the room); the ledger holds the
    same EPC for it (:meth:`~extender.ledger.EpcLedger.nominate`).
    """
    if mapping(pod.get("spec")).get("nodeName"):
        return None
    return _on_node(pod, nominated_node(pod), profile, unreadable, None)


def nominated_node(pod: Mapping[str, Any]) -> str:
    """``status.nominatedNodeName`` of a pod ("" when it has none)."""
    node = mapping(pod.get("status")).get("nominatedNodeName")
    return node if isinstance(node, str) else ""


def _on_node(
    pod: Mapping[str, Any], node: object, profile: Profile, unreadable: list[str] | None, epc: int | None
) -> PodEpc | None:
    if not isinstance(node, str) or not node:
        return None
    if mapping(pod.get("status")).get("phase") in TERMINAL_PHASES:
        return None
    if epc is None:
        epc = effective_epc(pod, profile, unreadable)
    if epc <= 0:
        return None
    metadata = mapping(pod.get("metadata"))
    namespace = str(metadata.get("namespace") or "")
    name = str(metadata.get("name") or "")
    return PodEpc(
        uid=pod_uid(pod),
        namespace=namespace,
        name=name,
        node=node,
        epc=epc,
        priority=pod_priority(pod),
        leaving=leaving(pod),
    )


def leaving(pod: Mapping[str, Any]) -> bool:
    """Whether the pod is on its way out: ``metadata.deletionTimestamp`` set, or a ``DisruptionTarget``
    condition True (kube-scheduler sets one on a preemption victim just before deleting it; the
    eviction API and the taint manager do the same)."""
    if mapping(pod.get("metadata")).get("deletionTimestamp"):
        return True
    conditions = mapping(pod.get("status")).get("conditions")
    if not isinstance(conditions, list):
        return False
    return any(
        isinstance(c, dict) and c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        for c in conditions
    )


def pod_priority(pod: Mapping[str, Any]) -> int:
    """``spec.priority``, 0 when absent or not a whole number (what the scheduler assumes without one)."""
    priority = mapping(pod.get("spec")).get("priority")
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 2**31:
        return 0
    return priority


def pod_uid(pod: Mapping[str, Any]) -> str:
    """The pod's UID; ``namespace/name`` for pods written by hand (snapshot files) without one."""
    metadata = mapping(pod.get("metadata"))
    uid = metadata.get("uid")
    if isinstance(uid, str) and uid:
        return uid
    return f"{metadata.get('namespace') or ''}/{metadata.get('name') or ''}"
