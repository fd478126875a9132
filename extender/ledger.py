"""The EPC ledger: per node, the EPC capacity, what running pods use and what binds reserved.

Pure and thread-safe, no IO: the watch (``watching.py``) and the snapshot loader feed it, the HTTP
handlers read it. Every method takes :attr:`EpcLedger.lock`, an ``RLock`` that is public so that a
bind can check the fit and reserve in one step (``binding.py``; the API call comes after, outside it).

Invariants (checked by the tests): ``used(node)`` is the sum of the EPC of the pods on the node and is
never negative; ``free = capacity - used - reserved``; a reservation disappears as soon as the watch
shows the pod (``set_pod``), a relist lists it (``replace``), it is withdrawn (``unreserve``) or it
expires (``expire_reservations``) — a bind whose pod the watch never confirms must not hold EPC forever.
Pods on nodes the ledger does not know (yet) are kept: the node may arrive later. A pod the API server
said was deleted before the watch did (``confirm_deleted``) is gone at once, and the watch's later events
of it are stale: ignored until its own DELETED (or a list without it) arrives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import NamedTuple, TypeVar

from extender.podepc import PodEpc
from extender.readiness import Readiness

T = TypeVar("T")

#: How many uids :meth:`EpcLedger.confirm_deleted` remembers until the watch catches up (the oldest go
#: first: a UID is never reused, so forgetting one only lets a stale event count the pod again).
MAX_CONFIRMED_DELETED = 10_000


class NodeUsage(NamedTuple):
    """EPC accounting of one node, in bytes. ``capacity`` and ``free`` are None for a node without EPC.

    A named tuple, not a dataclass: the ledger keeps one per node and rebuilds it on every change.
    ``free`` (capacity - used - reserved, negative when overcommitted) is computed here and only here,
    by :func:`usage_of`; filter, score, bind, metrics and inspection read it.
    """

    name: str
    capacity: int | None
    used: int
    reserved: int
    free: int | None


def usage_of(name: str, capacity: int | None, used: int, reserved: int) -> NodeUsage:
    """A node's accounting, with its free EPC."""
    return NodeUsage(name, capacity, used, reserved, None if capacity is None else capacity - used - reserved)


@dataclass(frozen=True, slots=True)
class NodeEpc:
    """A node's accounting plus the pods holding its EPC (watched pods, reservations) and the pods
    nominated to it by preemption (their EPC is held for them against pods of lower priority)."""

    name: str
    capacity: int | None
    used: int
    reserved: int
    free: int | None
    pods: tuple[PodEpc, ...]
    reservations: tuple[PodEpc, ...]
    nominated: tuple[PodEpc, ...] = ()


@dataclass(frozen=True, slots=True)
class Reservation:
    """A pod this extender bound that the watch has not shown yet."""

    pod: PodEpc
    since: float


