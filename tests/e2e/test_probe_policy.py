"""The node probe's admission policy on the real kube-apiserver (manifests/components/node-probe/identity/
probepolicy.yaml, installed with the intel overlay's components/aesmd), for the probe's ServiceAccount in
either place it runs: beside aesmd (namespace confidential-pods-aesmd) and alone (components/node-probe,
namespace confidential-pods-node-probe, bound to the same ClusterRole as that component binds it).

The probe's ServiceAccount may patch any Node's status as far as RBAC goes; the policy lets a write through
only for the node in the token's node-name claim (a projected token bound to a pod on that node), and only
when nothing but the SGX conditions changes. Each rule is tried with a real bound token and the probe's own
client (nodeprobe.publishing.ApiNodeStatus); an administrator is not affected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from nodeprobe.publishing import STRATEGIC_MERGE_PATCH, ApiNodeStatus, PublishError
from tests.e2e.harness import ControlPlane
from tests.e2e.kube import JSON, ApiError, Kube, create_namespace, ensure_service_account
from tests.e2e.product import Installation

pytestmark = pytest.mark.e2e

#: Where the probe runs: components/aesmd's namespace, components/node-probe's.
NAMESPACES = ("confidential-pods-aesmd", "confidential-pods-node-probe")
ACCOUNT = "confidential-pods-node-probe"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"


def _condition(kind: str, status: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": status,
        "reason": "E2E",
        "message": "set by test_probe_policy",
        "lastHeartbeatTime": "2026-12-05T00:00:00Z",
        "lastTransitionTime": "2026-12-05T00:00:00Z",
    }


def _token(kube: Kube, namespace: str, pod: JSON | None) -> str:
    """A TokenRequest of the probe's ServiceAccount, bound to ``pod`` (as the kubelet asks for a projected
    token), or bound to nothing."""
    spec: dict[str, Any] = {"expirationSeconds": 3600}
    if pod is not None:
        metadata = pod["metadata"]
        spec["boundObjectRef"] = {
            "kind": "Pod",
            "apiVersion": "v1",
            "name": metadata["name"],
            "uid": metadata["uid"],
        }
    answer = kube.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{ACCOUNT}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
    )
    return str(answer["status"]["token"])


def _as(control_plane: ControlPlane, token: str) -> Kube:
    return Kube(control_plane.api.url, ca=control_plane.api.ca.files.cert, token=token)


def _probe(control_plane: ControlPlane, token: str, node: str) -> ApiNodeStatus:
    """The probe's own client, as it runs in the DaemonSet (a bearer token, the apiserver's CA)."""
    configuration = client.Configuration()
    configuration.host = control_plane.api.url
    configuration.ssl_ca_cert = str(control_plane.api.ca.files.cert)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return ApiNodeStatus(client.ApiClient(configuration), node)


@pytest.mark.parametrize("namespace", NAMESPACES)
@pytest.mark.parametrize("installation", ["intel"], indirect=True)  # the overlay with the aesmd component
def test_the_probe_writes_only_its_own_nodes_sgx_conditions(
    installation: Installation,
    namespace: str,
    kube: Kube,
    control_plane: ControlPlane,
    make_node: Callable[..., JSON],
) -> None:
    assert any(o["kind"] == "ValidatingAdmissionPolicy" and o["metadata"]["name"] == ACCOUNT
               for o in installation.overlay.admission_policies())  # fmt: skip
    try:
        create_namespace(kube, namespace)
    except ApiError as exc:
        if exc.status != 409:  # an earlier test's: namespaces never finish deleting here
            raise
    ensure_service_account(kube, namespace, ACCOUNT)
    if (
        namespace != "confidential-pods-aesmd"
    ):  # the intel overlay binds its own; bind the other as its component does
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"e2e-{namespace}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}],
        }
        try:
            kube.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
        except ApiError as exc:
            if exc.status != 409:
                raise
    own = make_node({})["metadata"]["name"]
    other = make_node({})["metadata"]["name"]
    pod = kube.create(
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "node-probe-"},
            "spec": {
                "nodeName": own,
                "serviceAccountName": ACCOUNT,
                "automountServiceAccountToken": False,
                "containers": [{"name": "node-probe", "image": "registry.example.com/confidential-pods:e2e"}],
            },
        },
    )
    try:
        token = _token(kube, namespace, pod)
        review = _as(control_plane, token).create(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert review["status"]["userInfo"]["extra"][NODE_NAME_KEY] == [own]  # the claim the policy reads

        # What the probe writes, on its own node: through.
        ready = [_condition("SGXAttestationReady", "True"), _condition("SGXEPCCgroupAvailable", "False")]
        _probe(control_plane, token, own).patch_conditions(ready)  # type: ignore[arg-type]
        types = {c["type"] for c in kube.get(f"/api/v1/nodes/{own}")["status"]["conditions"]}
        assert {"Ready", "SGXAttestationReady", "SGXEPCCgroupAvailable"} <= types

        # Another node: refused, saying whose token it is.
        with pytest.raises(PublishError) as refused:
            _probe(control_plane, token, other).patch_conditions(ready)  # type: ignore[arg-type]
        assert f"this token is for node {own}, not {other}" in str(refused.value)

        # Anything but the SGX conditions on its own node: refused, each by its rule.
        probe = _as(control_plane, token)
        for body, words in (
            ({"status": {"conditions": [_condition("Ready", "False")]}}, "only the conditions"),
            ({"status": {"capacity": {"sgx.intel.com/epc": "1Ti"}}}, "capacity or allocatable"),
            ({"status": {"allocatable": {"cpu": "512"}}}, "capacity or allocatable"),
            ({"status": {"addresses": [{"type": "InternalIP", "address": "203.0.113.9"}]}}, "addresses"),
            ({"metadata": {"labels": {"sgx.intel.com/ready": "yes"}}}, "labels or annotations"),
        ):
            with pytest.raises(ApiError) as denied:
                probe.patch(f"/api/v1/nodes/{own}/status", body, content_type=STRATEGIC_MERGE_PATCH)
            assert denied.value.status == 403 and words in str(denied.value.body), body

        # A token of the same account bound to no pod has no node: it writes nothing.
        with pytest.raises(PublishError) as unbound:
            _probe(control_plane, _token(kube, namespace, None), own).patch_conditions(ready)  # type: ignore[arg-type]
        assert "this token is for no node" in str(unbound.value)

        # The policy judges only the probe's account: an administrator (and the kubelet) write as before.
        kube.patch(
            f"/api/v1/nodes/{own}/status",
            {"status": {"conditions": [_condition("Ready", "True")]}},
            content_type=STRATEGIC_MERGE_PATCH,
        )
    finally:
        kube.delete(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}", grace_period_seconds=0)
        if namespace != "confidential-pods-aesmd":
            kube.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/e2e-{namespace}")
