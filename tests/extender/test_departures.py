"""Victims the API server has deleted before the extender's watch says so: no second preemption.

kube-scheduler retries a preemptor as soon as its own watch shows the last victim deleted; the extender's
watch is another connection and may show it a moment later. Refused on its nominated node then, the pod
preempted again elsewhere (one eviction too many; seen in the e2e preemption tests). The filter now asks
the API server about the pods on their way out there, and forgets those it no longer has.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask.testing import FlaskClient
from kubernetes import client

from confidential_pods.quantities import MiB
from confidential_pods.settings import Settings
from extender import ledger as ledger_module
from extender.app import create_app
from extender.binding import ApiBinder, Departures, MemoryBinder
from extender.ledger import EpcLedger
from extender.podepc import PodEpc, leaving, pod_facts
from extender.verbs import MAX_DEPARTURES_ASKED, Verbs
from extender.watchevents import Listing, apply_event
from extender.wire import Candidates
from tests.extender import scheduler_json as sj
from tests.extender.test_watching import MI, PROFILE, ev
from tests.extender.test_watching import pod as watched_pod
from tests.fakeapi import FakeApiServer, serving

LOW, HIGH = 100, 1000


def entry(uid: str, node: str, mib: int, *, priority: int = LOW, out: bool = False) -> PodEpc:
    return PodEpc(uid, "ns", uid, node, mib * MiB, priority, leaving=out)


class Oracle(MemoryBinder):
    """The API server as far as ``deleted`` goes: it has deleted ``gone``; it records what it was asked."""

    def __init__(self, gone: Sequence[str] = (), error: str = "") -> None:
        super().__init__(final=False)
        self.gone = set(gone)
        self.error = error
        self.asked: list[list[str]] = []

    def deleted(self, pods: Sequence[PodEpc]) -> Departures:
        self.asked.append([p.uid for p in pods])
        if self.error:  # fails at once
            return Departures((), 0, self.error)
        return Departures(tuple(p.uid for p in pods if p.uid in self.gone), len(pods))


def preemptor(*, nominated: str | None = "a", mib: int = 50) -> dict[str, Any]:
    the_pod = sj.pod("critical", epc_mib=mib, uid="critical-uid")
    the_pod["spec"]["priority"] = HIGH
    if nominated is not None:
        the_pod["status"]["nominatedNodeName"] = nominated
    return the_pod


def scene(pods: Sequence[PodEpc], oracle: Oracle) -> tuple[EpcLedger, FlaskClient]:
    ledger = EpcLedger()
    ledger.set_node("a", 100 * MiB)
    ledger.set_node("b", 100 * MiB)
    for each in pods:
        ledger.set_pod(each)
    return ledger, create_app(ledger, Settings(), oracle, lambda: True).test_client()


def filtered(app: FlaskClient, the_pod: dict[str, Any], names: list[str]) -> dict[str, Any]:
    answer = app.post("/filter", json=sj.args_with_names(the_pod, names)).get_json()
    assert isinstance(answer, dict)
    return answer


# --- which pods are on their way out ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, False),
        ({"metadata": {"deletionTimestamp": "2026-11-28T10:00:00Z"}}, True),
        ({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True"}]}}, True),
        ({"status": {"conditions": [{"type": "DisruptionTarget", "status": "False"}]}}, False),
        ({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}, False),
        ({"status": {"conditions": ["junk", 7, None]}}, False),
        ({"status": {"conditions": {"type": "DisruptionTarget"}}}, False),
        ({"status": "junk", "metadata": []}, False),
    ],
)
def test_leaving(changes: dict[str, Any], expected: bool) -> None:
    the_pod: dict[str, Any] = {"metadata": {"name": "p"}, "status": {"phase": "Running"}}
    for key, value in changes.items():
        the_pod[key] = {**the_pod[key], **value} if isinstance(value, dict) else value
    assert leaving(the_pod) is expected


def test_the_ledger_entry_says_whether_the_pod_is_leaving_and_still_counts_its_epc() -> None:
    victim = watched_pod("low-4", "sgx-a", "36", deleting=True)
    facts = pod_facts(victim, PROFILE)
    assert facts is not None and facts.leaving and facts.epc == 36 * MI
    ledger = EpcLedger()
    ledger.set_node("sgx-a", 100 * MI)
    apply_event(ledger, "Pod", ev("MODIFIED", victim), PROFILE)
    assert ledger.usage("sgx-a").used == 36 * MI  # type: ignore[union-attr]
    assert [p.uid for p in ledger.leaving_on("sgx-a")] == ["uid-low-4"]


# --- the ledger: confirm_deleted, and the watch's stale events after it ----------------------------------


def test_confirmed_deleted_pods_are_forgotten_at_once_and_their_stale_events_ignored() -> None:
    ledger = EpcLedger()
    ledger.set_node("sgx-a", 100 * MI)
    victim = watched_pod("low-4", "sgx-a", "36", deleting=True)
    apply_event(ledger, "Pod", ev("MODIFIED", victim), PROFILE)
    ledger.confirm_deleted(["uid-low-4"])
    assert ledger.usage("sgx-a").used == 0 and ledger.pod("uid-low-4") is None  # type: ignore[union-attr]
    apply_event(ledger, "Pod", ev("MODIFIED", victim), PROFILE)  # queued before the DELETED: stale
    assert ledger.usage("sgx-a").used == 0  # type: ignore[union-attr]
    apply_event(ledger, "Pod", ev("DELETED", victim), PROFILE)  # the watch has caught up
    assert ledger.usage("sgx-a").used == 0  # type: ignore[union-attr]
    ledger.set_pod(entry("uid-low-4", "sgx-a", 36))  # nothing is ignored any more (UIDs never return)
    assert ledger.usage("sgx-a").used == 36 * MiB  # type: ignore[union-attr]


def test_a_relist_older_than_the_answer_does_not_bring_the_pod_back() -> None:
    ledger = EpcLedger()
    ledger.set_node("sgx-a", 100 * MI)
    victim = watched_pod("low-4", "sgx-a", "36", deleting=True)
    kept = watched_pod("low-0", "sgx-a", "10")
    apply_event(ledger, "Pod", ev("MODIFIED", victim), PROFILE)
    ledger.confirm_deleted(["uid-low-4"])
    listing = Listing("Pod", ledger, PROFILE)
    listing.add(victim)  # listed before the delete
    listing.add(kept)
    listing.apply()
    assert ledger.usage("sgx-a").used == 10 * MI  # type: ignore[union-attr]
    apply_event(ledger, "Pod", ev("MODIFIED", victim), PROFILE)  # still stale after that list
    assert ledger.usage("sgx-a").used == 10 * MI  # type: ignore[union-attr]
    fresher = Listing("Pod", ledger, PROFILE)
    fresher.add(kept)  # a list without it: the deletion is known, nothing more to ignore
    fresher.apply()
    ledger.set_pod(entry("uid-low-4", "sgx-a", 36))
    assert ledger.usage("sgx-a").used == 46 * MiB  # type: ignore[union-attr]


def test_the_uids_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "MAX_CONFIRMED_DELETED", 3)
    ledger = EpcLedger()
    for i in range(5):
        ledger.set_pod(entry(f"u{i}", "a", 1))
    ledger.confirm_deleted([f"u{i}" for i in range(5)])
    assert ledger.pod_count() == 0
    ledger.set_pod(entry("u0", "a", 1))  # forgotten first: counted again
    ledger.set_pod(entry("u4", "a", 1))  # still remembered: ignored
    assert ledger.pod("u0") is not None and ledger.pod("u4") is None


def test_a_uid_the_watch_removed_meanwhile_is_not_remembered() -> None:
    ledger = EpcLedger()
    ledger.set_pod(entry("low-4", "a", 36, out=True))
    ledger.remove_pod("low-4")  # the watch's DELETED came while the API server was being asked
    ledger.confirm_deleted(["low-4"])
    ledger.set_pod(entry("low-4", "a", 36))  # nothing more will clear a memory of it: none was kept
    assert ledger.pod("low-4") is not None


def test_leaving_on_lists_the_largest_first_and_only_the_leaving() -> None:
    ledger = EpcLedger()
    for each in (entry("x", "a", 10, out=True), entry("y", "a", 30, out=True), entry("z", "a", 50)):
        ledger.set_pod(each)
    assert [p.uid for p in ledger.leaving_on("a")] == ["y", "x"]
    assert ledger.leaving_on("b") == ()


# --- the filter on the nominated node --------------------------------------------------------------------

RACE = [entry("low-4", "a", 60, out=True), entry("low-0", "a", 30), entry("low-5", "b", 60)]


def test_a_victim_deleted_before_the_watch_says_so_does_not_keep_the_preemptor_off_its_node() -> None:
    oracle = Oracle(gone=["low-4"])
    ledger, app = scene(RACE, oracle)
    answer = filtered(app, preemptor(), ["a", "b"])
    assert answer["NodeNames"] == ["a"] and answer["Error"] == ""
    assert oracle.asked == [["low-4"]]
    assert ledger.pod("low-4") is None and ledger.usage("a").free == 70 * MiB  # type: ignore[union-attr]
    metrics = app.get("/metrics").get_data(as_text=True)
    assert 'confidential_pods_extender_departures_checked_total{answer="deleted"} 1.0' in metrics
    # and the bind that follows finds the room too
    bound = app.post("/bind", json=sj.binding_args(preemptor(), "a")).get_json()
    assert bound == {"Error": ""}


def test_a_victim_still_there_keeps_the_node_refused() -> None:
    oracle = Oracle(gone=[])
    ledger, app = scene(RACE, oracle)
    answer = filtered(app, preemptor(), ["a", "b"])
    assert answer["NodeNames"] == [] and set(answer["FailedNodes"]) == {"a", "b"}
    assert oracle.asked == [["low-4"]] and ledger.pod("low-4") is not None
    metrics = app.get("/metrics").get_data(as_text=True)
    assert 'confidential_pods_extender_departures_checked_total{answer="present"} 1.0' in metrics


def test_an_api_server_that_cannot_answer_keeps_the_node_refused_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    oracle = Oracle(gone=["low-4"], error="pods is forbidden (HTTP 403)")
    ledger, app = scene(RACE, oracle)
    assert filtered(app, preemptor(), ["a"])["NodeNames"] == []
    assert ledger.pod("low-4") is not None
    metrics = app.get("/metrics").get_data(as_text=True)
    assert 'confidential_pods_extender_departures_checked_total{answer="error"} 1.0' in metrics
    assert 'confidential_pods_extender_departures_checked_total{answer="present"} 0.0' in metrics
    assert "cannot tell whether 1 pod(s) on a are deleted yet: pods is forbidden (HTTP 403)" in caplog.text


def test_the_nomination_the_watch_showed_counts_when_the_request_has_none() -> None:
    oracle = Oracle(gone=["low-4"])
    ledger, app = scene(RACE, oracle)
    ledger.nominate(entry("critical-uid", "a", 50, priority=HIGH))
    assert filtered(app, preemptor(nominated=None), ["a", "b"])["NodeNames"] == ["a"]


@pytest.mark.parametrize(
    ("pods", "the_pod"),
    [
        (RACE, preemptor(nominated=None)),  # not nominated: an ordinary refusal
        (RACE, preemptor(nominated="b")),  # nominated elsewhere: a is none of its business
        ([entry("low-4", "a", 60), entry("low-0", "a", 30)], preemptor()),  # nobody is leaving
        ([entry("low-4", "a", 10, out=True), entry("low-0", "a", 80)], preemptor()),  # not enough even so
        (RACE, preemptor(mib=200)),  # more than the node has: unresolvable, not a matter of waiting
    ],
)
def test_the_api_server_is_asked_only_when_its_answer_can_change_the_verdict(
    pods: list[PodEpc], the_pod: dict[str, Any]
) -> None:
    oracle = Oracle(gone=[p.uid for p in pods])
    _, app = scene(pods, oracle)
    assert "a" not in filtered(app, the_pod, ["a", "b"])["NodeNames"]
    assert oracle.asked == []


def test_a_node_that_fits_is_not_asked_about() -> None:
    oracle = Oracle(gone=["low-4"])
    _, app = scene([entry("low-4", "a", 10, out=True)], oracle)
    assert filtered(app, preemptor(), ["a"])["NodeNames"] == ["a"]
    assert oracle.asked == []


def test_epc_held_for_another_nominated_pod_is_not_counted_as_free() -> None:
    oracle = Oracle(gone=["low-4"])
    ledger, app = scene(RACE, oracle)
    ledger.nominate(entry("vip", "a", 60, priority=HIGH))
    # 10 free, 60 held for vip: even with low-4 gone only 10 are free to this pod
    assert filtered(app, preemptor(), ["a"])["NodeNames"] == []
    assert oracle.asked == []


def test_at_most_a_few_pods_are_asked_about_per_call() -> None:
    many = [entry(f"low-{i}", "a", 10, out=True) for i in range(MAX_DEPARTURES_ASKED + 4)]
    oracle = Oracle(gone=[p.uid for p in many])
    ledger, app = scene(many, oracle)
    assert filtered(app, preemptor(), ["a"])["NodeNames"] == ["a"]
    assert len(oracle.asked[0]) == MAX_DEPARTURES_ASKED
    assert ledger.usage("a").used == 40 * MiB  # type: ignore[union-attr]


def test_simulate_and_snapshot_mode_never_count_a_pod_as_deleted() -> None:
    ledger = EpcLedger()
    ledger.set_node("a", 100 * MiB)
    ledger.set_pod(entry("low-4", "a", 60, out=True))
    verbs = Verbs(ledger, Settings(), MemoryBinder())
    answer = verbs.filter(Candidates(pod=preemptor(), names=("a",)))
    assert answer.body["NodeNames"] == [] and ledger.pod("low-4") is not None


# --- the API server's answer -----------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with serving() as server:
        yield server


def test_api_binder_says_which_pods_the_api_server_no_longer_has(api: FakeApiServer) -> None:
    for name in ("there", "deleted", "recreated", "recreated-here"):
        api.put("Pod", watched_pod(name, "sgx-a", "10"))
    for name in ("deleted", "recreated", "recreated-here"):
        api.delete("Pod", f"team/{name}")
    elsewhere = watched_pod("recreated", "sgx-b", "10")
    elsewhere["metadata"]["uid"] = "uid-recreated-2"
    here = watched_pod("recreated-here", "sgx-a", "10")
    here["metadata"]["uid"] = "uid-recreated-here-2"
    api.put("Pod", elsewhere)  # the same name, another pod elsewhere: the one the ledger counts is gone
    api.put("Pod", here)  # another pod of that name on the same node may hold that EPC: still counted
    names = ("there", "deleted", "recreated", "recreated-here")
    asked = [PodEpc(f"uid-{n}", "team", n, "sgx-a", 10 * MI) for n in names]
    assert ApiBinder(api.api_client()).deleted(asked) == Departures(("uid-deleted", "uid-recreated"), 4)


Script = dict[str, tuple[int, bytes, float]]


@contextmanager
def scripted(answers: Script) -> Iterator[tuple[client.ApiClient, list[str]]]:
    """An API server answering each GET path as scripted (status, body, seconds before answering)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.path)
            status, body, delay = answers.get(self.path, (404, b"{}", 0.0))
            time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with suppress(OSError):  # the client gave up waiting (the deadline test)
                self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield client.ApiClient(configuration), seen
    finally:
        server.shutdown()
        server.server_close()