class EpcLedger:
    """Capacity, usage and reservations of EPC per node. All methods are thread-safe."""

    def __init__(self, wall_clock: Callable[[], float] | None = None) -> None:
        """``wall_clock``: the clock that times when each node's heartbeat was first seen
        (``Readiness.seen``), for a ledger a watch keeps current; None (a ledger read once: a list, a
        snapshot) leaves staleness to the timestamp the node wrote."""
        self.lock = threading.RLock()
        self._wall_clock = wall_clock
        self._capacity: dict[str, int | None] = {}
        self._pods: dict[str, PodEpc] = {}
        self._by_node: dict[str, dict[str, PodEpc]] = {}
        self._used: dict[str, int] = {}
        self._reservations: dict[str, Reservation] = {}
        self._reserved: dict[str, int] = {}
        #: Accounting of each known node, rebuilt on every change to it: reads are one dict lookup.
        self._usage: dict[str, NodeUsage] = {}
        #: Pods nominated to a node (``status.nominatedNodeName``, not bound yet), by uid and by node.
        self._nominated: dict[str, PodEpc] = {}
        self._nominated_on: dict[str, dict[str, PodEpc]] = {}
        #: Uids the API server said were deleted before the watch did, oldest first (``confirm_deleted``).
        self._deleted: dict[str, None] = {}
        #: Each node's ``SGXAttestationReady`` condition (extender/readiness.py), when it has one.
        self._readiness: dict[str, Readiness] = {}

    # --- nodes ---------------------------------------------------------------------------------

    def set_node(self, name: str, capacity: int | None) -> None:
        """Add a node or update its capacity (None: the node has no EPC)."""
        with self.lock:
            self._capacity[name] = capacity
            self._refresh(name)

    def set_readiness(self, name: str, readiness: Readiness | None) -> None:
        """A node's ``SGXAttestationReady`` condition (None: it has none), kept while the node is known.

        Its ``seen`` is when this ledger first saw the condition's ``lastHeartbeatTime`` as it is now: the
        same heartbeat seen again (a relist, another change to the node) keeps the first time, a new one
        starts again. Staleness is then judged on this process's clock alone, as the node lifecycle
        controller judges the kubelet's heartbeat (its ``probeTimestamp``): a node whose clock is behind or
        ahead neither looks dead nor outlives its probe."""
        with self.lock:
            if readiness is None:
                self._readiness.pop(name, None)
            elif name in self._capacity:
                if self._wall_clock is not None:
                    previous = self._readiness.get(name)
                    same = previous is not None and previous.heartbeat == readiness.heartbeat
                    seen = previous.seen if same and previous is not None else self._wall_clock()
                    readiness = replace(readiness, seen=seen)
                self._readiness[name] = readiness

    def readiness(self, name: str) -> Readiness | None:
        with self.lock:
            return self._readiness.get(name)

    def readiness_of(self, names: Iterable[str]) -> dict[str, Readiness | None]:
        """The condition of each named node, read under one lock acquisition."""
        with self.lock:
            get = self._readiness.get
            return {name: get(name) for name in names}

    def remove_node(self, name: str) -> None:
        """Forget a node. Its pods stay until the watch removes them (they may still be terminating)."""
        with self.lock:
            self._capacity.pop(name, None)
            self._usage.pop(name, None)
            self._readiness.pop(name, None)

    # --- pods ----------------------------------------------------------------------------------

    def set_pod(self, pod: PodEpc) -> None:
        """Add or update a pod (by uid), moving it when its node changed; confirms its reservation
        (and ends its nomination: it is bound)."""
        with self.lock:
            if pod.uid in self._deleted:  # a stale event: the API server has already deleted it
                return
            self._drop_reservation(pod.uid)
            self._drop_nomination(pod.uid)
            self._remove(pod.uid)
            self._add(pod)

    def remove_pod(self, uid: str) -> None:
        """Forget a pod (deleted, finished, or no longer holding EPC). Unknown uids are ignored."""
        with self.lock:
            self._remove(uid)
            self._deleted.pop(uid, None)  # the watch has caught up with confirm_deleted

    def confirm_deleted(self, uids: Iterable[str]) -> None:
        """The API server no longer has these pods, though the watch has not said so yet: forget them now,
        and ignore the watch's stale events of them until it does (:meth:`remove_pod`, :meth:`replace`).
        A uid the ledger no longer counts (the watch said so while the API server was being asked) is
        left alone: nothing would come to clear it."""
        with self.lock:
            for uid in uids:
                if uid in self._pods:
                    self._remove(uid)
                    self._deleted[uid] = None
            while len(self._deleted) > MAX_CONFIRMED_DELETED:
                del self._deleted[next(iter(self._deleted))]

    def leaving_on(self, node: str) -> tuple[PodEpc, ...]:
        """The pods on ``node`` that are on their way out (``PodEpc.leaving``), the largest first."""
        with self.lock:
            on_node = self._by_node.get(node)
            if not on_node:
                return ()
            return tuple(sorted((p for p in on_node.values() if p.leaving), key=lambda p: (-p.epc, p.uid)))

    def replace(self, nodes: Mapping[str, int | None], pods: Iterable[PodEpc]) -> None:
        """Replace everything with a fresh full list, atomically.

        Reservations of pods the list shows are dropped (the pods now count as used); other
        reservations are kept: a bind can complete between the list and the next watch event. A pod
        :meth:`confirm_deleted` forgot stays out even when the list (older than that answer) shows it.
        """
        with self.lock:
            self._capacity = dict(nodes)
            self._readiness = {n: r for n, r in self._readiness.items() if n in self._capacity}
            self._pods = {}
            self._by_node = {}
            self._used = {}
            deleted, self._deleted = self._deleted, {}
            for pod in pods:
                if pod.uid in deleted:  # a list older than what the API server said since: still deleted
                    self._deleted[pod.uid] = None
                    continue
                self._remove(pod.uid)
                self._add(pod)
            for uid in [uid for uid in self._reservations if uid in self._pods]:
                self._drop_reservation(uid)
            self._usage = {}
            for name in self._capacity:
                self._refresh(name)

    # --- reservations --------------------------------------------------------------------------

    def reserve(self, pod: PodEpc, now: float) -> None:
        """Hold ``pod.epc`` on ``pod.node`` until the watch shows the pod there.

        A no-op when the watch already shows the pod on that node (it already counts as used).
        """
        with self.lock:
            known = self._pods.get(pod.uid)
            if known is not None and known.node == pod.node:
                return
            self._drop_reservation(pod.uid)
            self._reservations[pod.uid] = Reservation(pod=pod, since=now)
            self._reserved[pod.node] = self._reserved.get(pod.node, 0) + pod.epc
            self._refresh(pod.node)

    def unreserve(self, uid: str) -> None:
        """Withdraw a reservation; unknown uids are ignored."""
        with self.lock:
            self._drop_reservation(uid)

    def expire_reservations(self, now: float, ttl: float) -> list[str]:
        """Drop reservations older than ``ttl`` seconds; returns their uids."""
        with self.lock:
            expired = [uid for uid, r in self._reservations.items() if now - r.since >= ttl]
            for uid in expired:
                self._drop_reservation(uid)
            return expired

    # --- nominations ---------------------------------------------------------------------------

    def nominate(self, pod: PodEpc) -> None:
        """A pod preemption nominated to ``pod.node``: its EPC is held there for it (see :meth:`held`)."""
        with self.lock:
            self._drop_nomination(pod.uid)
            if pod.uid in self._pods:
                return  # already bound: it counts as used
            self._nominated[pod.uid] = pod
            self._nominated_on.setdefault(pod.node, {})[pod.uid] = pod

    def withdraw_nomination(self, uid: str) -> None:
        """The pod is no longer nominated (bound, deleted, or given up); unknown uids are ignored."""
        with self.lock:
            self._drop_nomination(uid)

    def replace_nominations(self, pods: Iterable[PodEpc]) -> None:
        """Make the nominations exactly ``pods`` (a fresh list), atomically."""
        with self.lock:
            self._nominated, self._nominated_on = {}, {}
            for pod in pods:
                self.nominate(pod)

    def held(self, node: str, uid: str, priority: int) -> int:
        """EPC on ``node`` held for nominated pods other than ``uid`` with priority ≥ ``priority``: a pod
        may not take what preemption freed for a pod that matters as much or more (kube-scheduler's own
        filters count nominated pods the same way)."""
        with self.lock:
            on_node = self._nominated_on.get(node)
            if not on_node:
                return 0
            return sum(p.epc for p in on_node.values() if p.uid != uid and p.priority >= priority)

    def holds(self, uid: str, priority: int) -> dict[str, int]:
        """:meth:`held` of every node with nominations (usually none): one dict for a filter call."""
        with self.lock:
            if not self._nominated_on:
                return {}
            found = {node: self.held(node, uid, priority) for node in self._nominated_on}
            return {node: amount for node, amount in found.items() if amount}

    def nominated_node(self, uid: str) -> str:
        """The node the pod is nominated to, as the watch last showed it ("" when none)."""
        with self.lock:
            pod = self._nominated.get(uid)
            return pod.node if pod is not None else ""

    def nomination_count(self) -> int:
        with self.lock:
            return len(self._nominated)

    def nominated_by_node(self) -> dict[str, int]:
        """EPC nominated pods need, by node (whatever their priority): what preemption set aside."""
        with self.lock:
            return {
                node: sum(p.epc for p in pods.values()) for node, pods in self._nominated_on.items() if pods
            }

    # --- queries -------------------------------------------------------------------------------

    def usage(self, name: str) -> NodeUsage | None:
        """The accounting of a known node (cheap: no pod list); None for an unknown node."""
        with self.lock:
            return self._usage.get(name)

    def with_usages(self, read: Callable[[Mapping[str, NodeUsage]], T]) -> T:
        """``read(accounting of every known node by name)`` under the lock; returns what it returns.

        One lock acquisition and one consistent view for a whole filter or prioritize call, with no
        per-name list built in between (``scheduling.filter_names``/``score_names`` look the names
        up themselves). The mapping is the ledger's own: ``read`` must only read it, and must not
        keep it past the call.
        """
        with self.lock:
            return read(self._usage)

    def node(self, name: str) -> NodeEpc | None:
        """A known node's accounting with the pods holding its EPC; None for an unknown node."""
        with self.lock:
            usage = self.usage(name)
            if usage is None:
                return None
            pods = tuple(sorted(self._by_node.get(name, {}).values(), key=_pod_order))
            reservations = tuple(
                sorted((r.pod for r in self._reservations.values() if r.pod.node == name), key=_pod_order)
            )
            nominated = tuple(sorted(self._nominated_on.get(name, {}).values(), key=_pod_order))
            return NodeEpc(
                name=name,
                capacity=usage.capacity,
                used=usage.used,
                reserved=usage.reserved,
                free=usage.free,
                pods=pods,
                reservations=reservations,
                nominated=nominated,
            )

    def nodes(self) -> list[str]:
        """Names of the known nodes, sorted."""
        with self.lock:
            return sorted(self._capacity)

    def pod(self, uid: str) -> PodEpc | None:
        """The pod with this uid as the watch last showed it, or None."""
        with self.lock:
            return self._pods.get(uid)

    def reservation(self, uid: str) -> Reservation | None:
        """The reservation held for this uid, or None."""
        with self.lock:
            return self._reservations.get(uid)

    def pod_count(self) -> int:
        """Number of pods holding EPC (reservations not included)."""
        with self.lock:
            return len(self._pods)

    def node_count(self) -> int:
        """Number of known nodes (with or without EPC)."""
        with self.lock:
            return len(self._capacity)

    def reservation_count(self) -> int:
        """Number of reservations not yet confirmed by the watch."""
        with self.lock:
            return len(self._reservations)

    def __len__(self) -> int:
        return self.pod_count()

    # --- internals (caller holds the lock) -----------------------------------------------------

    def _add(self, pod: PodEpc) -> None:
        self._pods[pod.uid] = pod
        self._by_node.setdefault(pod.node, {})[pod.uid] = pod
        self._used[pod.node] = self._used.get(pod.node, 0) + pod.epc
        self._refresh(pod.node)

    def _remove(self, uid: str) -> None:
        old = self._pods.pop(uid, None)
        if old is None:
            return
        on_node = self._by_node[old.node]
        del on_node[uid]
        if not on_node:
            del self._by_node[old.node]
            del self._used[old.node]
        else:
            self._used[old.node] -= old.epc
        self._refresh(old.node)

    def _drop_nomination(self, uid: str) -> None:
        pod = self._nominated.pop(uid, None)
        if pod is not None:
            on_node = self._nominated_on[pod.node]
            del on_node[uid]
            if not on_node:
                del self._nominated_on[pod.node]

    def _drop_reservation(self, uid: str) -> None:
        reservation = self._reservations.pop(uid, None)
        if reservation is None:
            return
        node = reservation.pod.node
        remaining = self._reserved[node] - reservation.pod.epc
        if remaining:
            self._reserved[node] = remaining
        else:
            del self._reserved[node]
        self._refresh(node)

    def _refresh(self, name: str) -> None:
        if name in self._capacity:
            self._usage[name] = usage_of(
                name, self._capacity[name], self._used.get(name, 0), self._reserved.get(name, 0)
            )


def _pod_order(pod: PodEpc) -> tuple[str, str, str]:
    return (pod.namespace, pod.name, pod.uid)
