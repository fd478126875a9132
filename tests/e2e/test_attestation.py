"""Attestation on the real control plane: Pod Security admission after our patch, the QCNL file, aesmd.

With the PodSecurity admission plugin on (kube-apiserver's default): a sandboxed opted-in pod with its
aesmd sidecar is admitted in a namespace enforcing "restricted", a host-mode pod there is refused with
our message (the overlays let the webhook read the namespace's level: components/pod-security-lookup),
the quote library's configuration is stored as a downward-API file mounted with subPath (what the
kubelet turns into a regular file), and the aesmd component applies server-side.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from confidential_pods.qcnl import read_dcap, render
from tests.e2e.kube import JSON, ApiError, Kube
from tests.e2e.product import AESM_SIDECAR_IMAGE, Installation, Overlay, delete_quietly

pytestmark = pytest.mark.e2e

RESTRICTED_LABELS = {"pod-security.kubernetes.io/enforce": "restricted"}
#: A container the "restricted" level admits (policy/check_*.go of pod-security-admission).
RESTRICTED_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
APPLY_PATCH = "application/apply-patch+yaml"


def restricted_pod(name: str, annotations: dict[str, str]) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "annotations": {"confidential-pods.io/confidential": "true", **annotations},
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/enclave-app:1",
                    "securityContext": RESTRICTED_CONTEXT,
                }
            ]
        },
    }


def test_restricted_namespace_admits_the_sandboxed_pod_and_its_sidecar(
    installation: Installation, kube: Kube, make_namespace: Callable[..., str], pods: Callable[..., JSON]
) -> None:
    namespace = make_namespace(RESTRICTED_LABELS)
    stored = pods(
        restricted_pod("kata", {"confidential-pods.io/runtime-class": "kata-qemu"}), namespace=namespace
    )
    (sidecar,) = stored["spec"]["initContainers"]
    assert sidecar["name"] == "aesmd" and sidecar["image"] == AESM_SIDECAR_IMAGE
    assert sidecar["securityContext"]["runAsNonRoot"] is True
    assert not any("hostPath" in v for v in stored["spec"]["volumes"])


def test_restricted_namespace_refuses_host_mode_with_our_message(
    installation: Installation, kube: Kube, make_namespace: Callable[..., str]
) -> None:
    namespace = make_namespace(RESTRICTED_LABELS)
    pod = restricted_pod(
        "host-mode", {"confidential-pods.io/runtime-class": "none", "confidential-pods.io/aesm": "host"}
    )
    with pytest.raises(ApiError) as refused:
        kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    message = refused.value.message
    assert 'Pod Security level "restricted" forbids' in message, message
    assert "confidential-pods.io/aesm" in message and "violates PodSecurity" not in message


def test_in_process_pod_gets_the_qcnl_file(
    installation: Installation, kube: Kube, namespace: str, pods: Callable[..., JSON]
) -> None:
    settings = installation.settings
    pod = restricted_pod(
        "quotes", {"confidential-pods.io/runtime-class": "none", "confidential-pods.io/quote": "in-process"}
    )
    if "dcap" not in settings:  # the intel overlay: the operator sets the PCCS; until then, our refusal
        with pytest.raises(ApiError) as refused:
            kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)
        assert "dcap.pccsUrl" in refused.value.message
        return
    stored = pods(pod)
    expected_text = render(read_dcap("dcap", settings["dcap"]))
    annotations = stored["metadata"]["annotations"]
    assert annotations["confidential-pods.io/qcnl"] == expected_text
    assert json.loads(expected_text)["pccs_url"] == settings["dcap"]["pccsUrl"]
    (source,) = [v for v in stored["spec"]["volumes"] if v["name"] == "confidential-pods-qcnl"]
    assert source["downwardAPI"]["items"] == [
        {
            "path": "sgx_default_qcnl.conf",
            "fieldRef": {
                "apiVersion": "v1",
                "fieldPath": "metadata.annotations['confidential-pods.io/qcnl']",
            },
        }
    ]
    (app,) = stored["spec"]["containers"]
    assert {
        "name": "confidential-pods-qcnl",
        "mountPath": "/etc/sgx_default_qcnl.conf",
        "subPath": "sgx_default_qcnl.conf",
        "readOnly": True,
    } in app["volumeMounts"]
    assert "env" not in app  # in-process: no AESM socket
    provision = installation.profile.provision_resource
    if provision:
        assert app["resources"]["limits"][provision] == app["resources"]["requests"][provision] == "1"


def test_aesmd_component_applies_server_side(kube: Kube) -> None:
    """The intel overlay's aesmd objects (its namespace, config copy, DaemonSet, the node probe's
    ServiceAccount), applied server-side."""
    objects = [
        o
        for o in Overlay.build("intel").objects
        if o["metadata"].get("namespace") == "confidential-pods-aesmd"
        or o["metadata"]["name"] == "confidential-pods-aesmd"
    ]
    kinds = {
        "Namespace": "/api/v1/namespaces",
        "ConfigMap": "/api/v1/namespaces/confidential-pods-aesmd/configmaps",
        "ServiceAccount": "/api/v1/namespaces/confidential-pods-aesmd/serviceaccounts",
        "DaemonSet": "/apis/apps/v1/namespaces/confidential-pods-aesmd/daemonsets",
    }
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "DaemonSet", "Namespace", "ServiceAccount"]
    applied: list[str] = []
    try:
        for obj in sorted(objects, key=lambda o: list(kinds).index(o["kind"])):
            path = f"{kinds[obj['kind']]}/{obj['metadata']['name']}"
            stored = kube.request(
                "PATCH",
                path,
                body=obj,
                content_type=APPLY_PATCH,
                params={"fieldManager": "e2e", "force": "true"},
            )
            applied.append(path)
            assert stored["metadata"]["name"] == obj["metadata"]["name"]
        daemonset = kube.get(applied[-1])
        volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
        assert volumes["aesmd-socket"]["hostPath"]["type"] == "DirectoryOrCreate"
    finally:
        for path in reversed(applied[1:]):  # namespaces never finish deleting here: keep it
            delete_quietly(kube, path)
