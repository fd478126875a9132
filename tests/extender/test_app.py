"""The extender over HTTP (flask test client): filter, prioritize and bind in both node modes."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from confidential_pods.quantities import MiB
from confidential_pods.settings import Settings, settings_from_mapping
from extender.app import MAX_BODY, create_app
from extender.binding import MemoryBinder, PendingPods
from extender.ledger import EpcLedger
from extender.podepc import PodEpc
from extender.wire import BindRequest
from tests.extender import scheduler_json as sj
from tests.extender.ledgers import ledger_of

NAMES = ["sgx-a", "sgx-b", "plain", "tiny"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Ready:
    def __init__(self) -> None:
        self.value = True

    def __call__(self) -> bool:
        return self.value


@pytest.fixture
def ledger() -> EpcLedger:
    return ledger_of(
        {"sgx-a": 93 * MiB, "sgx-b": 93 * MiB, "plain": None, "tiny": 32 * MiB},
        [PodEpc("running-1", "ml", "inference-0", "sgx-b", 61 * MiB)],
    )


@pytest.fixture
def binder() -> MemoryBinder:
    # Stands in for the API server: a bind is a reservation until the watch shows the pod.
    return MemoryBinder(final=False)


@pytest.fixture
def ready() -> Ready:
    return Ready()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_client(
    ledger: EpcLedger, binder: MemoryBinder, ready: Ready, clock: Clock, settings: Settings | None = None
) -> FlaskClient:
    app = create_app(ledger, settings or Settings(), binder, ready, clock=clock, pending=PendingPods())
    return app.test_client()


@pytest.fixture
def client(ledger: EpcLedger, binder: MemoryBinder, ready: Ready, clock: Clock) -> FlaskClient:
    return make_client(ledger, binder, ready, clock)


def post(client: FlaskClient, path: str, body: Any) -> tuple[int, Any]:
    response = client.post(path, data=json.dumps(body), content_type="application/json")
    assert response.content_type == "application/json"
    return response.status_code, response.get_json()


def all_nodes() -> list[dict[str, Any]]:
    return [sj.node("sgx-a", 93), sj.node("sgx-b", 93), sj.node("plain", None), sj.node("tiny", 32)]


# ----------------------------------------------------------------- filter


def test_filter_node_names_in_node_names_out(client: FlaskClient) -> None:
    status, result = post(client, "/filter", sj.args_with_names(sj.pod(epc_mib=64), NAMES))
    assert status == 200
    assert result == {
        "Nodes": None,
        "NodeNames": ["sgx-a"],
        "FailedNodes": {"sgx-b": "insufficient SGX EPC: pod requests 64Mi, node has 32Mi free of 93Mi"},
        "FailedAndUnresolvableNodes": {
            "plain": "node has no SGX EPC (alibabacloud.com/sgx_epc_MiB)",
            "tiny": "insufficient SGX EPC: pod requests 64Mi, node has only 32Mi in total",
        },
        "Error": "",
    }


def test_filter_nodes_in_nodes_out(client: FlaskClient) -> None:
    nodes = all_nodes()
    status, result = post(client, "/filter", sj.args_with_nodes(sj.pod(epc_mib=16), nodes))
    assert status == 200
    assert result["NodeNames"] is None
    # the passing Node objects come back whole and unchanged
    assert result["Nodes"]["items"] == [nodes[0], nodes[1], nodes[3]]
    assert result["FailedNodes"] == {}
    assert set(result["FailedAndUnresolvableNodes"]) == {"plain"}
    assert result["Error"] == ""


def test_filter_unknown_node_fails_with_reason(client: FlaskClient) -> None:
    _, result = post(client, "/filter", sj.args_with_names(sj.pod(epc_mib=1), ["sgx-a", "new-node"]))
    assert result["NodeNames"] == ["sgx-a"]
    assert "not in the extender's EPC ledger" in result["FailedAndUnresolvableNodes"]["new-node"]


def test_filter_pod_without_epc_passes_all(client: FlaskClient) -> None:
    _, result = post(client, "/filter", sj.args_with_names(sj.pod(epc_mib=0), [*NAMES, "unknown"]))
    assert result["NodeNames"] == [*NAMES, "unknown"]
    assert result["FailedNodes"] == {} and result["FailedAndUnresolvableNodes"] == {}


def test_filter_counts_other_profiles_resource() -> None:
    settings = settings_from_mapping({"profile": "intel"})
    ledger = EpcLedger()
    ledger.set_node("n", 64 * MiB)
    client = make_client(ledger, MemoryBinder(final=False), Ready(), Clock(), settings)
    the_pod = sj.pod(epc_mib=0)
    the_pod["spec"]["containers"][0]["resources"]["limits"]["sgx.intel.com/epc"] = "128Mi"
    _, result = post(client, "/filter", sj.args_with_names(the_pod, ["n"]))
    assert result["FailedAndUnresolvableNodes"] == {
        "n": "insufficient SGX EPC: pod requests 128Mi, node has only 64Mi in total"
    }


def test_filter_not_ready_reports_error(client: FlaskClient, ready: Ready) -> None:
    ready.value = False
    status, result = post(client, "/filter", sj.args_with_names(sj.pod(), NAMES))
    assert status == 200
    assert "not ready" in result["Error"] and result["NodeNames"] is None


# ----------------------------------------------------------------- prioritize


def test_prioritize_one_score_per_node_in_both_modes(client: FlaskClient) -> None:
    the_pod = sj.pod(epc_mib=16)
    status, by_names = post(client, "/prioritize", sj.args_with_names(the_pod, NAMES))
    assert status == 200
    assert by_names == [
        {"Host": "sgx-a", "Score": 8},
        {"Host": "sgx-b", "Score": 1},
        {"Host": "plain", "Score": 0},
        {"Host": "tiny", "Score": 5},
    ]
    _, by_nodes = post(client, "/prioritize", sj.args_with_nodes(the_pod, all_nodes()))
    assert by_nodes == by_names


def test_prioritize_most_allocated(
    ledger: EpcLedger, binder: MemoryBinder, ready: Ready, clock: Clock
) -> None:
    client = make_client(
        ledger, binder, ready, clock, settings_from_mapping({"scoringStrategy": "MostAllocated"})
    )
    _, scores = post(client, "/prioritize", sj.args_with_names(sj.pod(epc_mib=16), NAMES))
    assert scores == [
        {"Host": "sgx-a", "Score": 1},
        {"Host": "sgx-b", "Score": 8},
        {"Host": "plain", "Score": 0},
        {"Host": "tiny", "Score": 5},
    ]


def test_prioritize_not_ready_is_an_http_error(client: FlaskClient, ready: Ready) -> None:
    ready.value = False
    status, body = post(client, "/prioritize", sj.args_with_names(sj.pod(), NAMES))
    assert status == 503 and "not ready" in body["Error"]


# ----------------------------------------------------------------- bind


def test_filter_then_bind_reserves_until_watch_confirms(
    client: FlaskClient, ledger: EpcLedger, binder: MemoryBinder
) -> None:
    the_pod = sj.pod(epc_mib=64)
    post(client, "/filter", sj.args_with_names(the_pod, NAMES))
    status, result = post(client, "/bind", sj.binding_args(the_pod, "sgx-a"))
    assert (status, result) == (200, {"Error": ""})
    assert binder.bindings == {the_pod["metadata"]["uid"]: "sgx-a"}
    usage = ledger.usage("sgx-a")
    assert usage is not None and (usage.used, usage.reserved) == (0, 64 * MiB)
    # the next pod sees the reservation
    _, after = post(client, "/filter", sj.args_with_names(sj.pod("second", epc_mib=64), ["sgx-a"]))
    assert after["FailedNodes"] == {
        "sgx-a": "insufficient SGX EPC: pod requests 64Mi, node has 29Mi free of 93Mi"
    }
    # the watch shows the pod: reservation becomes use
    ledger.set_pod(
        PodEpc(the_pod["metadata"]["uid"], "payments", the_pod["metadata"]["name"], "sgx-a", 64 * MiB)
    )
    usage = ledger.usage("sgx-a")
    assert usage is not None and (usage.used, usage.reserved) == (64 * MiB, 0)


def test_bind_refused_when_it_no_longer_fits(
    client: FlaskClient, ledger: EpcLedger, binder: MemoryBinder
) -> None:
    the_pod = sj.pod(epc_mib=64)
    post(client, "/filter", sj.args_with_names(the_pod, NAMES))
    ledger.set_pod(PodEpc("someone-else", "ns", "other", "sgx-a", 50 * MiB))  # arrived meanwhile
    _, result = post(client, "/bind", sj.binding_args(the_pod, "sgx-a"))
    assert result == {
        "Error": "node sgx-a: insufficient SGX EPC: pod requests 64Mi, node has 43Mi free of 93Mi"
    }
    assert binder.bindings == {}
    assert ledger.usage("sgx-a").reserved == 0  # type: ignore[union-attr]


def test_filter_and_prioritize_are_answered_while_a_bind_waits_for_the_api(
    ledger: EpcLedger, ready: Ready, clock: Clock
) -> None:
    """The Binding's API round trip happens outside the ledger lock; its reservation is already counted."""
    entered, release = threading.Event(), threading.Event()

    class SlowApi(MemoryBinder):
        def bind(self, request: BindRequest) -> None:
            entered.set()
            assert release.wait(10)
            super().bind(request)

    binder = SlowApi()
    first, second = sj.pod(epc_mib=64, name="first"), sj.pod(epc_mib=64, name="second")
    binding_client, other_client = (make_client(ledger, binder, ready, clock) for _ in range(2))
    post(binding_client, "/filter", sj.args_with_names(first, NAMES))
    answer: list[Any] = []
    bind = threading.Thread(
        target=lambda: answer.append(post(binding_client, "/bind", sj.binding_args(first, "sgx-a"))[1])
    )
    bind.start()
    try:
        assert entered.wait(10)
        # With the first pod's bind in flight (its 64Mi reserved on sgx-a), the next pod fits nowhere.
        _, filtered = post(other_client, "/filter", sj.args_with_names(second, NAMES))
        assert filtered["NodeNames"] == []
        assert "sgx-a" in filtered["FailedNodes"]
        _, scores = post(other_client, "/prioritize", sj.args_with_names(second, NAMES))
        assert {s["Host"]: s["Score"] for s in scores}["sgx-a"] == 0
    finally:
        release.set()
        bind.join(10)
    assert answer == [{"Error": ""}]
    assert binder.bindings == {first["metadata"]["uid"]: "sgx-a"}


