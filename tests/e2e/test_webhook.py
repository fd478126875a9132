"""The webhook on a real kube-apiserver: what is stored, who is (never) sent, what the client sees.

Every test runs once per overlay of manifests/ (the ``installation`` fixture: one per resource profile),
with the MutatingWebhookConfiguration, RBAC and configuration of that build (tests/e2e/product.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.kube import JSON, ApiError, Kube
from tests.e2e.product import AESM_SIDECAR_IMAGE, Installation, wait_webhook_registered

pytestmark = pytest.mark.e2e

CONFIDENTIAL = "confidential-pods.io/confidential"
EPC_ANNOTATION = "confidential-pods.io/epc"
RUNTIME_CLASS_ANNOTATION = "confidential-pods.io/runtime-class"
STATUS = "confidential-pods.io/status"
#: The webhook's own volume for the AESM socket directory (names under confidential-pods- are reserved).
SOCKET_VOLUME = "confidential-pods-aesmd-socket"
INJECTION = "confidential-pods.io/injection"

#: What each profile's device plugin wants in requests and limits, written out by hand (not computed with
#: our own code): 128Mi of EPC for the app, 8Mi for the aesmd sidecar.
APP_RESOURCES = {
    "alibaba": {"alibabacloud.com/sgx_epc_MiB": "128"},
    "azure": {"kubernetes.azure.com/sgx_epc_mem_in_MiB": "128"},
    "intel": {"sgx.intel.com/epc": "128Mi", "sgx.intel.com/enclave": "1"},
}
SIDECAR_RESOURCES = {  # the sidecar quotes: intel's plugin gives /dev/sgx_provision by its own resource
    "alibaba": {"alibabacloud.com/sgx_epc_MiB": "8"},
    "azure": {"kubernetes.azure.com/sgx_epc_mem_in_MiB": "8"},
    "intel": {"sgx.intel.com/epc": "8Mi", "sgx.intel.com/enclave": "1", "sgx.intel.com/provision": "1"},
}
DEFAULT_EPC_RESOURCES = {  # defaultEPC: 64Mi in every overlay
    "alibaba": {"alibabacloud.com/sgx_epc_MiB": "64"},
    "azure": {"kubernetes.azure.com/sgx_epc_mem_in_MiB": "64"},
    "intel": {"sgx.intel.com/epc": "64Mi", "sgx.intel.com/enclave": "1"},
}


def app_pod(name: str, annotations: dict[str, str] | None = None) -> JSON:
    metadata: JSON = {"name": name}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/enclave-app:1"}]},
    }


def container(pod: JSON, name: str, key: str = "containers") -> JSON:
    found: list[JSON] = [c for c in pod["spec"].get(key, []) if c["name"] == name]
    assert len(found) == 1, (
        f"{key} of {pod['metadata']['name']}: {[c['name'] for c in pod['spec'].get(key, [])]}"
    )
    return found[0]


def volume(pod: JSON, name: str) -> JSON:
    found: list[JSON] = [v for v in pod["spec"].get("volumes", []) if v["name"] == name]
    assert len(found) == 1, f"volumes of {pod['metadata']['name']}: {pod['spec'].get('volumes')}"
    return found[0]


def assert_epc(resources: JSON, expected: dict[str, str]) -> None:
    """``expected`` is in both requests and limits (extended resources need them equal)."""
    for side in ("requests", "limits"):
        got = {k: v for k, v in resources.get(side, {}).items() if k in expected}
        assert got == expected, f"{side}: {resources}"


def runtime_class_overhead(kube: Kube, name: str) -> dict[str, str]:
    overhead: dict[str, str] = kube.get(f"/apis/node.k8s.io/v1/runtimeclasses/{name}")["overhead"]["podFixed"]
    return overhead


def assert_not_mutated(stored: JSON) -> None:
    assert STATUS not in stored["metadata"].get("annotations", {})
    assert stored["spec"]["schedulerName"] == "default-scheduler"
    assert "runtimeClassName" not in stored["spec"]
    for each in stored["spec"]["containers"]:
        assert not each.get("resources"), each


def test_annotated_pod_is_stored_with_everything_injected(
    installation: Installation, kube: Kube, namespace: str, pods: Callable[..., JSON]
) -> None:
    """The overlay's defaults, as the apiserver stores them (patch applied, in-tree admission re-run)."""
    profile = installation.profile.name
    settings = installation.settings
    stored = pods(app_pod("enclave", {CONFIDENTIAL: "true", EPC_ANNOTATION: "128Mi"}))

    app = container(stored, "app")
    assert_epc(app["resources"], APP_RESOURCES[profile])
    # read-only: the app only connect()s to the socket (the aesmd that serves it mounts it writable)
    assert [m.get("readOnly") for m in app["volumeMounts"] if m["name"] == SOCKET_VOLUME] == [True]
    assert any(m["name"] == SOCKET_VOLUME and m["mountPath"] == "/var/run/aesmd" for m in app["volumeMounts"])
    assert {"name": "SGX_AESM_ADDR", "value": "1"} in app["env"]

    runtime_class = settings["runtimeClass"]
    if runtime_class == "none":
        # Not sandboxed: the host's AESM socket, no RuntimeClass, no overhead.
        assert volume(stored, SOCKET_VOLUME)["hostPath"] == {
            "path": settings["aesmHostPath"],
            "type": "DirectoryOrCreate",
        }
        assert "runtimeClassName" not in stored["spec"]
        assert "overhead" not in stored["spec"]
        assert "initContainers" not in stored["spec"]
    else:
        # Sandboxed (alibaba: runv): an aesmd native sidecar on a shared in-memory socket directory, and the
        # overhead the RuntimeClass admission plugin sets when it re-runs after the webhook.
        assert stored["spec"]["runtimeClassName"] == runtime_class
        assert stored["spec"]["overhead"] == runtime_class_overhead(kube, runtime_class)
        assert volume(stored, SOCKET_VOLUME)["emptyDir"] == {"medium": "Memory"}
        aesmd = container(stored, "aesmd", "initContainers")
        assert aesmd["restartPolicy"] == "Always"
        assert aesmd["image"] == AESM_SIDECAR_IMAGE
        assert [m.get("readOnly") for m in aesmd["volumeMounts"] if m["name"] == SOCKET_VOLUME] == [None]
        assert_epc(aesmd["resources"], SIDECAR_RESOURCES[profile])

    assert stored["spec"]["schedulerName"] == "confidential-scheduler"
    for toleration in settings["tolerations"]:
        assert toleration in stored["spec"]["tolerations"]
    assert stored["metadata"]["annotations"][STATUS]
    if profile == "intel":
        assert stored["metadata"]["annotations"]["sgx.intel.com/epc"] == "128Mi"