def two_pods() -> list[PodEpc]:
    return [PodEpc(f"uid-{n}", "team", n, "sgx-a", MI) for n in ("first", "second")]


FIRST, SECOND = "/api/v1/namespaces/team/pods/first", "/api/v1/namespaces/team/pods/second"


@pytest.mark.parametrize(
    ("first", "error"),
    [
        ((200, b"null", 0.0), "the answer is not a JSON object (HTTP 200)"),
        ((200, b"not json", 0.0), "the answer is not a JSON object (HTTP 200)"),
        ((200, b"[" * 100_000, 0.0), "the answer is not a JSON object (HTTP 200)"),  # RecursionError
        ((403, b'{"kind":"Status","message":"pods is forbidden"}', 0.0), "pods is forbidden (HTTP 403)"),
        ((500, b"", 0.0), "no details (HTTP 500)"),
    ],
)
def test_a_pod_that_cannot_be_read_counts_as_there_and_ends_the_round(
    first: tuple[int, bytes, float], error: str
) -> None:
    with scripted({FIRST: first}) as (api_client, seen):
        departures = ApiBinder(api_client).deleted(two_pods())
    assert departures == Departures((), 0, error)
    assert seen == [FIRST]  # the second (deleted: 404) is never asked


def test_all_the_reads_share_one_deadline_and_none_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ApiBinder, "DEPARTURES_SECONDS", 0.5)
    slow = (404, b"{}", 0.3)
    with scripted({FIRST: slow, SECOND: slow}) as (api_client, seen):
        started = time.monotonic()
        departures = ApiBinder(api_client).deleted(two_pods())
        spent = time.monotonic() - started
    assert departures.deleted == ("uid-first",) and departures.answered == 1
    assert "API server unreachable" in departures.error and "timed out" in departures.error
    assert seen == [FIRST, SECOND] and spent < 0.9  # the second had the 0.2 s left, and no retry


