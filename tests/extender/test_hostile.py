"""Hostile and careless input to the extender: never a 5xx, never a wedged feed, never mis-accounted.

Each case was reproduced against the extender before the fix (see the security issue and
docs/security.md): hours of CPU in /filter, a watch event replayed forever, a snapshot node
overcommitted a minute after a bind, an undercounted metric, a Go-shaped body refused.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from confidential_pods.profiles import PROFILES
from confidential_pods.quantities import MiB
from confidential_pods.settings import Settings, settings_from_mapping
from extender.app import create_app
from extender.binding import MemoryBinder
from extender.ledger import EpcLedger
from extender.podepc import PodEpc
from extender.serving import api_backend, snapshot_backend
from extender.watchevents import Applied, apply_event
from tests.extender import scheduler_json as sj
from tests.extender.test_serving_api import kubeconfig, wait_until
from tests.extender.test_watching import Harness, node, pod
from tests.fakeapi import serving
from tests.test_quantities import HOSTILE

PROFILE = PROFILES["alibaba"]
RES = PROFILE.epc_resource
NAMES = ["sgx-a", "plain"]


@pytest.fixture
def client() -> FlaskClient:
    ledger = EpcLedger()
    ledger.set_node("sgx-a", 93 * MiB)
    ledger.set_node("plain", None)
    return create_app(ledger, Settings(), MemoryBinder(final=False), lambda: True).test_client()


def hostile_pod(value: Any) -> dict[str, Any]:
    the_pod = sj.pod("hostile", epc_mib=64)
    container = the_pod["spec"]["containers"][0]["resources"]
    container["requests"][RES] = container["limits"][RES] = value
    return the_pod


# --- quantities in /filter and /prioritize ---------------------------------------------------------


@pytest.mark.parametrize("value", [*HOSTILE, 10**4000])
def test_filter_refuses_a_pod_whose_epc_cannot_be_read_quickly(client: FlaskClient, value: Any) -> None:
    body = json.dumps(sj.args_with_names(hostile_pod(value), NAMES))
    started = time.perf_counter()
    answer = client.post("/filter", data=body, content_type="application/json")
    assert time.perf_counter() - started < 0.5  # a guard against a hang (1e999999 took ~35 s)
    assert answer.status_code == 200
    result = answer.get_json()
    assert result["NodeNames"] == [] and result["FailedNodes"] == {}
    assert set(result["FailedAndUnresolvableNodes"]) == set(NAMES)
    reason = result["FailedAndUnresolvableNodes"]["sgx-a"]
    assert reason.startswith("pod's SGX EPC request cannot be read: spec.containers[0].resources.requests")
    assert len(reason) < 300


@pytest.mark.parametrize("value", ["1e99999999", "9223372036854775807Ei", "1e5000", 10**4000])
def test_prioritize_scores_an_unreadable_pod_zero_quickly(client: FlaskClient, value: Any) -> None:
    body = json.dumps(sj.args_with_names(hostile_pod(value), NAMES))
    started = time.perf_counter()
    answer = client.post("/prioritize", data=body, content_type="application/json")
    assert time.perf_counter() - started < 0.5
    assert (answer.status_code, answer.get_json()) == (200, [{"Host": n, "Score": 0} for n in NAMES])


def test_overhead_quantities_are_bounded_too(client: FlaskClient) -> None:
    the_pod = sj.pod(epc_mib=8)
    the_pod["spec"]["overhead"][RES] = "1e999999"
    started = time.perf_counter()
    result = client.post("/filter", json=sj.args_with_names(the_pod, NAMES)).get_json()
    assert time.perf_counter() - started < 0.5
    assert "spec.overhead" in result["FailedAndUnresolvableNodes"]["sgx-a"]


# --- transport ------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["/filter", "/prioritize", "/bind"])
@pytest.mark.parametrize("depth", [100_000, 20_000])
def test_deeply_nested_body_is_a_400(client: FlaskClient, verb: str, depth: int) -> None:
    answer = client.post(verb, data=b"[" * depth, content_type="application/json")
    assert answer.status_code == 400 and "nested too deeply" in answer.get_json()["Error"]


def test_deep_node_objects_are_not_echoed(client: FlaskClient) -> None:
    deep: Any = {}
    for _ in range(900):
        deep = {"x": deep}
    node_object = sj.node("sgx-a", 93)
    node_object["metadata"]["annotations"]["deep"] = deep
    args = {"Pod": sj.pod(epc_mib=8), "Nodes": {"metadata": {}, "items": [node_object]}, "NodeNames": None}
    body = json.dumps(args)  # (the helper's deepcopy would recurse)
    answer = client.post("/filter", data=body, content_type="application/json")
    assert answer.status_code == 400 and "nests deeper" in answer.get_json()["Error"]


def test_go_field_names_match_case_insensitively(client: FlaskClient) -> None:
    args = sj.args_with_names(sj.pod(epc_mib=8), NAMES)
    lowered = {"pod": args["Pod"], "nodenames": args["NodeNames"], "NODES": None}
    assert client.post("/filter", json=lowered).get_json()["NodeNames"] == ["sgx-a"]
    scores = client.post("/prioritize", json=lowered).get_json()
    assert [s["Host"] for s in scores] == NAMES
    binding = {key.lower(): value for key, value in sj.binding_args(args["Pod"], "sgx-a").items()}
    assert client.post("/bind", json=binding).get_json() == {"Error": ""}


def test_a_later_key_for_the_same_go_field_wins(client: FlaskClient) -> None:
    # encoding/json assigns each key to its field in order: the last one decides.
    body = '{"NodeNames": ["plain"], "Pod": ' + json.dumps(sj.pod(epc_mib=8)) + ', "nodeNames": ["sgx-a"]}'
    answer = client.post("/filter", data=body, content_type="application/json").get_json()
    assert answer["NodeNames"] == ["sgx-a"]


# --- the watch feed -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e99999999", "9223372036854775807Ei", "6_4", "1.5"])
def test_a_poisoned_pod_event_is_applied_and_reported(value: str) -> None:
    ledger = EpcLedger()
    ledger.set_node("sgx-a", 93 * MiB)
    started = time.perf_counter()
    outcome = apply_event(ledger, "Pod", {"type": "ADDED", "object": pod("bad", "sgx-a", value)}, PROFILE)
    assert time.perf_counter() - started < 0.5
    assert isinstance(outcome, Applied)  # the feed moves on: never Failed, never replayed
    assert outcome.unreadable.startswith("Pod team/bad spec.containers[0].resources")
    assert ledger.pod_count() == 0  # counted as no EPC: the kubelet refuses such a pod everywhere


def test_a_poisoned_node_counts_as_no_epc() -> None:
    ledger = EpcLedger()
    outcome = apply_event(ledger, "Node", {"type": "ADDED", "object": node("n", "1e99999999")}, PROFILE)
    assert isinstance(outcome, Applied) and outcome.unreadable.startswith("Node n status.allocatable")
    usage = ledger.usage("n")
    assert usage is not None and usage.capacity is None


def test_feed_counts_and_logs_poison_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with serving() as api:
        api.put("Node", node("sgx-a", "93"))
        harness = Harness(api)
        harness.feed.start()
        try:
            wait_until(harness.feed.ready)
            with caplog.at_level(logging.WARNING, logger="extender.watching"):
                api.put("Pod", pod("bad", "sgx-a", "1e99999999"))
                api.put("Pod", pod("good", "sgx-a", "8"))
                wait_until(lambda: harness.ledger.pod_count() == 1)
            assert harness.ledger.usage("sgx-a").used == 8 * MiB  # type: ignore[union-attr]
            counted = sum(
                s.value
                for f in harness.feed.metrics.unreadable.collect()
                for s in f.samples
                if s.name.endswith("_total")
            )
            assert counted == 1
            assert any("counted as no EPC: Pod team/bad" in r.getMessage() for r in caplog.records)
            assert harness.errors("Pod") == 0  # not a failure: no backoff, no relist
        finally:
            harness.feed.stop()


def test_background_expiry_reaches_the_extenders_metric(tmp_path: Path) -> None:
    with serving() as api:
        api.put("Node", node("sgx-a", "93"))
        backend = api_backend(str(kubeconfig(tmp_path / "kubeconfig", api.url)), settings_from_mapping({}))
        assert backend.feed is not None
        backend.feed.start()
        try:
            wait_until(backend.ready)
            backend.ledger.reserve(PodEpc("uid-x", "ns", "x", "sgx-a", MiB), now=time.monotonic() - 3600)
            wait_until(lambda: backend.ledger.reservation("uid-x") is None)
            wait_until(lambda: backend.metrics.expired._value.get() == 1)
        finally:
            backend.feed.stop()


# --- snapshot mode ---------------------------------------------------------------------------------


def snapshot(tmp_path: Path, docs: list[dict[str, Any]]) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def test_snapshot_binds_are_final_and_never_expire(tmp_path: Path) -> None:
    waiting = [sj.pod(f"w{i}", epc_mib=60) for i in range(2)]
    docs = [{"kind": "Node", **sj.node("small", 100)}, *({"kind": "Pod", **p} for p in waiting)]
    backend = snapshot_backend(snapshot(tmp_path, docs), settings_from_mapping({"reservationTTLSeconds": 1}))
    clock = [0.0]
    client = create_app(backend.ledger, Settings(), backend.binder, backend.ready, clock=lambda: clock[0])
    app = client.test_client()
    assert app.post("/bind", json=sj.binding_args(waiting[0], "small")).get_json() == {"Error": ""}
    clock[0] = 3600.0  # an hour later: a reservation would have expired by now
    second = app.post("/bind", json=sj.binding_args(waiting[1], "small")).get_json()
    assert "insufficient SGX EPC" in second["Error"]  # 120Mi on a 100Mi node is never reached
    usage = backend.ledger.usage("small")
    assert usage is not None and (usage.used, usage.reserved) == (60 * MiB, 0)


def test_snapshot_pod_already_running_cannot_be_bound_again(tmp_path: Path) -> None:
    running = sj.pod("running", epc_mib=10, node_name="a", phase="Running")
    docs = [
        {"kind": "Node", **sj.node("a", 100)},
        {"kind": "Node", **sj.node("b", 100)},
        {"kind": "Pod", **running},
    ]
    backend = snapshot_backend(snapshot(tmp_path, docs), Settings())
    app = create_app(backend.ledger, Settings(), backend.binder, backend.ready).test_client()
    answer = app.post("/bind", json=sj.binding_args(running, "b")).get_json()
    assert answer["Error"].endswith("pod is already bound to a")
    usage = backend.ledger.usage("b")
    assert usage is not None and (usage.used, usage.reserved) == (0, 0)