def test_sandboxed_pod_gets_the_runtime_class_overhead(
    installation: Installation, kube: Kube, namespace: str, pods: Callable[..., JSON]
) -> None:
    """The webhook sets a RuntimeClass; the in-tree RuntimeClass plugin, re-run after it, adds overhead."""
    profile = installation.profile.name
    before = installation.webhook.reviews()
    stored = pods(
        app_pod(
            "kata", {CONFIDENTIAL: "true", EPC_ANNOTATION: "128Mi", RUNTIME_CLASS_ANNOTATION: "kata-qemu"}
        )
    )
    # Called once: the in-tree plugins re-run after our patch, our webhook is not called again
    # (reinvocationPolicy: Never; a second call could only see the status marker).
    assert installation.webhook.reviews() == before + 1
    assert stored["spec"]["runtimeClassName"] == "kata-qemu"
    assert (
        stored["spec"]["overhead"]
        == runtime_class_overhead(kube, "kata-qemu")
        == {
            "cpu": "250m",
            "memory": "160Mi",
        }
    )
    # The RuntimeClass's scheduling.nodeSelector is merged in by the same plugin.
    assert stored["spec"]["nodeSelector"] == {"katacontainers.io/kata-runtime": "true"}
    aesmd = container(stored, "aesmd", "initContainers")
    assert aesmd["image"] == AESM_SIDECAR_IMAGE
    assert_epc(aesmd["resources"], SIDECAR_RESOURCES[profile])
    assert_epc(container(stored, "app")["resources"], APP_RESOURCES[profile])
    assert volume(stored, SOCKET_VOLUME)["emptyDir"] == {"medium": "Memory"}


