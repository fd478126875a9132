"""Our annotations are fixed at admission, on a real kube-apiserver (the build's ValidatingAdmissionPolicy).

An injected pod is stored through the webhook; then three users update it:

- ``e2e-user``, allowed by a Role to get, patch and update pods and ``pods/status`` in the namespace (what a
  namespace's developer or a controller has): every change, removal or addition of one of our annotations
  is refused with the policy's message — through the pod and through its status subresource, which does
  write metadata (proved below with an unrelated annotation) — and every other annotation stays editable;
- ``admin`` (``system:masters``) and ``e2e-operator`` (a ClusterRole allowing ``update`` on the virtual
  resource ``podannotations.confidential-pods.io``, as docs/install.md shows): allowed.

Runs once per overlay: alibaba and azure pods carry ``confidential-pods.io/qcnl`` (they quote in-process),
intel pods ``sgx.intel.com/epc``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.kube import JSON, JSON_PATCH, ApiError, Kube
from tests.e2e.processes import wait_until
from tests.e2e.product import Installation, apply, delete_quietly

pytestmark = pytest.mark.e2e

CONFIDENTIAL = "confidential-pods.io/confidential"
STATUS = "confidential-pods.io/status"
QCNL = "confidential-pods.io/qcnl"
INTEL_EPC = "sgx.intel.com/epc"
EPC_LIMITS = ("epc-limit.nri.io/container.app", "epc-limit.nri.io/pod", "epc-limit.nri.io")
POLICY = "confidential-pods-annotations"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
#: What docs/install.md tells an operator to bind to a group of administrators.
EDITOR_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "confidential-pods-annotation-editor"},
    "rules": [{"apiGroups": ["confidential-pods.io"], "resources": ["podannotations"], "verbs": ["update"]}],
}
TIMEOUT = 30.0


def fixed(key: str) -> str:
    """The policy's message for ``key``."""
    return (
        f"annotation {key} is fixed when the pod is admitted: only a cluster administrator "
        "(RBAC: update podannotations.confidential-pods.io) may add, change or remove it"
    )


def user_client(installation: Installation, tmp_path: Path, user: str) -> Kube:
    api = installation.plane.api
    files = api.ca.issue(tmp_path, user, common_name=user, client=True)
    return Kube(api.url, ca=api.ca.files.cert, cert=files.cert, key=files.key)


def rbac_object(kind: str, name: str, **fields: object) -> JSON:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name}, **fields}


def role_ref(kind: str, name: str) -> JSON:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}


def subject(user: str) -> JSON:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}


@pytest.fixture
def users(
    installation: Installation, kube: Kube, namespace: str, tmp_path: Path
) -> Iterator[dict[str, Kube]]:
    """``user`` and ``operator``, both allowed to update pods and their status in ``namespace``;
    ``operator`` is also bound to the annotation-editor ClusterRole. ``admin``: the system:masters client."""
    rule = {
        "apiGroups": [""],
        "resources": ["pods", "pods/status"],
        "verbs": ["get", "list", "patch", "update"],
    }
    kube.create(f"{RBAC}/namespaces/{namespace}/roles", rbac_object("Role", "pod-editor", rules=[rule]))
    editors = [subject("e2e-user"), subject("e2e-operator")]
    binding = rbac_object(
        "RoleBinding", "pod-editors", roleRef=role_ref("Role", "pod-editor"), subjects=editors
    )
    kube.create(f"{RBAC}/namespaces/{namespace}/rolebindings", binding)
    apply(kube, f"{RBAC}/clusterroles", EDITOR_ROLE)
    name = f"e2e-annotation-editor-{namespace}"
    editor = role_ref("ClusterRole", EDITOR_ROLE["metadata"]["name"])
    operator = rbac_object("ClusterRoleBinding", name, roleRef=editor, subjects=[subject("e2e-operator")])
    kube.create(f"{RBAC}/clusterrolebindings", operator)
    clients = {
        "user": user_client(installation, tmp_path, "e2e-user"),
        "operator": user_client(installation, tmp_path, "e2e-operator"),
        "admin": kube,
    }
    for client in clients.values():  # RBAC is read from informers: wait until the bindings are seen
        wait_until(lambda c=client: _can_list(c, namespace), timeout=TIMEOUT, what="the RoleBinding")
    try:
        yield clients
    finally:
        delete_quietly(kube, f"{RBAC}/clusterrolebindings/{name}")
        delete_quietly(kube, f"{RBAC}/clusterroles/{EDITOR_ROLE['metadata']['name']}")


def _can_list(client: Kube, namespace: str) -> bool:
    try:
        client.get(f"/api/v1/namespaces/{namespace}/pods")
    except ApiError as exc:
        if exc.status == 403:
            return False
        raise
    return True


def app_pod(prefix: str, annotations: dict[str, str] | None = None) -> JSON:
    metadata: JSON = {"name": f"{prefix}-{uuid.uuid4().hex[:6]}"}
    if annotations:
        metadata["annotations"] = annotations
    container = {"name": "app", "image": "registry.example.com/enclave-app:1"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {"containers": [container]}}


