"""EpcLedger: accounting, moves, relists, reservations and their expiry."""

from __future__ import annotations

import threading

from extender.ledger import EpcLedger
from extender.podepc import PodEpc
from tests.extender.ledgers import ledger_of


def p(uid: str, node: str, epc: int, name: str | None = None) -> PodEpc:
    return PodEpc(uid=uid, namespace="ns", name=name or uid, node=node, epc=epc)


def test_used_reserved_free() -> None:
    ledger = ledger_of({"a": 100})
    ledger.set_pod(p("1", "a", 30))
    ledger.set_pod(p("2", "a", 20))
    ledger.reserve(p("3", "a", 10), now=0)
    node = ledger.node("a")
    assert node is not None
    assert (node.capacity, node.used, node.reserved, node.free) == (100, 50, 10, 40)
    assert [x.uid for x in node.pods] == ["1", "2"]
    assert [x.uid for x in node.reservations] == ["3"]
    assert len(ledger) == ledger.pod_count() == 2
    assert ledger.node_count() == 1 and ledger.reservation_count() == 1


def test_update_moves_pod_between_nodes_and_changes_size() -> None:
    ledger = ledger_of({"a": 100})
    ledger.set_node("b", 100)
    ledger.set_pod(p("1", "a", 30))
    ledger.set_pod(p("1", "b", 40))
    assert ledger.usage("a") is not None and ledger.usage("a").used == 0  # type: ignore[union-attr]
    assert ledger.usage("b").used == 40  # type: ignore[union-attr]
    ledger.remove_pod("1")
    ledger.remove_pod("1")  # idempotent
    assert ledger.usage("b").used == 0  # type: ignore[union-attr]
    assert ledger.pod("1") is None


def test_pods_on_unknown_nodes_are_kept_until_node_arrives() -> None:
    ledger = EpcLedger()
    ledger.set_pod(p("1", "late", 30))
    assert ledger.node("late") is None
    ledger.set_node("late", 64)
    assert ledger.usage("late").used == 30  # type: ignore[union-attr]
    ledger.remove_node("late")
    assert ledger.node("late") is None and ledger.pod("1") is not None


def test_node_without_epc() -> None:
    ledger = EpcLedger()
    ledger.set_node("plain", None)
    node = ledger.node("plain")
    assert node is not None and node.capacity is None and node.free is None
    assert ledger.nodes() == ["plain"]


def test_watch_confirms_reservation() -> None:
    ledger = ledger_of({"a": 100})
    ledger.reserve(p("1", "a", 30), now=0)
    assert ledger.usage("a").free == 70  # type: ignore[union-attr]
    ledger.set_pod(p("1", "a", 30))
    usage = ledger.usage("a")
    assert usage is not None and (usage.used, usage.reserved, usage.free) == (30, 0, 70)
    assert ledger.reservation("1") is None


def test_reserve_is_noop_when_watch_already_shows_pod() -> None:
    ledger = ledger_of({"a": 100})
    ledger.set_pod(p("1", "a", 30))
    ledger.reserve(p("1", "a", 30), now=0)
    assert ledger.usage("a").reserved == 0  # type: ignore[union-attr]


def test_reserve_twice_replaces_and_unreserve() -> None:
    ledger = ledger_of({"a": 100})
    ledger.reserve(p("1", "a", 30), now=0)
    ledger.reserve(p("1", "a", 30), now=1)
    assert ledger.usage("a").reserved == 30  # type: ignore[union-attr]
    ledger.unreserve("1")
    ledger.unreserve("1")
    assert ledger.usage("a").reserved == 0  # type: ignore[union-attr]


def test_expire_reservations() -> None:
    ledger = ledger_of({"a": 100})
    ledger.reserve(p("old", "a", 10), now=0)
    ledger.reserve(p("new", "a", 20), now=50)
    assert ledger.expire_reservations(now=60, ttl=30) == ["old"]
    assert ledger.usage("a").reserved == 20  # type: ignore[union-attr]
    assert ledger.expire_reservations(now=60, ttl=30) == []


def test_replace_is_a_fresh_list_keeping_unconfirmed_reservations() -> None:
    ledger = EpcLedger()
    ledger.set_node("gone", 10)
    ledger.set_node("a", 100)
    ledger.set_pod(p("stale", "a", 50))
    ledger.reserve(p("listed", "a", 10), now=0)
    ledger.reserve(p("pending", "a", 5), now=0)
    ledger.replace({"a": 100, "b": None}, [p("listed", "a", 10), p("x", "b", 1)])
    assert ledger.nodes() == ["a", "b"]
    usage = ledger.usage("a")
    assert usage is not None and (usage.used, usage.reserved, usage.free) == (10, 5, 85)
    assert ledger.pod("stale") is None
    assert ledger.reservation("listed") is None and ledger.reservation("pending") is not None


def test_overcommit_shows_negative_free_but_used_never_negative() -> None:
    ledger = EpcLedger()
    ledger.set_node("a", 10)
    ledger.set_pod(p("1", "a", 30))
    assert ledger.usage("a").free == -20  # type: ignore[union-attr]
    ledger.remove_pod("1")
    assert ledger.usage("a").used == 0  # type: ignore[union-attr]


def test_lock_is_reentrant_and_shared() -> None:
    ledger = ledger_of({"a": 100})
    with ledger.lock:
        ledger.reserve(p("1", "a", 30), now=0)  # same thread re-enters
        blocked = threading.Event()

        def writer() -> None:
            ledger.set_pod(p("2", "a", 1))
            blocked.set()

        thread = threading.Thread(target=writer)
        thread.start()
        assert not blocked.wait(0.05)  # another thread waits for the lock
    thread.join()
    assert ledger.pod("2") is not None


def test_with_usages_is_usage_for_every_known_node() -> None:
    ledger = ledger_of({"a": 100})
    ledger.set_node("plain", None)
    ledger.set_pod(p("1", "a", 30))
    ledger.reserve(p("2", "a", 5), now=0)
    names = ["a", "ghost", "plain", "a"]
    assert ledger.with_usages(lambda usages: [usages.get(n) for n in names]) == [
        ledger.usage(n) for n in names
    ]
    usage = ledger.usage("a")
    assert usage is not None and (usage.capacity, usage.used, usage.reserved, usage.free) == (100, 30, 5, 65)
    plain = ledger.usage("plain")
    assert plain is not None and (plain.capacity, plain.free) == (None, None)