def test_enabled_namespace_injects_every_pod_but_the_opted_out(
    installation: Installation, make_namespace: Callable[..., str], pods: Callable[..., JSON]
) -> None:
    profile = installation.profile.name
    enabled = make_namespace({INJECTION: "enabled"})
    before = installation.webhook.reviews(endpoint="/mutate/namespace")

    plain = pods(app_pod("plain"), namespace=enabled)
    assert plain["metadata"]["annotations"][STATUS]
    assert_epc(container(plain, "app")["resources"], DEFAULT_EPC_RESOURCES[profile])
    assert plain["spec"]["schedulerName"] == "confidential-scheduler"

    sent = installation.webhook.reviews(endpoint="/mutate/namespace")
    assert sent > before

    # An opt-out is not even sent (the namespace entry's matchCondition), so it never depends on the webhook.
    opted_out = pods(app_pod("opted-out", {CONFIDENTIAL: "false"}), namespace=enabled)
    assert_not_mutated(opted_out)
    assert installation.webhook.reviews(endpoint="/mutate/namespace") == sent

    # A misspelt value is sent, and refused with a message (never silently left unmutated).
    with pytest.raises(ApiError) as refused:
        pods(app_pod("misspelt", {CONFIDENTIAL: "True"}), namespace=enabled)
    assert 'admission webhook "namespace.confidential-pods.io" denied the request' in refused.value.message
    assert CONFIDENTIAL in refused.value.message


def test_disabled_namespace_and_kube_system_are_never_sent(
    installation: Installation, make_namespace: Callable[..., str], namespace: str, pods: Callable[..., JSON]
) -> None:
    """Proven with the webhook's own request counter: the apiserver never calls it for these pods."""
    disabled = make_namespace({INJECTION: "disabled"})
    before = installation.webhook.reviews()

    in_disabled = pods(app_pod("annotated", {CONFIDENTIAL: "true"}), namespace=disabled)
    misspelt_in_disabled = pods(app_pod("misspelt", {CONFIDENTIAL: "yes"}), namespace=disabled)
    in_kube_system = pods(app_pod(f"annotated-{namespace}", {CONFIDENTIAL: "true"}), namespace="kube-system")
    not_annotated = pods(app_pod("not-annotated"))
    opted_out = pods(app_pod("opted-out", {CONFIDENTIAL: "false"}))

    for stored in (in_disabled, misspelt_in_disabled, in_kube_system, not_annotated, opted_out):
        assert_not_mutated(stored)
    assert installation.webhook.reviews() == before

    # The counter does count what is sent: an annotated pod in an ordinary namespace.
    assert pods(app_pod("sent", {CONFIDENTIAL: "true"}))["metadata"]["annotations"][STATUS]
    assert installation.webhook.reviews() > before


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({EPC_ANNOTATION: "lots"}, f"annotation {EPC_ANNOTATION}='lots' is not a Kubernetes quantity"),
        ({EPC_ANNOTATION: "64Gi"}, f"annotation {EPC_ANNOTATION}='64Gi' is more than the maximum of 4Gi"),
        ({"confidential-pods.io/aesm": "socket"}, "confidential-pods.io/aesm"),
    ],
)
def test_bad_annotation_is_refused_with_our_message(
    installation: Installation,
    namespace: str,
    pods: Callable[..., JSON],
    annotations: dict[str, str],
    message: str,
) -> None:
    with pytest.raises(ApiError) as refused:
        pods(app_pod("bad", {CONFIDENTIAL: "true", **annotations}))
    assert refused.value.status == 403
    assert 'admission webhook "pod.confidential-pods.io" denied the request' in refused.value.message
    assert message in refused.value.message


def test_webhook_down_refuses_only_opted_in_pods(
    installation: Installation,
    kube: Kube,
    make_namespace: Callable[..., str],
    namespace: str,
    pods: Callable[..., JSON],
) -> None:
    """failurePolicy Fail, scoped by namespaceSelector and matchConditions: only opted-in pods wait for us."""
    enabled = make_namespace({INJECTION: "enabled"})
    disabled = make_namespace({INJECTION: "disabled"})
    installation.webhook.stop()
    try:
        refused: list[Any] = []
        for name, target in (("annotated", namespace), ("in-enabled", enabled)):
            annotations = {CONFIDENTIAL: "true"} if name == "annotated" else None
            with pytest.raises(ApiError) as error:
                pods(app_pod(name, annotations), namespace=target)
            refused.append(error.value)
        for error in refused:
            assert error.status == 500
            assert "failed calling webhook" in error.message
            assert "confidential-pods.io" in error.message

        # Everything else is created, untouched: no dependency on the webhook being up.
        created = [
            pods(app_pod("plain")),
            pods(app_pod("opted-out", {CONFIDENTIAL: "false"})),
            pods(app_pod("opted-out", {CONFIDENTIAL: "false"}), namespace=enabled),
            pods(app_pod("annotated", {CONFIDENTIAL: "true"}), namespace=disabled),
            pods(app_pod(f"system-{namespace}", {CONFIDENTIAL: "true"}), namespace="kube-system"),
        ]
        for stored in created:
            assert_not_mutated(stored)
    finally:
        installation.webhook.start()
        wait_webhook_registered(kube, namespace)