def test_bind_refused_by_binder_reserves_nothing(client: FlaskClient, ledger: EpcLedger) -> None:
    the_pod = sj.pod(epc_mib=8)
    post(client, "/filter", sj.args_with_names(the_pod, NAMES))
    assert post(client, "/bind", sj.binding_args(the_pod, "sgx-a"))[1] == {"Error": ""}
    post(client, "/filter", sj.args_with_names(the_pod, NAMES))
    _, again = post(client, "/bind", sj.binding_args(the_pod, "sgx-a"))
    assert again["Error"].startswith("binding payments/enclave-7d9f-abcde failed: pod is already bound")
    assert ledger.usage("sgx-a").reserved == 8 * MiB  # type: ignore[union-attr]


def test_bind_of_unfiltered_pod_reads_it_from_the_binder(
    ledger: EpcLedger, ready: Ready, clock: Clock
) -> None:
    the_pod = sj.pod(epc_mib=32)
    binder = MemoryBinder({f"payments/{the_pod['metadata']['name']}": the_pod}, final=False)
    client = make_client(ledger, binder, ready, clock)
    assert post(client, "/bind", sj.binding_args(the_pod, "sgx-b"))[1] == {"Error": ""}
    assert ledger.usage("sgx-b").reserved == 32 * MiB  # type: ignore[union-attr]
    stranger = sj.pod("stranger")
    assert post(client, "/bind", sj.binding_args(stranger, "sgx-a"))[1] == {
        "Error": "pod payments/stranger not found"
    }


