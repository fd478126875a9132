"""Watch events and lists applied to the EPC ledger: the pure core of the ledger feed.

:func:`apply_event` applies one decoded watch event and says how the watch goes on —
:class:`Applied` (resume from its resourceVersion), :class:`Relist` (410 Gone: the resourceVersion
was compacted away) or :class:`Failed` (any other error event, or a line that is not an event).
:class:`Listing` takes a fresh full list of one kind and makes it that kind's state atomically
(:func:`replace_nodes`, :func:`replace_pods`, the ledger's nominations) without touching the other kinds.
:func:`backoff_delay` is the retry schedule. No IO, no logging: the shell is
``watching.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, TypeGuard

from confidential_pods.epc import node_capacity
from confidential_pods.profiles import Profile
from confidential_pods.wire import mapping
from extender.ledger import EpcLedger
from extender.podepc import PodEpc, nominated_facts, pod_facts, pod_uid
from extender.readiness import Readiness, node_readiness

#: What the feed lists and watches: Nodes, assigned Pods, and pending Pods that preemption nominated to a
#: node (their EPC is held there: :meth:`~extender.ledger.EpcLedger.nominate`).
Kind = Literal["Node", "Pod", "Nominated"]
KINDS: tuple[Kind, ...] = ("Node", "Pod", "Nominated")
EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]
EVENT_TYPES: tuple[EventType, ...] = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")
#: HTTP status of an expired resourceVersion or continue token.
GONE = 410


class WatchEvent(TypedDict):
    """One line of a watch stream (``k8s.io/apimachinery/pkg/apis/meta/v1.WatchEvent``)."""

    type: EventType
    object: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Applied:
    """The event was applied (or was a bookmark). Resume from ``resource_version`` (None: unchanged).

    ``unreadable``: the object carried a quantity that could not be read (counted as no EPC), said
    with the object's name; the shell logs it and counts it. The feed goes on either way.
    """

    resource_version: str | None
    unreadable: str = ""


@dataclass(frozen=True, slots=True)
class Relist:
    """The watch's resourceVersion is gone (410): list again and replace this kind's state."""

    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """An ERROR event other than 410, or a line that is not a watch event: back off and resume."""

    reason: str


Outcome = Applied | Relist | Failed


def _ismapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    return type(value) is dict or isinstance(value, Mapping)  # decoded JSON: skip the slower ABC check


def resource_version(obj: Mapping[str, Any]) -> str | None:
    """``metadata.resourceVersion`` of an object (or list), None when absent or empty."""
    version = mapping(obj.get("metadata")).get("resourceVersion")
    return version if isinstance(version, str) and version else None


def is_gone(status: Mapping[str, Any]) -> bool:
    """Whether an ERROR event's Status says the resourceVersion is too old (410 Expired/Gone)."""
    return status.get("code") == GONE or status.get("reason") in ("Expired", "Gone")


def compact_pod_facts(
    pod: Mapping[str, Any], profile: Profile, unreadable: list[str] | None = None
) -> PodEpc | None:
    """:func:`~extender.podepc.pod_facts` with the node and namespace names interned.

    Decoded JSON gives every pod its own copy of both strings; interned, 150,000 pods share the few
    thousand distinct ones (about 20 MB less at that size).
    """
    facts = pod_facts(pod, profile, unreadable)
    return None if facts is None else _interned(facts)


def _interned(facts: PodEpc) -> PodEpc:
    node, namespace = sys.intern(facts.node), sys.intern(facts.namespace)
    priority = _shared(facts.priority)
    if node is facts.node and namespace is facts.namespace and priority is facts.priority:
        return facts
    return PodEpc(
        uid=facts.uid,
        namespace=namespace,
        name=facts.name,
        node=node,
        epc=facts.epc,
        priority=priority,
        leaving=facts.leaving,
    )


#: One int object per priority value: the Priority admission plugin gives pods only the values of the
#: cluster's PriorityClasses, but decoded JSON makes a new int (28 bytes) per pod for values above 256.
_PRIORITIES: dict[int, int] = {}


def _shared(priority: int) -> int:
    shared = _PRIORITIES.get(priority)
    if shared is not None:
        return shared
    if len(_PRIORITIES) < 1024:  # bounded, whatever the cluster holds
        _PRIORITIES[priority] = priority
    return priority


def node_entry(
    node: Mapping[str, Any], profile: Profile, unreadable: list[str] | None = None
) -> tuple[str, int | None] | None:
    """(name, EPC capacity or None) of a Node object; None when it has no name."""
    name = mapping(node.get("metadata")).get("name")
    if not isinstance(name, str) or not name:
        return None
    return name, node_capacity(node, profile, unreadable)


def describe(kind: Kind, obj: Mapping[str, Any], problems: list[str]) -> str:
    """One line for an object with unreadable quantities: ``Pod ns/name spec...: '1e99' is ...``."""
    if not problems:
        return ""
    metadata = mapping(obj.get("metadata"))
    if kind == "Node":
        return f"Node {str(metadata.get('name'))[:300]} {problems[0]}"
    name = f"{metadata.get('namespace')}/{metadata.get('name')}"
    return f"Pod {name[:300]} {problems[0]}"