def injected_pod(installation: Installation, pods: Callable[..., JSON]) -> JSON:
    """An opted-in pod, stored with what the webhook wrote: its status marker, and the QCNL file's content
    (alibaba, azure: the pod quotes in-process) or Intel's pod EPC annotation (intel)."""
    annotations = {CONFIDENTIAL: "true"}
    if "dcap" in installation.settings:  # the intel overlay leaves the PCCS to the operator
        annotations |= {
            "confidential-pods.io/quote": "in-process",
            "confidential-pods.io/runtime-class": "none",
        }
    stored = pods(app_pod("enclave", annotations))
    written = stored["metadata"]["annotations"]
    assert STATUS in written
    assert (QCNL if "dcap" in installation.settings else INTEL_EPC) in written
    return stored


def ours(pod: JSON) -> dict[str, str]:
    return {
        k: v
        for k, v in pod["metadata"]["annotations"].items()
        if k.startswith("confidential-pods.io/") or k == INTEL_EPC
    }


def pod_path(pod: JSON, status: bool = False) -> str:
    path = f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}"
    return path + "/status" if status else path


def annotate(
    client: Kube, pod: JSON, key: str, value: str | None, *, status: bool = False, dry: bool = False
) -> JSON:
    """A merge patch of one annotation (None removes it), through the pod or its status subresource."""
    params = {"dryRun": "All"} if dry else None
    body = {"metadata": {"annotations": {key: value}}}
    return client.request("PATCH", pod_path(pod, status), body=body, params=params,
                          content_type="application/merge-patch+json")  # fmt: skip


def wait_policy_enforced(client: Kube, pod: JSON) -> None:
    """The apiserver loads a new policy from an informer, a moment after it is created: wait until a dry-run
    change of our marker is refused (nothing is stored meanwhile)."""

    def refused() -> bool:
        try:
            annotate(client, pod, STATUS, "{}", dry=True)
        except ApiError as exc:
            assert exc.status == 403, exc
            return True
        return False

    wait_until(refused, timeout=TIMEOUT, what=f"the apiserver to enforce {POLICY}")


def assert_refused(error: ApiError, key: str) -> None:
    assert error.status == 403, error
    assert f"ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request" in error.message
    assert fixed(key) in error.message, error.message


def test_a_user_cannot_add_change_or_remove_our_annotations(
    installation: Installation, kube: Kube, users: dict[str, Kube], pods: Callable[..., JSON]
) -> None:
    pod = injected_pod(installation, pods)
    before = ours(pod)
    user = users["user"]
    wait_policy_enforced(user, pod)
    for key in before:
        for status in (False, True):
            for value in ("{}", None):  # changed, removed
                with pytest.raises(ApiError) as refused:
                    annotate(user, pod, key, value, status=status)
                assert_refused(refused.value, key)
    # Replacing the whole object (PUT) without them, and a JSON patch removing every annotation.
    current = user.get(pod_path(pod))
    stripped = {**current, "metadata": {**current["metadata"], "annotations": {"team": "a"}}}
    with pytest.raises(ApiError) as refused:
        user.request("PUT", pod_path(pod), body=stripped)
    assert refused.value.status == 403
    with pytest.raises(ApiError) as refused:
        user.patch(pod_path(pod), [{"op": "remove", "path": "/metadata/annotations"}], JSON_PATCH)
    assert refused.value.status == 403
    assert ours(kube.get(pod_path(pod))) == before  # nothing changed

    # Adding one: a pod never injected may not gain the marker, nor the QCNL content, nor an EPC limit of the
    # sgx-epc NRI plugin (read when a sandbox is created: epcLimits: nri).
    plain = pods(app_pod("plain"))
    for key in (STATUS, QCNL, INTEL_EPC, "confidential-pods.io/anything", *EPC_LIMITS):
        for status in (False, True):
            with pytest.raises(ApiError) as refused:
                annotate(user, plain, key, "{}", status=status)
            assert_refused(refused.value, key)
    assert "annotations" not in kube.get(pod_path(plain))["metadata"]

    # Every other annotation stays editable, through the pod and through its status, which does write
    # metadata: the reason the policy matches pods/status too.
    annotate(user, pod, "team", "payments")
    annotate(user, pod, "example.com/confidential-pods.io-lookalike", "x", status=True)
    stored = kube.get(pod_path(pod))["metadata"]["annotations"]
    assert stored["team"] == "payments" and stored["example.com/confidential-pods.io-lookalike"] == "x"
    annotate(user, pod, "team", None)
    assert "team" not in kube.get(pod_path(pod))["metadata"]["annotations"]
    assert ours(kube.get(pod_path(pod))) == before


@pytest.mark.parametrize("who", ["admin", "operator"])
def test_a_cluster_administrator_can(
    installation: Installation, users: dict[str, Kube], pods: Callable[..., JSON], who: str
) -> None:
    """system:masters, and a group bound to the ClusterRole docs/install.md shows."""
    pod = injected_pod(installation, pods)
    wait_policy_enforced(users["user"], pod)
    client = users[who]
    key = QCNL if QCNL in ours(pod) else INTEL_EPC
    assert annotate(client, pod, key, "changed")["metadata"]["annotations"][key] == "changed"
    assert annotate(client, pod, STATUS, "{}", status=True)["metadata"]["annotations"][STATUS] == "{}"
    assert key not in annotate(client, pod, key, None)["metadata"]["annotations"]