def test_bind_with_mismatched_uid_is_refused(ledger: EpcLedger, ready: Ready, clock: Clock) -> None:
    the_pod = sj.pod(epc_mib=32)
    binder = MemoryBinder({f"payments/{the_pod['metadata']['name']}": the_pod}, final=False)
    client = make_client(ledger, binder, ready, clock)
    args = {**sj.binding_args(the_pod, "sgx-a"), "PodUID": "recreated"}
    assert "has UID" in post(client, "/bind", args)[1]["Error"]
    assert binder.bindings == {}


def test_reservation_expires_after_ttl(
    ledger: EpcLedger, binder: MemoryBinder, ready: Ready, clock: Clock
) -> None:
    client = make_client(ledger, binder, ready, clock, settings_from_mapping({"reservationTTLSeconds": 30}))
    the_pod = sj.pod(epc_mib=64)
    post(client, "/filter", sj.args_with_names(the_pod, ["sgx-a"]))
    post(client, "/bind", sj.binding_args(the_pod, "sgx-a"))
    clock.now += 29
    _, result = post(client, "/filter", sj.args_with_names(sj.pod("next", epc_mib=64), ["sgx-a"]))
    assert result["NodeNames"] == []
    clock.now += 1
    _, result = post(client, "/filter", sj.args_with_names(sj.pod("next", epc_mib=64), ["sgx-a"]))
    assert result["NodeNames"] == ["sgx-a"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "confidential_pods_extender_reservations_expired_total 1.0" in metrics


def test_bind_not_ready(client: FlaskClient, ready: Ready, binder: MemoryBinder) -> None:
    ready.value = False
    _, result = post(client, "/bind", sj.binding_args(sj.pod(), "sgx-a"))
    assert "not ready" in result["Error"] and binder.bindings == {}


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize("path", ["/filter", "/prioritize", "/bind"])
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"Pod": 1}',
        b'{"Pod": {}}',
        b'{"Pod": {}, "NodeNames": [1]}',
        b'{"Pod": {}, "Nodes": []}',
    ],
)
def test_malformed_bodies_are_400_with_error(client: FlaskClient, path: str, body: bytes) -> None:
    response = client.post(path, data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["Error"]


def test_bind_needs_every_field(client: FlaskClient) -> None:
    response = client.post("/bind", json={"PodName": "p", "PodNamespace": "ns", "PodUID": "u"})
    assert response.status_code == 400
    assert response.get_json() == {"Error": "ExtenderBindingArgs.Node must be a non-empty string"}


def test_unknown_path_and_wrong_method(client: FlaskClient) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404 and "Error" in missing.get_json()
    wrong = client.get("/filter")
    assert wrong.status_code == 405 and "Error" in wrong.get_json()


def test_too_large_body(ledger: EpcLedger, binder: MemoryBinder, ready: Ready) -> None:
    app = create_app(ledger, Settings(), binder, ready)
    assert app.config["MAX_CONTENT_LENGTH"] == MAX_BODY
    app.config["MAX_CONTENT_LENGTH"] = 1024
    body = json.dumps(sj.args_with_nodes(sj.pod(), all_nodes())).encode()
    assert len(body) > 1024
    response = app.test_client().post("/filter", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json() == {"Error": "body larger than 1024 bytes"}


# ----------------------------------------------------------------- health, inspect, metrics


def test_health_and_readiness(client: FlaskClient, ready: Ready) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    ready.value = False
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503


def test_inspect(client: FlaskClient, ledger: EpcLedger) -> None:
    ledger.reserve(PodEpc("r1", "kms", "broker", "sgx-b", 2 * MiB), now=1000)
    body = client.get("/inspect").get_json()
    assert body["nodeCount"] == 4 and body["podCount"] == 1 and body["reservationCount"] == 1
    assert [n["name"] for n in body["nodes"]] == ["plain", "sgx-a", "sgx-b", "tiny"]
    node = client.get("/inspect/sgx-b").get_json()
    assert node == {
        "name": "sgx-b",
        "sgx": True,
        "capacity": 93 * MiB,
        "used": 61 * MiB,
        "reserved": 2 * MiB,
        "free": 30 * MiB,
        "summary": "30Mi free of 93Mi (61Mi used, 2Mi reserved)",
        "pods": [
            {
                "namespace": "ml",
                "name": "inference-0",
                "uid": "running-1",
                "epc": 61 * MiB,
                "priority": 0,
                "leaving": False,
            }
        ],
        "reservations": [
            {
                "namespace": "kms",
                "name": "broker",
                "uid": "r1",
                "epc": 2 * MiB,
                "priority": 0,
                "leaving": False,
            },
        ],
        # pods nominated to the node by preemption (their EPC held for them): the preemption issue
        "nominated": [],
        # the node's SGXAttestationReady condition (extender/readiness.py): none here
        "attestation": None,
    }
    assert client.get("/inspect/plain").get_json()["summary"] == "no SGX EPC"
    missing = client.get("/inspect/ghost")
    assert missing.status_code == 404 and "ghost" in missing.get_json()["Error"]


def test_metrics(client: FlaskClient) -> None:
    post(client, "/filter", sj.args_with_names(sj.pod(), NAMES))
    client.post("/filter", data=b"junk")
    post(client, "/prioritize", sj.args_with_names(sj.pod(), NAMES))
    text = client.get("/metrics").get_data(as_text=True)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert (
        samples[("confidential_pods_extender_requests_total", (("outcome", "ok"), ("verb", "filter")))] == 1
    )
    assert (
        samples[("confidential_pods_extender_requests_total", (("outcome", "malformed"), ("verb", "filter")))]
        == 1
    )
    assert (
        samples[("confidential_pods_extender_request_duration_seconds_count", (("verb", "prioritize"),))] == 1
    )
    assert samples[("confidential_pods_extender_ledger_nodes", ())] == 4
    assert samples[("confidential_pods_extender_ledger_pods", ())] == 1
    assert samples[("confidential_pods_extender_node_epc_free_bytes", (("node", "sgx-b"),))] == 32 * MiB
    assert ("confidential_pods_extender_node_epc_free_bytes", (("node", "plain"),)) not in samples