def apply_event(ledger: EpcLedger, kind: Kind, event: object, profile: Profile) -> Outcome:
    """Apply one decoded watch event of ``kind`` to the ledger and say how the watch goes on.

    ADDED/MODIFIED upsert the node, or the pod when it holds EPC; a pod that no longer holds EPC
    (finished) is removed and its reservation, if any, withdrawn: the watch has seen it. DELETED
    removes. For ``Nominated`` the same upserts or withdraws the pod's nomination (DELETED: it left the
    selection, bound or no longer nominated). BOOKMARK only advances the resourceVersion. Unknown types
    are skipped.
    """
    if not _ismapping(event):
        return Failed("watch line is not a JSON object")
    kind_of_event = event.get("type")
    obj = event.get("object")
    if not isinstance(kind_of_event, str) or not _ismapping(obj):
        return Failed("watch event without type or object")
    if kind_of_event == "ERROR":
        message = f"{obj.get('code', '?')} {obj.get('reason', '')}: {obj.get('message', '')}".strip()
        return Relist(message) if is_gone(obj) else Failed(message)
    version = resource_version(obj)
    if kind_of_event == "BOOKMARK" or kind_of_event not in EVENT_TYPES:
        return Applied(version)
    problems: list[str] = []
    if kind == "Node":
        entry = node_entry(obj, profile, problems)
        if entry is not None:
            if kind_of_event == "DELETED":
                ledger.remove_node(entry[0])
            else:
                with ledger.lock:
                    ledger.set_node(*entry)
                    ledger.set_readiness(entry[0], node_readiness(obj))
        return Applied(version, describe(kind, obj, problems))
    if kind == "Nominated":
        nominated = None if kind_of_event == "DELETED" else nominated_facts(obj, profile, problems)
        if nominated is not None:
            ledger.nominate(_interned(nominated))
        else:
            ledger.withdraw_nomination(pod_uid(obj))
        return Applied(version, describe(kind, obj, problems))
    facts = None if kind_of_event == "DELETED" else pod_facts(obj, profile, problems)
    if facts is not None:
        with ledger.lock:
            if ledger.pod(facts.uid) == facts and ledger.reservation(facts.uid) is None:
                return Applied(version, describe(kind, obj, problems))  # nothing the ledger keeps changed
            ledger.set_pod(_interned(facts))
    else:
        uid = pod_uid(obj)
        with ledger.lock:
            ledger.remove_pod(uid)
            ledger.unreserve(uid)
    return Applied(version, describe(kind, obj, problems))


class Listing:
    """A fresh full list of one kind, taken object by object (:meth:`add`), then made the ledger's state
    of that kind at once (:meth:`apply`); the other kinds are untouched."""

    def __init__(self, kind: Kind, ledger: EpcLedger, profile: Profile) -> None:
        self.kind, self.ledger, self.profile = kind, ledger, profile
        self.nodes: dict[str, int | None] = {}
        #: Each listed node's SGXAttestationReady condition.
        self.readiness: dict[str, Readiness | None] = {}
        self.pods: list[PodEpc] = []
        #: Uids of listed pods that hold no EPC (finished) but still have a reservation.
        self.without_epc: list[str] = []

    def add(self, obj: object) -> str:
        """Take one listed object; returns what could not be read in it ('' when everything was)."""
        if not _ismapping(obj):
            return ""
        problems: list[str] = []
        if self.kind == "Node":
            entry = node_entry(obj, self.profile, problems)
            if entry is not None:
                self.nodes[entry[0]] = entry[1]
                self.readiness[entry[0]] = node_readiness(obj)
        elif self.kind == "Nominated":
            nominated = nominated_facts(obj, self.profile, problems)
            if nominated is not None:
                self.pods.append(_interned(nominated))
        else:
            facts = compact_pod_facts(obj, self.profile, problems)
            if facts is not None:
                # A relist holds the old ledger and the new list at once: reuse unchanged entries.
                known = self.ledger.pod(facts.uid)
                self.pods.append(known if known == facts else facts)
            elif self.ledger.reservation(uid := pod_uid(obj)) is not None:
                self.without_epc.append(uid)
        return describe(self.kind, obj, problems)

    def apply(self) -> None:
        if self.kind == "Node":
            replace_nodes(self.ledger, self.nodes, self.readiness)
        elif self.kind == "Nominated":
            self.ledger.replace_nominations(self.pods)
        else:
            replace_pods(self.ledger, self.pods, self.without_epc)


def replace_nodes(
    ledger: EpcLedger,
    nodes: Mapping[str, int | None],
    readiness: Mapping[str, Readiness | None] | None = None,
) -> None:
    """Make the ledger's nodes exactly ``nodes`` (a fresh list) with their ``readiness`` conditions,
    atomically; pods are untouched."""
    readiness = readiness or {}
    with ledger.lock:
        for name in ledger.nodes():
            if name not in nodes:
                ledger.remove_node(name)
        for name, capacity in nodes.items():
            ledger.set_node(name, capacity)
            ledger.set_readiness(name, readiness.get(name))


def replace_pods(ledger: EpcLedger, pods: Iterable[PodEpc], seen_without_epc: Iterable[str] = ()) -> None:
    """Make the ledger's pods exactly ``pods`` (a fresh list), atomically; nodes are untouched.

    ``seen_without_epc``: uids the list showed holding no EPC (finished); their
    reservations are withdrawn, as :func:`apply_event` does for a single event.
    """
    with ledger.lock:
        current: dict[str, int | None] = {}
        for name in ledger.nodes():
            usage = ledger.usage(name)
            if usage is not None:
                current[name] = usage.capacity
        ledger.replace(current, pods)
        for uid in seen_without_epc:
            ledger.unreserve(uid)


def backoff_delay(failures: int, rand: float, *, base: float = 0.8, cap: float = 30.0) -> float:
    """Seconds to wait after ``failures`` (>= 1) consecutive failures: "equal jitter".

    ``d = min(cap, base * 2**(failures-1))``, then a uniform point of ``[d/2, d]`` (``rand`` in
    [0, 1)): never more than ``cap``, never in lock-step with other clients. client-go's reflector
    starts at 800 ms and caps at 30 s, and so does this.
    """
    exponent = min(max(failures - 1, 0), 32)
    delay = min(cap, base * 2.0**exponent)
    return delay / 2 + delay / 2 * rand
