"""The end-to-end benchmark's own watch of the pods it times (benchmarks/e2e_bench.py ``BindWatch``), and its
nodes (``NodePlan``)."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from benchmarks.e2e_bench import BindWatch, NodePlan
from tests.fakeapi import FakeApiServer, serving

NAMESPACE = "bench"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with serving() as server:
        yield server


def pod(name: str, node: str | None = None) -> dict[str, object]:
    spec: dict[str, object] = {"containers": [{"name": "app", "image": "app:1"}]}
    if node:
        spec["nodeName"] = node
    metadata = {"name": name, "namespace": NAMESPACE}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def watch_of(api: FakeApiServer, expected: int) -> BindWatch:
    port = urlsplit(api.url).port

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    return BindWatch(connect, NAMESPACE, str(api.rv), expected, timeout=30)


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_watch_the_apiserver_ends_early_is_opened_again_from_its_last_version(api: FakeApiServer) -> None:
    # Seen once in a 200-pod run: the apiserver ended the benchmark's watch mid-phase, the phase stopped
    # waiting with 139 of 200 pods seen bound and printed nan.
    for name in ("a", "b", "c"):
        api.put("Pod", pod(name))
    watch = watch_of(api, expected=3)
    api.put("Pod", pod("a", "node-1"))
    until(lambda: "a" in watch.bound)
    seen = api.rv
    api.disturb_stream("Pod", "end")
    until(lambda: len(api.watches("Pod")) == 2)
    api.put("Pod", pod("b", "node-1"))
    api.put("Pod", pod("c", "node-2"))

    watch.wait(10)

    assert sorted(watch.bound) == ["a", "b", "c"]
    assert watch.reopened == 1
    assert api.watches("Pod")[1]["resourceVersion"] == str(seen)


def test_an_error_event_fails_the_watch(api: FakeApiServer) -> None:
    api.put("Pod", pod("a"))
    watch = watch_of(api, expected=1)
    api.disturb_stream("Pod", "gone")

    with pytest.raises(RuntimeError, match="watch failed after 0 bound pods"):
        watch.wait(10)
    assert watch.reopened == 0


def test_the_watch_stops_at_its_deadline_with_what_it_saw(api: FakeApiServer) -> None:
    api.put("Pod", pod("a"))
    port = urlsplit(api.url).port
    started = time.monotonic()
    watch = BindWatch(lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=30), NAMESPACE,
                      str(api.rv), expected=2, timeout=2.5)  # fmt: skip
    api.put("Pod", pod("a", "node-1"))

    watch.wait(10)

    assert 2 <= time.monotonic() - started < 6
    assert list(watch.bound) == ["a"]
    assert watch.error is None
    # The apiserver ended it at the deadline, not early: asked for the whole 2.5 s (rounded up), never again.
    assert [w["timeoutSeconds"] for w in api.watches("Pod")] == ["3"]
    assert watch.reopened == 0


EPC = "alibabacloud.com/sgx_epc_MiB"
MUTATED = {"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "100m", EPC: "10"}}}]}}


@pytest.mark.parametrize(
    ("nodes", "pods", "fraction", "sgx", "slots"),
    [
        (5000, 10000, 0.1, 500, 40),
        (5000, 10000, 1.0, 5000, 4),
        (10, 2000, 0.01, 1, 4000),
        (3, 100, 0.5, 2, 100),
    ],
)
def test_the_sgx_share_of_nodes_has_room_for_twice_the_pods(
    nodes: int, pods: int, fraction: float, sgx: int, slots: int
) -> None:
    plan = NodePlan.of(MUTATED, pods=pods, nodes=nodes, sgx_fraction=fraction)

    assert plan.sgx == sgx
    assert plan.sgx_allocatable[EPC] == str(10 * slots)
    assert int(plan.sgx_allocatable["pods"]) >= slots
    names = [plan.node(i) for i in range(nodes)]
    assert len({name for name, _, _ in names}) == nodes
    assert sum(is_sgx for _, _, is_sgx in names) == sgx
    assert all(EPC not in allocatable for _, allocatable, is_sgx in names if not is_sgx)
    assert plan.plain_allocatable == {"cpu": "8000m", "memory": str(32 * 2**30), "pods": "110"}
