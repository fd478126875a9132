"""The harness itself: a real kube-scheduler (default profile) places pods by an extended resource.

No webhook, no extender: this proves etcd, kube-apiserver (TLS, RBAC, ServiceAccount admission), the Node
helpers and kube-scheduler work together, so later e2e tests can trust the ground they stand on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from confidential_pods.profiles import PROFILES
from tests.e2e.kube import JSON, Kube, delete_pod
from tests.e2e.processes import Process, wait_until

EPC = PROFILES["alibaba"].epc_resource
SCHEDULE_TIMEOUT = 60.0


def epc_pod(name: str, epc_mib: int) -> JSON:
    """A pod asking for ``epc_mib`` of the alibaba profile's EPC resource (extended: requests = limits)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {
                        "requests": {EPC: str(epc_mib)},
                        "limits": {EPC: str(epc_mib)},
                    },
                }
            ],
        },
    }


@pytest.fixture
def pods(kube: Kube, namespace: str) -> Iterator[Callable[[JSON], JSON]]:
    """Factory: create a pod in the test's namespace; every pod is deleted (grace 0) after the test."""
    created: list[str] = []

    def create(manifest: JSON) -> JSON:
        pod = kube.create(f"/api/v1/namespaces/{namespace}/pods", manifest)
        created.append(pod["metadata"]["name"])
        return pod

    yield create
    for name in created:
        delete_pod(kube, namespace, name)


def scheduling_events(kube: Kube, namespace: str, pod: str) -> list[JSON]:
    events = kube.get(
        f"/api/v1/namespaces/{namespace}/events",
        params={"fieldSelector": f"involvedObject.name={pod},reason=FailedScheduling"},
    )
    items: list[JSON] = events.get("items", [])
    return items


@pytest.mark.e2e
def test_default_scheduler_places_pods_by_extended_resource(
    kube: Kube,
    default_scheduler: Process,
    namespace: str,
    make_node: Callable[..., JSON],
    pods: Callable[[JSON], JSON],
) -> None:
    node = make_node({EPC: "96"})
    node_name = node["metadata"]["name"]
    # A node without the resource: the scheduler must not pick it for an EPC pod.
    make_node({})
    assert node["status"]["allocatable"][EPC] == "96"
    assert {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"} not in [
        {"key": t.get("key"), "effect": t.get("effect")} for t in node["spec"].get("taints", [])
    ]

    stored = pods(epc_pod("fits", 64))
    # ServiceAccount admission ran (the harness created the default ServiceAccount it needs).
    assert stored["spec"]["serviceAccountName"] == "default"
    assert stored["spec"].get("nodeName") is None

    bound: dict[str, Any] = {}

    def is_bound() -> bool:
        bound.update(kube.get(f"/api/v1/namespaces/{namespace}/pods/fits"))
        return bool(bound["spec"].get("nodeName"))

    wait_until(
        is_bound, timeout=SCHEDULE_TIMEOUT, what="pod fits to be bound", alive=default_scheduler.check_alive
    )
    assert bound["spec"]["nodeName"] == node_name
    assert bound["spec"]["schedulerName"] == "default-scheduler"
    assert {"type": "PodScheduled", "status": "True"} in [
        {"type": c["type"], "status": c["status"]} for c in bound["status"].get("conditions", [])
    ]

    # 64 of 96 are taken: a second 64 does not fit anywhere and stays Pending, with the scheduler's reason.
    pods(epc_pod("too-big", 64))
    wait_until(
        lambda: bool(scheduling_events(kube, namespace, "too-big")),
        timeout=SCHEDULE_TIMEOUT,
        what="a FailedScheduling event for pod too-big",
        alive=default_scheduler.check_alive,
    )
    message = scheduling_events(kube, namespace, "too-big")[0]["message"]
    assert f"Insufficient {EPC}" in message
    assert kube.get(f"/api/v1/namespaces/{namespace}/pods/too-big")["spec"].get("nodeName") is None
