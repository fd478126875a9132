"""The ledger feed against a real kube-apiserver (the tests/e2e control plane, built by tests/e2e/build.sh).

An e2e test (tests/e2e/gate.py: runs once tests/e2e/build.sh has built the control plane). The apiserver
runs without its watch cache and compacts etcd every 2 s, so that a watch resumed from an old
resourceVersion gets the real ``ERROR`` 410 ("The resourceVersion for the provided watch is too old.")
instead of a replay from the cache: the relist path is exercised against the real thing, not only
against tests/fakeapi.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest

from extender.ledger import EpcLedger
from extender.watching import LedgerFeed
from tests.e2e import processes
from tests.extender.test_watching import PROFILE, RES, fresh, state

pytestmark = pytest.mark.e2e

NODE = {"cpu": "8", "memory": "16Gi", "pods": "110"}


#: Poll a condition (every 10 ms, at most 60.0 s).
wait_until = partial(processes.wait_until, timeout=60.0, what="the condition", interval=0.01)


def epc_pod(name: str, node: str | None, epc: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "app",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {RES: epc}, "limits": {RES: epc}},
            }
        ]
    }
    if node is not None:
        spec["nodeName"] = node  # assigned at creation, as if scheduled: there is no kubelet here
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


class Cluster:
    def __init__(self, plane: Any) -> None:
        from tests.e2e.kube import create_namespace

        self.kube = plane.api.admin_client()
        self.configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(plane.api.admin_kubeconfig), client_configuration=self.configuration
        )
        self.namespace = f"watch-{uuid.uuid4().hex[:6]}"
        create_namespace(self.kube, self.namespace)

    def expected(self) -> dict[str, Any]:
        nodes = self.kube.get("/api/v1/nodes")["items"]
        pods = self.kube.get("/api/v1/pods")["items"]
        return state(fresh(nodes, pods))

    def feed(self, ledger: EpcLedger, **options: Any) -> LedgerFeed:
        return LedgerFeed(kubernetes.client.ApiClient(self.configuration), ledger, PROFILE, **options)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from tests.e2e import gate

    binaries = gate.binaries(request.config)  # skips (fails in CI) without tests/e2e/build.sh
    from tests.e2e.harness import ControlPlane

    work = tmp_path_factory.mktemp("watch-apiserver")
    args = ["--watch-cache=false", "--etcd-compaction-interval=2s"]
    with ControlPlane.run(binaries, work, Path(work / "logs"), apiserver_args=args) as plane:
        yield Cluster(plane)


def _relists(feed: LedgerFeed, kind: str, reason: str) -> float:
    for family in feed.metrics.relists.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == {"kind": kind, "reason": reason}:
                return float(sample.value)
    return 0.0


def test_feed_follows_the_apiserver_and_relists_on_a_real_410(cluster: Cluster) -> None:
    from tests.e2e.kube import create_node, delete_pod, patch_node_status

    kube, ns = cluster.kube, cluster.namespace
    suffix = uuid.uuid4().hex[:6]
    nodes = [f"sgx-{suffix}-{i}" for i in range(3)]
    for name in nodes:
        create_node(kube, name, {**NODE, RES: "93"})
    create_node(kube, f"plain-{suffix}", NODE)
    for i in range(7):
        kube.create(f"/api/v1/namespaces/{ns}/pods", epc_pod(f"p{i}", nodes[i % 3], "8"))
    kube.create(f"/api/v1/namespaces/{ns}/pods", epc_pod("pending", None, "4"))  # not assigned: not listed

    ledger = EpcLedger()
    feed = cluster.feed(ledger, page_size=3, watch_timeout=(3, 4))
    feed.start()
    try:
        wait_until(feed.ready)
        assert state(ledger) == cluster.expected()

        patch_node_status(kube, nodes[0], {"allocatable": {**NODE, RES: "128"}})
        kube.patch(f"/api/v1/namespaces/{ns}/pods/p1/status", {"status": {"phase": "Succeeded"}})
        delete_pod(kube, ns, "p2")
        kube.create(f"/api/v1/namespaces/{ns}/pods", epc_pod("late", nodes[2], "16"))
        kube.delete(f"/api/v1/nodes/plain-{suffix}")
        wait_until(lambda: state(ledger) == cluster.expected())
        usage = ledger.usage(nodes[0])
        assert usage is not None and usage.capacity == 128 * 2**20

        # Node changes move etcd's revision on while the pod watch sees nothing (no watch cache, no
        # bookmarks); compaction passes the pod watch's resourceVersion, and when that watch times
        # out and resumes, the apiserver answers 410: the feed relists the pods.
        for i in range(5):
            patch_node_status(kube, nodes[1], {"allocatable": {**NODE, RES: str(90 + i)}})
            time.sleep(0.5)
        wait_until(lambda: _relists(feed, "Pod", "gone") >= 1)
        kube.create(f"/api/v1/namespaces/{ns}/pods", epc_pod("after-relist", nodes[1], "2"))
        wait_until(lambda: state(ledger) == cluster.expected())
    finally:
        feed.stop()


def test_nominated_pods_are_held_until_bound_on_a_real_apiserver(cluster: Cluster) -> None:
    """The field selector of nominated pods (spec.nodeName=,status.nominatedNodeName!=) is one the apiserver
    serves; a nomination set on the status subresource (as kube-scheduler sets it) holds the pod's EPC, and
    the binding moves the pod from held to used (the pod leaves one selection: DELETED, enters the other)."""
    from tests.e2e.kube import create_node

    kube, ns = cluster.kube, cluster.namespace
    node = f"sgx-{uuid.uuid4().hex[:6]}"
    create_node(kube, node, {**NODE, RES: "64"})
    kube.create(f"/api/v1/namespaces/{ns}/pods", epc_pod("vip", None, "24"))
    ledger = EpcLedger()
    feed = cluster.feed(ledger, page_size=3, watch_timeout=(30, 40))
    feed.start()
    try:
        wait_until(feed.ready)
        assert ledger.nomination_count() == 0
        kube.patch(f"/api/v1/namespaces/{ns}/pods/vip/status", {"status": {"nominatedNodeName": node}})
        wait_until(lambda: ledger.held(node, "another-pod", 0) == 24 * 2**20)
        assert state(ledger) == cluster.expected()
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "vip"},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node}}  # fmt: skip
        kube.create(f"/api/v1/namespaces/{ns}/pods/vip/binding", binding)
        wait_until(lambda: ledger.nomination_count() == 0 and ledger.pod_count() > 0)
        wait_until(lambda: state(ledger) == cluster.expected())
        usage = ledger.usage(node)
        assert usage is not None and usage.used == 24 * 2**20
    finally:
        feed.stop()