def test_api_binder_unreachable_counts_nothing_as_deleted() -> None:
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"
    binder = ApiBinder(client.ApiClient(configuration))
    departures = binder.deleted([PodEpc("u", "team", "p", "sgx-a", MI)])
    assert departures.deleted == () and departures.answered == 0
    assert departures.error.startswith("API server unreachable")


def test_the_race_against_the_fake_api_server(api: FakeApiServer) -> None:
    """The whole path: the victim deleted in the API server, its DELETED not yet applied to the ledger."""
    victim = watched_pod("low-4", "sgx-a", "60", deleting=True)
    other = watched_pod("low-0", "sgx-a", "30")
    ledger = EpcLedger()
    ledger.set_node("sgx-a", 100 * MI)
    for each in (victim, other):
        api.put("Pod", each)
        apply_event(ledger, "Pod", ev("MODIFIED", each), PROFILE)
    api.delete("Pod", "team/low-4")  # kube-scheduler's watch has seen this; the extender's not yet
    app = create_app(ledger, Settings(), ApiBinder(api.api_client()), lambda: True).test_client()
    the_pod = sj.pod("critical", namespace="team", epc_mib=50, uid="critical-uid")
    the_pod["spec"]["priority"] = HIGH
    the_pod["status"]["nominatedNodeName"] = "sgx-a"
    assert filtered(app, the_pod, ["sgx-a"])["NodeNames"] == ["sgx-a"]
    apply_event(ledger, "Pod", ev("DELETED", victim), PROFILE)  # the watch catches up: nothing changes
    assert ledger.usage("sgx-a").used == 30 * MI  # type: ignore[union-attr]
    assert [r.method for r in api.requests if r.kind == "Pod"] == ["GET"]
