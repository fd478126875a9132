"""EpcLedger against a plain model, step by step (hypothesis stateful testing).

Rules: set/remove nodes and pods, reserve/unreserve/expire, relist (``replace``) with the current or a
new state, relist of one kind through the feed's ``replace_nodes``/``replace_pods``, pods the API server
said were deleted (``confirm_deleted``: gone, their later events ignored until removed or relisted without
them). Invariants after
every step: used is the sum over live pods on the node and never negative, reserved is the sum over
reservations, free = capacity - used - reserved, and the ledger equals one built from scratch from
the same nodes, pods and reservations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from extender.ledger import EpcLedger
from extender.podepc import PodEpc
from extender.watchevents import replace_nodes, replace_pods

NODES = ("n1", "n2", "n3", "n4")
UIDS = tuple(f"u{i}" for i in range(8))

node_names = st.sampled_from(NODES)
uids = st.sampled_from(UIDS)
capacities = st.one_of(st.none(), st.integers(min_value=0, max_value=1000))
epcs = st.integers(min_value=1, max_value=400)
pods = st.builds(
    lambda uid, node, epc: PodEpc(uid=uid, namespace="ns", name=f"pod-{uid}", node=node, epc=epc),
    uids,
    node_names,
    epcs,
)


@dataclass(frozen=True)
class Held:
    pod: PodEpc
    since: float


def snapshot(ledger: EpcLedger) -> dict[str, Any]:
    with ledger.lock:
        return {
            "nodes": {name: ledger.node(name) for name in ledger.nodes()},
            "pods": {uid: ledger.pod(uid) for uid in UIDS},
            "reservations": {uid: ledger.reservation(uid) for uid in UIDS},
            "usage": {name: ledger.usage(name) for name in NODES},
            "counts": (ledger.node_count(), ledger.pod_count(), ledger.reservation_count(), len(ledger)),
        }


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = EpcLedger()
        self.now = 0.0
        self.nodes: dict[str, int | None] = {}
        self.pods: dict[str, PodEpc] = {}
        self.held: dict[str, Held] = {}
        #: Uids confirmed deleted whose removal (or a relist without them) has not come yet.
        self.deleted: set[str] = set()

    # --- the model's rules, mirroring the ledger's documented semantics ---------------------------

    def _model_reserve(self, pod: PodEpc) -> None:
        known = self.pods.get(pod.uid)
        if known is not None and known.node == pod.node:
            return
        self.held[pod.uid] = Held(pod, self.now)

    def _model_replace_pods(self, listed: list[PodEpc]) -> None:
        self.pods = {}
        for pod in listed:
            if pod.uid not in self.deleted:
                self.pods[pod.uid] = pod
        self.deleted &= {pod.uid for pod in listed}
        for uid in list(self.held):
            if uid in self.pods:
                del self.held[uid]

    @rule(name=node_names, capacity=capacities)
    def set_node(self, name: str, capacity: int | None) -> None:
        self.ledger.set_node(name, capacity)
        self.nodes[name] = capacity

    @rule(name=node_names)
    def remove_node(self, name: str) -> None:
        self.ledger.remove_node(name)
        self.nodes.pop(name, None)

    @rule(pod=pods)
    def set_pod(self, pod: PodEpc) -> None:
        self.ledger.set_pod(pod)
        if pod.uid in self.deleted:  # a stale event
            return
        self.pods[pod.uid] = pod
        self.held.pop(pod.uid, None)

    @rule(uid=uids)
    def remove_pod(self, uid: str) -> None:
        self.ledger.remove_pod(uid)
        self.pods.pop(uid, None)
        self.deleted.discard(uid)

    @rule(gone=st.lists(uids, max_size=3))
    def confirm_deleted(self, gone: list[str]) -> None:
        self.ledger.confirm_deleted(gone)
        for uid in gone:
            if uid in self.pods:
                del self.pods[uid]
                self.deleted.add(uid)

    @rule(pod=pods)
    def reserve(self, pod: PodEpc) -> None:
        self.ledger.reserve(pod, self.now)
        self._model_reserve(pod)

    @rule(uid=uids)
    def unreserve(self, uid: str) -> None:
        self.ledger.unreserve(uid)
        self.held.pop(uid, None)

    @rule(dt=st.floats(min_value=0.0, max_value=30.0))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(ttl=st.floats(min_value=0.0, max_value=60.0))
    def expire(self, ttl: float) -> None:
        expired = self.ledger.expire_reservations(self.now, ttl)
        expected = {uid for uid, h in self.held.items() if self.now - h.since >= ttl}
        assert sorted(expired) == sorted(expected)
        for uid in expected:
            del self.held[uid]

    @rule(nodes=st.dictionaries(node_names, capacities), listed=st.lists(pods, max_size=10))
    def relist_new_state(self, nodes: dict[str, int | None], listed: list[PodEpc]) -> None:
        self.ledger.replace(nodes, listed)
        self.nodes = dict(nodes)
        self._model_replace_pods(listed)

    @rule(data=st.data())
    def relist_same_state(self, data: st.DataObject) -> None:
        listed = data.draw(st.permutations(list(self.pods.values())))
        before = snapshot(self.ledger)
        self.ledger.replace(dict(self.nodes), listed)
        self._model_replace_pods(listed)
        after = snapshot(self.ledger)
        # Only reservations of listed pods can go; with none of those, nothing changes.
        if not any(uid in self.pods for uid in before["reservations"] if before["reservations"][uid]):
            assert after == before

    @rule(nodes=st.dictionaries(node_names, capacities))
    def relist_nodes_only(self, nodes: dict[str, int | None]) -> None:
        replace_nodes(self.ledger, nodes)
        self.nodes = dict(nodes)

    @rule(listed=st.lists(pods, max_size=10), seen=st.lists(uids, max_size=3))
    def relist_pods_only(self, listed: list[PodEpc], seen: list[str]) -> None:
        replace_pods(self.ledger, listed, seen)
        self._model_replace_pods(listed)
        for uid in seen:
            self.held.pop(uid, None)

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def accounting_matches_the_model(self) -> None:
        ledger = self.ledger
        assert ledger.nodes() == sorted(self.nodes)
        for name in NODES:
            used = sum(p.epc for p in self.pods.values() if p.node == name)
            reserved = sum(h.pod.epc for h in self.held.values() if h.pod.node == name)
            usage = ledger.usage(name)
            if name not in self.nodes:
                assert usage is None and ledger.node(name) is None
                continue
            assert usage is not None
            assert usage.used == used >= 0
            assert usage.reserved == reserved >= 0
            capacity = self.nodes[name]
            assert usage.capacity == capacity
            if capacity is None:
                assert usage.free is None
            else:
                assert usage.free == capacity - used - reserved
            node = ledger.node(name)
            assert node is not None
            assert (node.used, node.reserved, node.free) == (usage.used, usage.reserved, usage.free)
            assert sum(p.epc for p in node.pods) == used
            assert {p.uid for p in node.pods} == {p.uid for p in self.pods.values() if p.node == name}
            held_here = {uid for uid, h in self.held.items() if h.pod.node == name}
            assert {p.uid for p in node.reservations} == held_here
        for uid in UIDS:
            assert ledger.pod(uid) == self.pods.get(uid)
            reservation = ledger.reservation(uid)
            held = self.held.get(uid)
            assert (reservation is None) == (held is None)
            if reservation is not None and held is not None:
                assert (reservation.pod, reservation.since) == (held.pod, held.since)
        assert (ledger.node_count(), ledger.pod_count(), ledger.reservation_count()) == (
            len(self.nodes),
            len(self.pods),
            len(self.held),
        )

    @invariant()
    def equals_a_ledger_built_from_scratch(self) -> None:
        scratch = EpcLedger()
        for name, capacity in self.nodes.items():
            scratch.set_node(name, capacity)
        for pod in self.pods.values():
            scratch.set_pod(pod)
        for held in self.held.values():
            scratch.reserve(held.pod, held.since)
        assert snapshot(self.ledger) == snapshot(scratch)

        relisted = EpcLedger()
        relisted.replace(dict(self.nodes), list(self.pods.values()))
        for held in self.held.values():
            relisted.reserve(held.pod, held.since)
        assert snapshot(relisted) == snapshot(scratch)


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
