"""The harness itself: the apiserver authenticates and authorizes as a cluster's does, and a real
kube-scheduler (default profile) places pods by an extended resource.

No webhook, no extender: this proves etcd, kube-apiserver (TLS, client certs, service-account tokens, RBAC,
ServiceAccount admission), the Node helpers and kube-scheduler work together, so later e2e tests can trust
the ground they stand on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confidential_pods.profiles import PROFILES
from tests.e2e.harness import ControlPlane
from tests.e2e.kube import (
    JSON,
    ApiError,
    Kube,
    ensure_service_account,
    patch_node_status,
    pod_events,
)
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
        lambda: bool(pod_events(kube, namespace, "too-big", "FailedScheduling")),
        timeout=SCHEDULE_TIMEOUT,
        what="a FailedScheduling event for pod too-big",
        alive=default_scheduler.check_alive,
    )
    message = pod_events(kube, namespace, "too-big", "FailedScheduling")[0]["message"]
    assert f"Insufficient {EPC}" in message
    assert kube.get(f"/api/v1/namespaces/{namespace}/pods/too-big")["spec"].get("nodeName") is None

    # The node grows (status subresource, as a kubelet reports it): the pending pod now fits there.
    grown = dict(node["status"]["allocatable"], **{EPC: "160"})
    patch_node_status(kube, node_name, {"allocatable": grown, "capacity": grown})

    def too_big_bound() -> bool:
        return bool(kube.get(f"/api/v1/namespaces/{namespace}/pods/too-big")["spec"].get("nodeName"))

    wait_until(
        too_big_bound,
        timeout=SCHEDULE_TIMEOUT,
        what="pod too-big to be bound",
        alive=default_scheduler.check_alive,
    )
    assert kube.get(f"/api/v1/namespaces/{namespace}/pods/too-big")["spec"]["nodeName"] == node_name


@pytest.mark.e2e
def test_apiserver_authenticates_certs_and_tokens_and_authorizes_by_rbac(
    control_plane: ControlPlane, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    api = control_plane.api
    pods_path = f"/api/v1/namespaces/{namespace}/pods"

    # A client certificate from the cluster CA authenticates, but RBAC grants it nothing yet.
    nobody = api.ca.issue(tmp_path, "nobody", common_name="e2e-nobody", client=True)
    as_nobody = Kube(api.url, ca=api.ca.files.cert, cert=nobody.cert, key=nobody.key)
    with pytest.raises(ApiError) as denied:
        as_nobody.get(pods_path)
    assert denied.value.status == 403
    assert 'User "e2e-nobody" cannot list resource "pods"' in denied.value.message

    # An explicit Role: the aggregated ClusterRoles (view, edit, admin) stay empty without
    # kube-controller-manager's aggregation controller.
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    kube.create(
        f"{rbac}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
    )
    kube.create(
        f"{rbac}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "nobody-reads-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "e2e-nobody"}],
        },
    )

    def can_list() -> bool:
        try:
            as_nobody.get(pods_path)
        except ApiError as exc:
            if exc.status == 403:
                return False
            raise
        return True

    wait_until(can_list, timeout=30, what="the RoleBinding to take effect")

    # Service-account tokens (TokenRequest, signed with the harness's key) authenticate as the account.
    ensure_service_account(kube, namespace, "reader")
    token = kube.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/reader/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )["status"]["token"]
    as_reader = Kube(api.url, ca=api.ca.files.cert, token=token)
    with pytest.raises(ApiError) as denied:
        as_reader.get(pods_path)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in denied.value.message

    # Without credentials: anonymous auth is off.
    with pytest.raises(ApiError) as unauthenticated:
        Kube(api.url, ca=api.ca.files.cert).get(pods_path)
    assert unauthenticated.value.status == 401
