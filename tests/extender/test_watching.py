"""The ledger feed: watch streams as constants through the pure core, then the real kubernetes client
against a fake apiserver on 127.0.0.1 (lists, chunked watches, 410 Gone, dropped connections, 500s).

The proof each time: after the fault, the ledger equals a ledger built from a fresh list.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

import pytest

from confidential_pods.profiles import PROFILES
from extender.ledger import EpcLedger
from extender.podepc import PodEpc, nominated_facts, pod_facts
from extender.watchevents import (
    Applied,
    Failed,
    Kind,
    Relist,
    apply_event,
    backoff_delay,
    compact_pod_facts,
    node_entry,
    replace_nodes,
    replace_pods,
)
from extender.watching import ASSIGNED_PODS, LedgerFeed, _abort
from tests.e2e import processes
from tests.fakeapi import FakeApiServer, serving

PROFILE = PROFILES["alibaba"]
RES = PROFILE.epc_resource
MI = 1024 * 1024


def node(name: str, epc: str | None, rv: str = "1") -> dict[str, Any]:
    allocatable = {"cpu": "8", "memory": "32Gi"}
    if epc is not None:
        allocatable[RES] = epc
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": rv},
        "status": {"allocatable": allocatable, "capacity": dict(allocatable)},
    }


def pod(
    name: str,
    node_name: str,
    epc: str,
    *,
    phase: str = "Running",
    rv: str = "1",
    deleting: bool = False,
    sidecar_epc: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeName": node_name,
        "containers": [{"name": "app", "image": "enclave", "resources": {"requests": {RES: epc}}}],
    }
    if sidecar_epc is not None:
        spec["initContainers"] = [
            {
                "name": "aesm",
                "image": "aesm",
                "restartPolicy": "Always",
                "resources": {"limits": {RES: sidecar_epc}},
            }
        ]
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "team",
        "uid": f"uid-{name}",
        "resourceVersion": rv,
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-26T10:00:00Z"
    return {"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": spec, "status": {"phase": phase}}


def ev(kind_of_event: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind_of_event, "object": obj}


def bookmark(kind: str, rv: str) -> dict[str, Any]:
    return {
        "type": "BOOKMARK",
        "object": {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": rv}},
    }


# As kube-apiserver v1.37.2 sends it for a watch from a compacted resourceVersion (seen in
# test_watching_apiserver.py); from its watch cache the message is "too old resource version: 100 (250)".
GONE_EVENT = {
    "type": "ERROR",
    "object": {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "The resourceVersion for the provided watch is too old.",
        "reason": "Expired",
        "code": 410,
    },
}
INTERNAL_ERROR_EVENT = {
    "type": "ERROR",
    "object": {
        "kind": "Status",
        "status": "Failure",
        "message": "etcd timeout",
        "reason": "InternalError",
        "code": 500,
    },
}

# The state a fresh list would show after the streams below.
FINAL_NODES = [node("sgx-a", "93", rv="20"), node("plain", None, rv="3")]
FINAL_PODS = [pod("web", "sgx-a", "32", rv="14", sidecar_epc="8"), pod("db", "sgx-b", "16", rv="7")]

NODE_STREAM = [
    ev("ADDED", node("sgx-a", "64", rv="2")),
    ev("ADDED", node("plain", None, rv="3")),
    ev("ADDED", node("sgx-gone", "64", rv="4")),
    bookmark("Node", "10"),
    ev("MODIFIED", node("sgx-a", "93", rv="20")),
    ev("DELETED", node("sgx-gone", "64", rv="21")),
]
POD_STREAM = [
    ev("ADDED", pod("web", "sgx-a", "16", rv="5")),
    ev("ADDED", pod("db", "sgx-b", "16", rv="7")),
    ev("ADDED", pod("batch", "sgx-a", "40", rv="8")),
    ev("ADDED", pod("leaving", "sgx-a", "8", rv="9")),
    ev("MODIFIED", pod("batch", "sgx-a", "40", phase="Succeeded", rv="11")),
    ev("MODIFIED", pod("leaving", "sgx-a", "8", deleting=True, rv="12")),
    ev("DELETED", pod("leaving", "sgx-a", "8", deleting=True, rv="13")),
    ev("MODIFIED", pod("web", "sgx-a", "32", rv="14", sidecar_epc="8")),
    ev("DELETED", pod("batch", "sgx-a", "40", phase="Succeeded", rv="15")),
    bookmark("Pod", "30"),
]


def fresh(nodes: Iterable[dict[str, Any]], pods: Iterable[dict[str, Any]]) -> EpcLedger:
    """The ledger a fresh list of these objects gives."""
    ledger = EpcLedger()
    pods = list(pods)
    entries = [node_entry(n, PROFILE) for n in nodes]
    facts = [pod_facts(p, PROFILE) for p in pods]
    ledger.replace(dict(e for e in entries if e is not None), [f for f in facts if f is not None])
    nominated = [nominated_facts(p, PROFILE) for p in pods]
    ledger.replace_nominations(f for f in nominated if f is not None)
    return ledger


def state(ledger: EpcLedger) -> dict[str, Any]:
    """Everything observable about a ledger, comparable with ==."""
    with ledger.lock:
        nodes = {name: ledger.node(name) for name in ledger.nodes()}
        return {
            "nodes": nodes,
            "pod_count": ledger.pod_count(),
            "reservations": ledger.reservation_count(),
            "pods": {uid: ledger.pod(uid) for uid in _uids(ledger)},
        }


def _uids(ledger: EpcLedger) -> list[str]:
    # Every uid used in these tests; pods on unknown nodes are only reachable by uid.
    names = ["web", "db", "batch", "leaving", "late", "spare", "new", "fresh", "gone"]
    names += [f"p{i}" for i in range(40)]
    return [f"uid-{n}" for n in names if ledger.pod(f"uid-{n}") is not None]


def run(ledger: EpcLedger, kind: Kind, events: Iterable[object]) -> list[object]:
    return [apply_event(ledger, kind, e, PROFILE) for e in events]


# --- the pure core ---------------------------------------------------------------------------------


def test_streams_converge_to_a_fresh_list() -> None:
    ledger = EpcLedger()
    outcomes = run(ledger, "Node", NODE_STREAM) + run(ledger, "Pod", POD_STREAM)
    assert state(ledger) == state(fresh(FINAL_NODES, FINAL_PODS))
    assert outcomes[3] == Applied("10") and outcomes[-1] == Applied("30")
    assert all(isinstance(o, Applied) for o in outcomes)
    a = ledger.node("sgx-a")
    assert a is not None and (a.capacity, a.used, a.free) == (93 * MI, 40 * MI, 53 * MI)
    assert [p.name for p in a.pods] == ["web"]  # batch finished, leaving deleted
    plain = ledger.node("plain")
    assert plain is not None and plain.capacity is None
    assert ledger.node("sgx-gone") is None
    assert ledger.pod("uid-db") == PodEpc("uid-db", "team", "db", "sgx-b", 16 * MI)  # node not (yet) known


def test_interleaved_order_and_replayed_events_converge() -> None:
    """Pods before their node, and a watch resumed from an older version replaying events."""
    ledger = EpcLedger()
    run(ledger, "Pod", POD_STREAM[:5])
    run(ledger, "Node", NODE_STREAM)
    run(ledger, "Pod", POD_STREAM[2:])  # replay from an older resourceVersion
    assert state(ledger) == state(fresh(FINAL_NODES, FINAL_PODS))


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (GONE_EVENT, Relist("410 Expired: The resourceVersion for the provided watch is too old.")),
        (
            {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Gone", "message": "x"}},
            Relist,
        ),
        ({"type": "ERROR", "object": {"kind": "Status", "reason": "Expired", "message": "x"}}, Relist),
        (INTERNAL_ERROR_EVENT, Failed("500 InternalError: etcd timeout")),
        ("not an event", Failed),
        (None, Failed),
        ({"type": "ADDED"}, Failed),
        ({"object": {}}, Failed),
        ({"type": "SOMETHING_NEW", "object": {"metadata": {"resourceVersion": "77"}}}, Applied("77")),
        (bookmark("Pod", "42"), Applied("42")),
        ({"type": "BOOKMARK", "object": {"metadata": {}}}, Applied(None)),
    ],
)
def test_outcomes(event: object, expected: object) -> None:
    ledger = EpcLedger()
    outcome = apply_event(ledger, "Pod", event, PROFILE)
    if isinstance(expected, type):
        assert isinstance(outcome, expected)
    else:
        assert outcome == expected
    assert state(ledger) == state(EpcLedger())  # nothing applied


def test_error_and_bookmark_leave_the_ledger_alone() -> None:
    ledger = EpcLedger()
    run(ledger, "Node", NODE_STREAM)
    run(ledger, "Pod", POD_STREAM)
    before = state(ledger)
    run(ledger, "Pod", [GONE_EVENT, INTERNAL_ERROR_EVENT, bookmark("Pod", "99")])
    assert state(ledger) == before


def test_watch_confirms_or_withdraws_reservations() -> None:
    ledger = EpcLedger()
    ledger.set_node("sgx-a", 93 * MI)
    ledger.reserve(PodEpc("uid-web", "team", "web", "sgx-a", 16 * MI), now=0.0)
    ledger.reserve(PodEpc("uid-batch", "team", "batch", "sgx-a", 40 * MI), now=0.0)
    ledger.reserve(PodEpc("uid-leaving", "team", "leaving", "sgx-a", 8 * MI), now=0.0)
    run(
        ledger,
        "Pod",
        [
            ev("ADDED", pod("web", "sgx-a", "16")),  # confirmed: now used, no longer reserved
            ev("MODIFIED", pod("batch", "sgx-a", "40", phase="Failed")),  # seen finished: withdrawn
            ev("DELETED", pod("leaving", "sgx-a", "8")),  # seen deleted: withdrawn
        ],
    )
    usage = ledger.usage("sgx-a")
    assert usage is not None and (usage.used, usage.reserved) == (16 * MI, 0)
    assert ledger.reservation_count() == 0


def test_status_only_update_keeps_the_entry_and_still_settles_a_reservation() -> None:
    ledger = EpcLedger()
    run(ledger, "Pod", [ev("ADDED", pod("web", "sgx-a", "16", rv="5"))])
    entry = ledger.pod("uid-web")
    status_update = pod("web", "sgx-a", "16", rv="6")
    status_update["status"]["podIP"] = "10.0.0.7"
    assert run(ledger, "Pod", [ev("MODIFIED", status_update)]) == [Applied("6")]
    assert ledger.pod("uid-web") is entry
    # A reservation for the same uid (elsewhere) is settled by the event even though nothing changed.
    ledger.reserve(PodEpc("uid-web", "team", "web", "sgx-b", 16 * MI), now=0.0)
    run(ledger, "Pod", [ev("MODIFIED", status_update)])
    assert ledger.reservation("uid-web") is None and ledger.pod("uid-web") == entry


def test_relist_of_one_kind_keeps_the_other() -> None:
    ledger = EpcLedger()
    run(ledger, "Node", NODE_STREAM)
    run(ledger, "Pod", POD_STREAM)
    ledger.reserve(PodEpc("uid-new", "team", "new", "sgx-a", 4 * MI), now=0.0)
    ledger.reserve(PodEpc("uid-gone", "team", "gone", "sgx-a", 2 * MI), now=0.0)

    replace_nodes(ledger, dict(e for e in (node_entry(n, PROFILE) for n in FINAL_NODES) if e))
    assert ledger.pod_count() == 2  # pods untouched by a node relist

    spare = pod("spare", "sgx-a", "4")
    listed = [*FINAL_PODS, spare]
    replace_pods(
        ledger, [f for f in (pod_facts(p, PROFILE) for p in listed) if f], seen_without_epc=["uid-gone"]
    )
    assert ledger.nodes() == ["plain", "sgx-a"]  # nodes untouched by a pod relist
    assert ledger.reservation("uid-new") is not None  # not listed yet: still reserved
    assert ledger.reservation("uid-gone") is None  # listed without EPC: withdrawn
    expected = fresh(FINAL_NODES, listed)
    expected.reserve(PodEpc("uid-new", "team", "new", "sgx-a", 4 * MI), now=0.0)
    assert state(ledger) == state(expected)


def test_node_relist_drops_nodes_deleted_while_not_watching() -> None:
    ledger = EpcLedger()
    run(ledger, "Node", NODE_STREAM[:3])  # sgx-a (64), plain, sgx-gone
    replace_nodes(ledger, {"sgx-a": 93 * MI, "sgx-new": 10 * MI})
    assert ledger.nodes() == ["sgx-a", "sgx-new"]
    usage = ledger.usage("sgx-a")
    assert usage is not None and usage.capacity == 93 * MI


def test_pod_entries_share_node_and_namespace_strings() -> None:
    first = json.loads(json.dumps(pod("a", "sgx-a", "4")))
    second = json.loads(json.dumps(pod("b", "sgx-a", "4")))
    assert first["spec"]["nodeName"] is not second["spec"]["nodeName"]  # decoded JSON: separate copies
    a, b = compact_pod_facts(first, PROFILE), compact_pod_facts(second, PROFILE)
    assert a == pod_facts(first, PROFILE) and b == pod_facts(second, PROFILE)
    assert a is not None and b is not None
    assert a.node is b.node and a.namespace is b.namespace
    assert compact_pod_facts(pod("c", "sgx-a", "0"), PROFILE) is None


def test_backoff_is_exponential_jittered_and_capped() -> None:
    for failures in range(1, 40):
        d = min(30.0, 0.8 * 2 ** (failures - 1))
        low, high = backoff_delay(failures, 0.0), backoff_delay(failures, 0.999999)
        assert low == pytest.approx(d / 2) and d / 2 <= high <= d
    assert backoff_delay(1, 0.5) == pytest.approx(0.6)
    assert backoff_delay(3, 0.0) == pytest.approx(1.6)
    assert backoff_delay(100, 0.999) <= 30.0


# --- the shell: real kubernetes client, fake apiserver over HTTP -------------------------------------


#: Poll a condition (every 10 ms, at most 15.0 s).
wait_until = partial(processes.wait_until, timeout=15.0, what="the condition", interval=0.01)


class Harness:
    def __init__(self, api: FakeApiServer, **options: Any) -> None:
        self.api = api
        self.ledger = EpcLedger()
        self.delays: list[float] = []
        self.now = 0.0
        options.setdefault("page_size", 2)
        self.feed = LedgerFeed(
            api.api_client(),
            self.ledger,
            PROFILE,
            clock=lambda: self.now,
            sleep=self._sleep,
            rand=lambda: 0.5,
            **options,
        )

    def _sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        time.sleep(0.005)

    def expected(self) -> dict[str, Any]:
        with self.api.cond:
            nodes = copy.deepcopy(list(self.api.objects["Node"].values()))
            pods = copy.deepcopy(list(self.api.objects["Pod"].values()))
        return state(fresh(nodes, pods))

    def converged(self) -> bool:
        return state(self.ledger) == self.expected()

    def put_pod(self, obj: dict[str, Any]) -> None:
        """Store a pod in the apiserver and wait until the ledger shows it."""
        self.api.put("Pod", obj)
        wait_until(self.converged)

    def relists(self, kind: str, reason: str) -> float:
        return _sample(self.feed, "confidential_pods_extender_watch_relists_total", kind=kind, reason=reason)

    def errors(self, kind: str) -> float:
        return _sample(self.feed, "confidential_pods_extender_watch_errors_total", kind=kind)


def _sample(feed: LedgerFeed, name: str, **labels: str) -> float:
    metrics = feed.metrics
    for metric in (metrics.relists, metrics.errors, metrics.events, metrics.list_duration):
        for family in metric.collect():
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
    return 0.0


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with serving() as server:
        for n in FINAL_NODES:
            server.put("Node", n)
        for i in range(5):
            server.put("Pod", pod(f"p{i}", "sgx-a", "4"))
        server.put("Pod", pod("db", "sgx-b", "16"))
        yield server


@pytest.fixture
def harness(api: FakeApiServer) -> Iterator[Harness]:
    h = Harness(api)
    h.feed.start()
    try:
        wait_until(h.feed.ready)
        yield h
    finally:
        h.feed.stop()


def test_lists_paginated_then_watches_changes(harness: Harness) -> None:
    api = harness.api
    assert harness.converged()
    pod_lists = api.lists("Pod", ASSIGNED_PODS)
    assert len(pod_lists) == 3  # 6 pods, 2 per page
    assert all(q["fieldSelector"] == "spec.nodeName!=" and q["limit"] == "2" for q in pod_lists)
    assert "continue" not in pod_lists[0] and pod_lists[1]["continue"]
    wait_until(lambda: len(api.watches("Pod", ASSIGNED_PODS)) >= 1 and len(api.watches("Node")) >= 1)
    watch = api.watches("Pod", ASSIGNED_PODS)[0]
    assert watch["allowWatchBookmarks"] == "true" and watch["fieldSelector"] == "spec.nodeName!="
    assert watch["resourceVersion"]

    api.put("Node", node("sgx-b", "128"))
    api.put("Pod", pod("p0", "sgx-a", "8"))  # resized
    api.put("Pod", pod("p1", "sgx-a", "4", phase="Succeeded"))
    api.delete("Pod", "team/p2")
    api.put("Pod", pod("p3", "sgx-a", "4", deleting=True))
    api.put("Pod", pod("new", "sgx-b", "64"))
    api.delete("Node", "plain")
    wait_until(harness.converged)
    b = harness.ledger.node("sgx-b")
    assert b is not None and (b.used, b.free) == (80 * MI, 48 * MI)
    assert harness.relists("Pod", "initial") == 1 and harness.relists("Pod", "gone") == 0


def test_bookmarks_advance_the_resume_version(harness: Harness) -> None:
    api = harness.api
    api.put("Node", node("sgx-c", "8"))  # a node event: the pod watch only sees bookmarks of it
    wait_until(harness.converged)
    with api.cond:
        current = api.rv
    wait_until(lambda: int(api.watches("Pod", ASSIGNED_PODS)[0]["resourceVersion"]) < current)
    time.sleep(api.bookmark_interval * 2)  # let a bookmark carry `current` to the pod watch
    api.disturb_stream("Pod", "end", ASSIGNED_PODS)
    wait_until(lambda: len(api.watches("Pod", ASSIGNED_PODS)) >= 2)
    assert int(api.watches("Pod", ASSIGNED_PODS)[-1]["resourceVersion"]) >= current
    assert harness.relists("Pod", "gone") == 0


def test_gone_after_compaction_relists_and_drops_what_was_deleted_meanwhile(harness: Harness) -> None:
    api = harness.api
    # While the watch is away, history is compacted: deletions in the gap are only in a fresh list.
    api.disturb_stream("Pod", "drop", ASSIGNED_PODS)
    api.disturb_stream("Node", "drop")
    api.delete("Pod", "team/p0")
    api.delete("Node", "plain")
    api.put("Pod", pod("p1", "sgx-a", "12"))
    api.put("Node", node("sgx-b", "64"))
    api.compact("Pod")
    api.compact("Node")
    wait_until(lambda: harness.relists("Pod", "gone") >= 1 and harness.relists("Node", "gone") >= 1)
    wait_until(harness.converged)
    assert harness.ledger.pod("uid-p0") is None and harness.ledger.node("plain") is None


def test_error_410_event_mid_stream_relists(harness: Harness) -> None:
    api = harness.api
    harness.put_pod(pod("fresh", "sgx-a", "2"))
    lists_before = len(api.lists("Pod", ASSIGNED_PODS))
    api.disturb_stream("Pod", "gone", ASSIGNED_PODS)
    wait_until(lambda: harness.relists("Pod", "gone") == 1)
    assert len(api.lists("Pod", ASSIGNED_PODS)) > lists_before
    api.delete("Pod", "team/fresh")
    wait_until(harness.converged)


def test_every_full_list_is_timed_by_kind_and_reason(harness: Harness) -> None:
    def timed(kind: str, reason: str) -> tuple[float, float]:
        name = "confidential_pods_extender_watch_list_duration_seconds"
        labels = {"kind": kind, "reason": reason}
        feed = harness.feed
        return _sample(feed, f"{name}_count", **labels), _sample(feed, f"{name}_sum", **labels)

    assert timed("Node", "initial")[0] == 1 and timed("Pod", "initial")[0] == 1
    assert timed("Pod", "initial")[1] > 0
    harness.api.disturb_stream("Pod", "gone", ASSIGNED_PODS)
    wait_until(lambda: harness.relists("Pod", "gone") == 1)
    count, seconds = timed("Pod", "gone")
    assert count == 1 and 0 < seconds < 10
    assert timed("Node", "gone") == (0, 0) and timed("Pod", "initial")[0] == 1


def test_dropped_connection_resumes_without_relisting(harness: Harness) -> None:
    api = harness.api
    harness.put_pod(pod("p4", "sgx-a", "20"))
    watches = len(api.watches("Pod", ASSIGNED_PODS))
    api.disturb_stream("Pod", "drop", ASSIGNED_PODS)
    wait_until(lambda: len(api.watches("Pod", ASSIGNED_PODS)) > watches)
    resumed = api.watches("Pod", ASSIGNED_PODS)[-1]["resourceVersion"]
    assert int(resumed) >= int(api.objects["Pod"]["team/p4"]["metadata"]["resourceVersion"])
    harness.put_pod(pod("late", "sgx-b", "1"))
    assert harness.relists("Pod", "gone") == 0 and harness.relists("Pod", "initial") == 1
    assert harness.errors("Pod") >= 1 and harness.delays  # backed off before resuming


def test_api_500_then_recovery(api: FakeApiServer) -> None:
    # The first pod list fails twice: not ready until it succeeds; delays grow.
    api.fail_request("Pod", 500, ASSIGNED_PODS)
    api.fail_request("Pod", 500, ASSIGNED_PODS)
    h = Harness(api)
    h.feed.start()
    try:
        wait_until(h.feed.ready)
        assert h.errors("Pod") == 2 and h.delays[:2] == [pytest.approx(0.6), pytest.approx(1.2)]
        assert h.converged()
        # A watch answered with 500: back off, resume from the same version, no relist.
        wait_until(lambda: len(api.watches("Pod", ASSIGNED_PODS)) >= 1)
        api.fail_request("Pod", 500, ASSIGNED_PODS)
        api.disturb_stream("Pod", "end", ASSIGNED_PODS)
        api.put("Pod", pod("late", "sgx-a", "3"))
        wait_until(lambda: h.errors("Pod") == 3)
        wait_until(h.converged)
        assert h.relists("Pod", "initial") == 1 and h.relists("Pod", "gone") == 0
    finally:
        h.feed.stop()


def test_expired_continue_token_restarts_the_list(api: FakeApiServer) -> None:
    # The second page of the first pod list answers 410 (continue token expired): list again from scratch.
    h = Harness(api)
    original = api.list_page
    calls = {"n": 0}

    def list_page(kind: Kind, query: dict[str, str]) -> dict[str, Any]:
        if kind == "Pod" and query.get("continue"):
            calls["n"] += 1
            if calls["n"] == 1:
                api.fail_request("Pod", 410, ASSIGNED_PODS)  # answers the request after this one
        return original(kind, query)

    api.list_page = list_page  # type: ignore[method-assign]
    h.feed.start()
    try:
        wait_until(h.feed.ready)
        assert h.converged()
        firsts = [q for q in api.lists("Pod", ASSIGNED_PODS) if "continue" not in q]
        assert len(firsts) == 2
    finally:
        h.feed.stop()


def test_repeated_watch_failures_end_in_a_relist(api: FakeApiServer) -> None:
    h = Harness(api, relist_after_failures=3)
    h.feed.start()
    try:
        wait_until(h.feed.ready)
        wait_until(lambda: len(api.watches("Node")) >= 1)
        for _ in range(3):
            api.fail_request("Node", 500)
        api.disturb_stream("Node", "end")
        wait_until(lambda: h.relists("Node", "failures") == 1)
        wait_until(h.converged)
    finally:
        h.feed.stop()


def test_quiet_watch_ending_normally_resumes_at_once(api: FakeApiServer) -> None:
    api.bookmark_interval = 3600.0  # a quiet cluster: no events, no bookmarks
    h = Harness(api)
    h.feed.start()
    try:
        wait_until(h.feed.ready)
        wait_until(lambda: len(api.watches("Pod", ASSIGNED_PODS)) == 1)
        time.sleep(1.2)  # longer than QUICK_END_SECONDS
        api.disturb_stream("Pod", "end", ASSIGNED_PODS)
        wait_until(lambda: len(api.watches("Pod", ASSIGNED_PODS)) == 2)
        assert h.delays == [] and h.errors("Pod") == 0
    finally:
        h.feed.stop()


def test_watches_ending_at_once_back_off_then_relist(api: FakeApiServer) -> None:
    api.bookmark_interval = 3600.0
    h = Harness(api, relist_after_failures=3)
    h.feed.start()
    try:
        wait_until(h.feed.ready)
        wait_until(lambda: len(api.watches("Pod", ASSIGNED_PODS)) == 1)
        for _ in range(3):
            api.disturb_stream("Pod", "end", ASSIGNED_PODS)
        wait_until(lambda: h.relists("Pod", "failures") == 1)
        assert h.delays[:3] == [pytest.approx(0.6), pytest.approx(1.2), pytest.approx(2.4)]
        wait_until(h.converged)
    finally:
        h.feed.stop()


def test_malformed_line_backs_off_and_resumes(api: FakeApiServer) -> None:
    h = Harness(api)
    h.feed.start()
    try:
        wait_until(h.feed.ready)
        wait_until(lambda: len(api.watches("Pod", ASSIGNED_PODS)) >= 1)
        with api.cond:
            api.rv += 1
            api.history["Pod"].append((api.rv, "ADDED", {"not": "a pod"}))  # no metadata: apply skips it
            api.cond.notify_all()
        api.put("Pod", pod("late", "sgx-a", "5"))
        wait_until(h.converged)
    finally:
        h.feed.stop()


def test_reservations_expire_in_the_background(api: FakeApiServer) -> None:
    expired: list[list[str]] = []
    h = Harness(api, reservation_ttl=0.2, on_expired=expired.append)
    h.feed.start()
    try:
        wait_until(h.feed.ready)
        h.ledger.reserve(PodEpc("uid-x", "team", "x", "sgx-a", MI), now=h.now)
        h.now = 0.1
        time.sleep(0.15)
        assert h.ledger.reservation("uid-x") is not None
        h.now = 0.3
        wait_until(lambda: h.ledger.reservation("uid-x") is None)
        wait_until(lambda: expired == [["uid-x"]])
    finally:
        h.feed.stop()


def test_stop_ends_blocked_watches_promptly(api: FakeApiServer) -> None:
    h = Harness(api)
    h.feed.start()
    wait_until(h.feed.ready)
    wait_until(lambda: len(api.watches("Pod", ASSIGNED_PODS)) >= 1 and len(api.watches("Node")) >= 1)
    threads = list(h.feed._threads)
    h.feed.stop(timeout=5.0)
    assert not any(t.is_alive() for t in threads)


def test_metrics_count_events_by_type(harness: Harness) -> None:
    api = harness.api
    api.put("Pod", pod("p0", "sgx-a", "5"))
    api.delete("Pod", "team/p1")
    wait_until(harness.converged)
    wait_until(
        lambda: (
            _sample(harness.feed, "confidential_pods_extender_watch_events_total", kind="Pod", type="DELETED")
            == 1
        )
    )
    assert (
        _sample(harness.feed, "confidential_pods_extender_watch_events_total", kind="Pod", type="MODIFIED")
        == 1
    )


def test_not_ready_before_both_kinds_listed(api: FakeApiServer) -> None:
    gate = threading.Event()
    original = api.list_page

    def slow_nodes(kind: Kind, query: dict[str, str]) -> dict[str, Any]:
        if kind == "Node":
            gate.wait(10)
        return original(kind, query)

    api.list_page = slow_nodes  # type: ignore[method-assign]
    h = Harness(api)
    h.feed.start()
    try:
        wait_until(lambda: h.ledger.pod_count() > 0)
        assert not h.feed.ready()
        gate.set()
        wait_until(h.feed.ready)
        assert h.converged()
    finally:
        gate.set()
        h.feed.stop()


def test_raw_json_lines_are_what_the_feed_reads() -> None:
    """The constants above are the apiserver's wire format: one JSON object per line."""
    for event in [*NODE_STREAM, *POD_STREAM, GONE_EVENT]:
        line = json.dumps(event)
        assert "\n" not in line and json.loads(line) == event


def test_stopping_a_watch_its_reader_just_closed_is_quiet() -> None:
    """stop() lists the open watches, then shuts each down; its reader may close one in between. urllib3's
    close() forgets the socket's shutdown, and shutdown() then raised ValueError out of stop() (seen once
    in a full test run)."""
    import io

    from urllib3.response import HTTPResponse

    response = HTTPResponse(body=io.BytesIO(b'{"type":"ADDED"}\n'), preload_content=False)
    response.close()
    _abort(response)  # no exception
