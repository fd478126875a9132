"""Bind: concurrent binds never overcommit; the API binder speaks pods/binding to a real HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import kubernetes_validate
import pytest
from kubernetes import client

from confidential_pods.profiles import PROFILES
from confidential_pods.quantities import MiB
from extender.binding import ApiBinder, BindRefused, MemoryBinder, PendingPods, bind_pod, pod_epc_for_bind
from extender.ledger import EpcLedger
from extender.wire import BindRequest
from tests.extender import scheduler_json as sj
from tests.fakeapi import FakeApiServer, serving

PROFILE = PROFILES["alibaba"]


class SlowBinder(MemoryBinder):
    """Takes a while to bind, like a real API call, so binds overlap if nothing serializes them."""

    def __init__(self) -> None:
        super().__init__(final=False)  # as the API server: a bind is a reservation until confirmed
        self.in_flight = 0
        self.max_in_flight = 0
        self._count_lock = threading.Lock()

    def bind(self, request: BindRequest) -> None:
        with self._count_lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        threading.Event().wait(0.002)
        super().bind(request)
        with self._count_lock:
            self.in_flight -= 1


def test_concurrent_binds_never_overcommit() -> None:
    ledger = EpcLedger()
    ledger.set_node("n1", 93 * MiB)
    ledger.set_node("n2", 64 * MiB)
    binder = SlowBinder()
    results: list[tuple[str, str]] = []
    results_lock = threading.Lock()
    start = threading.Barrier(24)

    def worker(index: int) -> None:
        node = "n1" if index % 2 else "n2"
        request = BindRequest(pod_name=f"p{index}", pod_namespace="ns", pod_uid=f"u{index}", node=node)
        start.wait()
        outcome = bind_pod(request, 10 * MiB, ledger=ledger, binder=binder, profile=PROFILE, now=0.0)
        with results_lock:
            results.append((node, outcome.error))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bound = {node: sum(1 for n, err in results if n == node and not err) for node in ("n1", "n2")}
    assert bound == {"n1": 9, "n2": 6}  # floor(93/10), floor(64/10): exactly what fits, never more
    for node, capacity in (("n1", 93 * MiB), ("n2", 64 * MiB)):
        usage = ledger.usage(node)
        assert usage is not None and usage.reserved == bound[node] * 10 * MiB <= capacity
    refused = [err for _, err in results if err]
    assert len(refused) == 9 and all("insufficient SGX EPC" in err for err in refused)
    # The Binding calls overlap (the API round trip is outside the ledger lock), yet nothing overcommits:
    # the fit check and the reservation are one step under the lock.
    assert binder.max_in_flight > 1
    assert len(binder.bindings) == 15


def test_concurrent_watch_updates_wait_for_a_bind_in_flight() -> None:
    """A watch event arriving during the API call replaces the reservation: no double count."""
    ledger = EpcLedger()
    ledger.set_node("n", 100 * MiB)
    entered = threading.Event()
    release = threading.Event()

    class BlockingBinder(MemoryBinder):
        def bind(self, request: BindRequest) -> None:
            entered.set()
            assert release.wait(5)
            super().bind(request)

    from extender.podepc import PodEpc

    request = BindRequest(pod_name="p", pod_namespace="ns", pod_uid="u", node="n")
    binding = threading.Thread(
        target=bind_pod,
        args=(request, 30 * MiB),
        kwargs={"ledger": ledger, "binder": BlockingBinder(), "profile": PROFILE, "now": 0.0},
    )
    binding.start()
    assert entered.wait(5)
    watch = threading.Thread(target=ledger.set_pod, args=(PodEpc("u", "ns", "p", "n", 30 * MiB),))
    watch.start()
    release.set()
    binding.join()
    watch.join()
    usage = ledger.usage("n")
    assert usage is not None and (usage.used, usage.reserved) == (30 * MiB, 0)


def test_refused_binding_withdraws_its_reservation_and_keeps_an_earlier_one() -> None:
    from extender.podepc import PodEpc

    class RefusingBinder(MemoryBinder):
        def bind(self, request: BindRequest) -> None:
            if request.pod_uid == "refused":
                raise BindRefused('pods "x" not found')
            super().bind(request)

    ledger = EpcLedger()
    ledger.set_node("n", 100 * MiB)
    binder = RefusingBinder(final=False)  # as the API server: reservations until confirmed
    first = BindRequest(pod_name="p", pod_namespace="ns", pod_uid="u", node="n")
    assert bind_pod(first, 30 * MiB, ledger=ledger, binder=binder, profile=PROFILE, now=1.0).bound
    refused = BindRequest(pod_name="x", pod_namespace="ns", pod_uid="refused", node="n")
    outcome = bind_pod(refused, 50 * MiB, ledger=ledger, binder=binder, profile=PROFILE, now=2.0)
    assert outcome.error == 'binding ns/x failed: pods "x" not found'
    again = bind_pod(first, 30 * MiB, ledger=ledger, binder=binder, profile=PROFILE, now=3.0)
    assert again.error.startswith("binding ns/p failed: pod is already bound")
    usage = ledger.usage("n")
    assert usage is not None and (usage.used, usage.reserved) == (0, 30 * MiB)
    reservation = ledger.reservation("u")
    assert reservation is not None and reservation.since == 1.0  # the first bind's, not the refused retry's
    assert ledger.reservation("refused") is None
    ledger.set_pod(PodEpc("u", "ns", "p", "n", 30 * MiB))
    assert (ledger.usage("n").used, ledger.usage("n").reserved) == (30 * MiB, 0)  # type: ignore[union-attr]


def test_pending_pods_is_bounded() -> None:
    pending = PendingPods(capacity=3)
    for i in range(5):
        pending.remember(f"u{i}", i)
    assert len(pending) == 3
    assert pending.pop("u0") is None and pending.pop("u4") == 4 and pending.pop("u4") is None


# ----------------------------------------------------------------- ApiBinder over real HTTP


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with serving() as server:
        yield server


def test_api_binder_posts_a_binding(api: FakeApiServer) -> None:
    api.put("Pod", sj.pod("p-1", uid="uid-1"))
    binder = ApiBinder(api.api_client())
    binder.bind(BindRequest(pod_name="p-1", pod_namespace="payments", pod_uid="uid-1", node="sgx-a"))
    assert api.bindings == [
        (
            "/api/v1/namespaces/payments/pods/p-1/binding",
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": "p-1", "namespace": "payments", "uid": "uid-1"},
                "target": {"apiVersion": "v1", "kind": "Node", "name": "sgx-a"},
            },
        )
    ]
    kubernetes_validate.validate(api.bindings[0][1], "1.33.0", strict=True)
    assert api.objects["Pod"]["payments/p-1"]["spec"]["nodeName"] == "sgx-a"


def test_consecutive_binds_reuse_one_connection(api: FakeApiServer) -> None:
    """Each answer is read before its kept-alive connection goes back to the pool: the next bind on that
    connection must not read the previous answer's body as its status line (which made urllib3 retry on a
    new connection, a new TLS handshake with the real apiserver, every other bind)."""
    for i in range(20):
        api.put("Pod", sj.pod(f"p-{i}", uid=f"uid-{i}"))
    client = api.api_client()
    binder = ApiBinder(client)
    for i in range(20):
        binder.bind(
            BindRequest(pod_name=f"p-{i}", pod_namespace="payments", pod_uid=f"uid-{i}", node="sgx-a")
        )
    assert len(api.bindings) == 20
    pool = client.rest_client.pool_manager.connection_from_url(client.configuration.host)
    assert pool.num_connections == 1 and pool.num_requests == 20


def test_api_binder_reports_the_api_message(api: FakeApiServer) -> None:
    api.refuse_bindings = (409, 'pod p-1 is already assigned to node "sgx-b"')
    binder = ApiBinder(api.api_client())
    with pytest.raises(BindRefused, match=r'already assigned to node "sgx-b" \(HTTP 409\)'):
        binder.bind(BindRequest(pod_name="p-1", pod_namespace="payments", pod_uid="uid-1", node="sgx-a"))


def test_api_refusal_reserves_nothing(api: FakeApiServer) -> None:
    api.refuse_bindings = (403, "forbidden")
    ledger = EpcLedger()
    ledger.set_node("sgx-a", 93 * MiB)
    request = BindRequest(pod_name="p-1", pod_namespace="payments", pod_uid="uid-1", node="sgx-a")
    outcome = bind_pod(
        request, 8 * MiB, ledger=ledger, binder=ApiBinder(api.api_client()), profile=PROFILE, now=0
    )
    assert outcome.error == "binding payments/p-1 failed: forbidden (HTTP 403)"
    assert ledger.usage("sgx-a").reserved == 0  # type: ignore[union-attr]


def test_api_binder_reads_pods_raw(api: FakeApiServer) -> None:
    the_pod = sj.pod(epc_mib=48)
    the_pod["spec"]["initContainers"] = [
        {
            "name": "aesm",
            "image": "aesm",
            "restartPolicy": "Always",
            "resources": {"requests": {sj.RESOURCE: "16"}},
        }
    ]
    stored = api.put("Pod", the_pod)
    binder = ApiBinder(api.api_client())
    read = binder.read_pod("payments", the_pod["metadata"]["name"])
    assert read == stored  # restartPolicy of the sidecar survives: no typed-model round trip
    assert binder.read_pod("payments", "gone") is None
    request = BindRequest(the_pod["metadata"]["name"], "payments", the_pod["metadata"]["uid"], "n")
    assert pod_epc_for_bind(request, PendingPods(), binder, PROFILE) == 64 * MiB


def test_api_binder_unreachable() -> None:
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"
    configuration.retries = 0
    binder = ApiBinder(client.ApiClient(configuration), timeout=2)
    with pytest.raises(BindRefused, match="API server unreachable"):
        binder.bind(BindRequest(pod_name="p", pod_namespace="ns", pod_uid="u", node="n"))
