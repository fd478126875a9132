"""Pods nominated by preemption: the ledger holds their EPC on the nominated node until they are bound.

kube-scheduler sets ``status.nominatedNodeName`` on a preemptor whose victims are being evicted; the feed
watches those pending pods (``spec.nodeName=,status.nominatedNodeName!=``) beside the assigned ones. The
pure core first, then the feed against the fake apiserver (which sends DELETED when a pod leaves the
selection, as the apiserver's watch cache does).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from extender.ledger import EpcLedger
from extender.metrics import LedgerCollector
from extender.podepc import PodEpc, nominated_facts
from extender.watchevents import Applied, Listing, apply_event
from extender.watching import NOMINATED_PODS
from tests.extender.test_watching import MI, PROFILE, Harness, ev, harness, node, pod, wait_until
from tests.fakeapi import FakeApiServer, serving

__all__ = ["harness"]  # the fixture of test_watching, over this module's api


def pending(
    name: str, nominated: str | None, epc: str, *, priority: int = 1000, rv: str = "1"
) -> dict[str, Any]:
    """A pending pod (no ``spec.nodeName``), nominated to ``nominated`` when given."""
    obj = pod(name, "", epc, phase="Pending", rv=rv)
    del obj["spec"]["nodeName"]
    obj["spec"]["priority"] = priority
    if nominated is not None:
        obj["status"]["nominatedNodeName"] = nominated
    return obj


def held(ledger: EpcLedger, node_name: str) -> int:
    """EPC held on a node for nominated pods, as a pod of the lowest priority sees it."""
    return ledger.held(node_name, "uid-someone-else", -(2**31))


# --- the pure core ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (pending("kms", "sgx-a", "16"), PodEpc("uid-kms", "team", "kms", "sgx-a", 16 * MI, 1000)),
        (pending("kms", None, "16"), None),  # pending, not nominated
        (pending("kms", "", "16"), None),
        (pod("kms", "sgx-a", "16"), None),  # bound: counted as used, not held
        (pending("kms", "sgx-a", "0"), None),  # no EPC to hold
        (
            {**pending("kms", "sgx-a", "16"), "status": {"phase": "Failed", "nominatedNodeName": "sgx-a"}},
            None,
        ),
        ({"metadata": "junk", "spec": [], "status": 7}, None),
    ],
)
def test_nominated_facts(obj: dict[str, Any], expected: PodEpc | None) -> None:
    assert nominated_facts(obj, PROFILE) == expected


def test_bound_pod_with_a_stale_nomination_is_not_held() -> None:
    bound = pod("kms", "sgx-b", "16")
    bound["status"]["nominatedNodeName"] = "sgx-a"  # the scheduler may leave it set after binding elsewhere
    assert nominated_facts(bound, PROFILE) is None


def test_events_hold_and_release_the_nominated_epc() -> None:
    ledger = EpcLedger()
    ledger.set_node("sgx-a", 64 * MI)
    outcome = apply_event(ledger, "Nominated", ev("ADDED", pending("kms", "sgx-a", "16", rv="5")), PROFILE)
    assert outcome == Applied("5")
    assert held(ledger, "sgx-a") == 16 * MI
    assert ledger.held("sgx-a", "uid-kms", 0) == 0  # not held against itself
    assert ledger.held("sgx-a", "uid-vip", 2000) == 0  # nor against a pod of higher priority
    a = ledger.node("sgx-a")
    assert a is not None and [p.name for p in a.nominated] == ["kms"]

    # The nomination moves to another node, then is cleared (the scheduler gave up on it).
    apply_event(ledger, "Nominated", ev("MODIFIED", pending("kms", "sgx-b", "16", rv="6")), PROFILE)
    assert (held(ledger, "sgx-a"), held(ledger, "sgx-b")) == (0, 16 * MI)
    apply_event(ledger, "Nominated", ev("MODIFIED", pending("kms", None, "16", rv="7")), PROFILE)
    assert held(ledger, "sgx-b") == 0 and ledger.nomination_count() == 0

    # Nominated again, then it leaves the selection (the apiserver's DELETED) and is bound.
    apply_event(ledger, "Nominated", ev("ADDED", pending("kms", "sgx-a", "16", rv="8")), PROFILE)
    apply_event(ledger, "Nominated", ev("DELETED", pending("kms", "sgx-a", "16", rv="9")), PROFILE)
    assert ledger.nomination_count() == 0
    apply_event(ledger, "Nominated", ev("ADDED", pending("kms", "sgx-a", "16", rv="10")), PROFILE)
    apply_event(ledger, "Pod", ev("ADDED", pod("kms", "sgx-a", "16", rv="11")), PROFILE)
    a = ledger.node("sgx-a")
    assert a is not None and a.nominated == () and (a.used, a.free) == (16 * MI, 48 * MI)
    # A late nomination event of a pod already bound holds nothing more.
    apply_event(ledger, "Nominated", ev("MODIFIED", pending("kms", "sgx-a", "16", rv="12")), PROFILE)
    assert held(ledger, "sgx-a") == 0


def test_listing_replaces_the_nominations_only() -> None:
    ledger = EpcLedger()
    ledger.set_node("sgx-a", 64 * MI)
    ledger.set_pod(PodEpc("uid-web", "team", "web", "sgx-a", 8 * MI))
    ledger.nominate(PodEpc("uid-old", "team", "old", "sgx-a", 4 * MI, 10))
    listing = Listing("Nominated", ledger, PROFILE)
    for obj in (pending("kms", "sgx-a", "16"), pending("idle", None, "8"), "not an object"):
        listing.add(obj)
    listing.apply()
    a = ledger.node("sgx-a")
    assert a is not None and [p.name for p in a.nominated] == ["kms"]
    assert [p.name for p in a.pods] == ["web"] and a.used == 8 * MI


def test_metrics_show_the_nominated_epc_per_node() -> None:
    ledger = EpcLedger()
    ledger.set_node("sgx-a", 64 * MI)
    ledger.set_node("sgx-b", 64 * MI)
    ledger.nominate(PodEpc("uid-kms", "team", "kms", "sgx-a", 16 * MI, 10))
    ledger.nominate(PodEpc("uid-vip", "team", "vip", "sgx-a", 8 * MI, 2000))
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in LedgerCollector(ledger).collect()
        for s in family.samples
    }
    assert samples[("confidential_pods_extender_ledger_nominations", ())] == 2
    assert samples[("confidential_pods_extender_node_epc_nominated_bytes", ("sgx-a",))] == 24 * MI
    assert samples[("confidential_pods_extender_node_epc_nominated_bytes", ("sgx-b",))] == 0
    assert samples[("confidential_pods_extender_node_epc_free_bytes", ("sgx-a",))] == 64 * MI  # not used yet


def test_unreadable_nominated_pod_is_described() -> None:
    listing = Listing("Nominated", EpcLedger(), PROFILE)
    assert listing.add(pending("kms", "sgx-a", "1e999")).startswith("Pod team/kms ")


# --- the feed against the fake apiserver ----------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with serving() as server:
        server.put("Node", node("sgx-a", "64"))
        server.put("Node", node("sgx-b", "64"))
        server.put("Pod", pod("low", "sgx-a", "48"))
        server.put("Pod", pending("kms", "sgx-a", "32", priority=1000))  # nominated before the feed started
        yield server


def test_feed_lists_and_watches_nominated_pods(harness: Harness) -> None:
    api, ledger = harness.api, harness.ledger
    assert held(ledger, "sgx-a") == 32 * MI and harness.converged()
    assert api.lists("Pod", NOMINATED_PODS) and all(
        q["limit"] == "2" for q in api.lists("Pod", NOMINATED_PODS)
    )
    wait_until(lambda: len(api.watches("Pod", NOMINATED_PODS)) >= 1)

    # Preemption nominates a second pod to sgx-b; a pending pod without a nomination holds nothing.
    api.put("Pod", pending("vip", "sgx-b", "16", priority=2000))
    api.put("Pod", pending("queued", None, "16"))
    wait_until(lambda: held(ledger, "sgx-b") == 16 * MI)
    assert harness.converged()

    # The victim is gone and kms is bound: it leaves the nominated selection and counts as used.
    api.delete("Pod", "team/low")
    bound = pending("kms", "sgx-a", "32", priority=1000)
    bound["spec"]["nodeName"] = "sgx-a"
    bound["status"]["phase"] = "Running"
    api.put("Pod", bound)
    wait_until(harness.converged)
    a = ledger.node("sgx-a")
    assert a is not None and a.nominated == () and a.used == 32 * MI

    # The nomination of vip is cleared: nothing is held any more.
    api.put("Pod", pending("vip", None, "16", priority=2000))
    wait_until(lambda: ledger.nomination_count() == 0)
    assert harness.converged()


def test_nominated_watch_relists_after_gone(harness: Harness) -> None:
    api, ledger = harness.api, harness.ledger
    wait_until(lambda: len(api.watches("Pod", NOMINATED_PODS)) >= 1)
    api.compact("Pod")
    api.put("Pod", pending("kms", None, "32", priority=1000))  # nomination cleared while compacted away
    api.disturb_stream("Pod", "gone", NOMINATED_PODS)
    wait_until(lambda: harness.relists("Nominated", "gone") >= 1)
    wait_until(lambda: ledger.nomination_count() == 0)
    wait_until(harness.converged)


def test_the_feed_shares_one_int_per_priority() -> None:
    """Decoded JSON gives every pod its own int above 256; the ledger keeps one per priority value."""
    import json

    ledger = EpcLedger()
    for name in ("a", "b"):
        line = json.dumps(
            ev(
                "ADDED",
                {**pod(name, "sgx-a", "8"), "spec": {**pod(name, "sgx-a", "8")["spec"], "priority": 100000}},
            )
        )
        apply_event(ledger, "Pod", json.loads(line), PROFILE)
    a, b = ledger.pod("uid-a"), ledger.pod("uid-b")
    assert a is not None and b is not None and a.priority == 100000 and a.priority is b.priority
