"""Drop-in for Intel's SGX admission webhook: Intel's own e2e cases and deployments through ``inject``.

Sources (intel/intel-device-plugins-for-kubernetes at 94a91bc9, 2026-06-15):
test/e2e/sgxadmissionwebhook/sgxaadmissionwebhook.go (the cases and what they assert),
pkg/webhooks/sgx/sgx.go (what Intel's webhook does: enclave 1 on every EPC container, provision on the
container the ``sgx.intel.com/quote-provider`` annotation names, the ``aesmd-socket`` volume as an
in-memory emptyDir for an aesmd sidecar or a hostPath DirectoryOrCreate, ``SGX_AESM_ADDR=1``, the pod
annotation ``sgx.intel.com/epc`` = the sum in binary units), deployments/sgx_aesmd (the aesmd DaemonSet)
and deployments/sgx_enclave_apps (the quote sample overlays). Our webhook's additions (scheduler name,
tolerations, our status marker) are left aside: the comparison is on resources, volume types, env and
the EPC annotation. Our socket volume is named ``confidential-pods-aesmd-socket`` (the webhook never takes a
pod's own volume for it by name) and mounted read-only but in the ``aesmd`` container, which serves the
socket; where a pod mounts its own socket directory (Intel's "volumes and mounts only once" case) that mount
is kept and nothing is added twice.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from confidential_pods.settings import settings_from_mapping
from webhook.mounts import AESM_VOLUME
from webhook.offline import inject_documents

INTEL = settings_from_mapping({"profile": "intel", "runtimeClass": "none", "aesm": "host"})
EPC, ENCLAVE, PROVISION = "sgx.intel.com/epc", "sgx.intel.com/enclave", "sgx.intel.com/provision"


def intel_e2e_pod(names: list[str], quote_provider: str, volumes: list[Any] | None = None) -> dict[str, Any]:
    """createPodSpec: each container pause with requests = limits ``sgx.intel.com/epc: 1Mi``."""
    containers = [
        {
            "name": name,
            "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {EPC: "1Mi"}, "limits": {EPC: "1Mi"}},
        }
        for name in names
    ]
    spec: dict[str, Any] = {"containers": containers, "automountServiceAccountToken": False}
    if volumes is not None:
        spec["volumes"] = volumes
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "webhook-tester-pod",
            "annotations": {"sgx.intel.com/quote-provider": quote_provider},
        },
        "spec": spec,
    }


def inject_one(document: dict[str, Any]) -> dict[str, Any]:
    injected = inject_documents([document], INTEL, namespace_opted_in=True)
    (result,) = injected.documents
    return result  # type: ignore[no-any-return]


def pod_spec(result: dict[str, Any]) -> dict[str, Any]:
    return result["spec"] if result["kind"] == "Pod" else result["spec"]["template"]["spec"]


def template_metadata(result: dict[str, Any]) -> dict[str, Any]:
    return result["metadata"] if result["kind"] == "Pod" else result["spec"]["template"]["metadata"]


# (case, containers, quote-provider, preset volume, {container: (has provision)}, volume kind, EPC annotation)
CASES = [
    ("no quote generation", ["test"], "", None, {"test": False}, None, "1Mi"),
    ("quote generation libraries", ["test"], "test", None, {"test": True}, None, "1Mi"),
    ("aesmd side-car", ["test", "aesmd"], "aesmd", None, {"test": False, "aesmd": True}, "emptyDir", "2Mi"),
    ("host/daemonset aesmd", ["test"], "aesmd", None, {"test": False}, "hostPath", "1Mi"),
    (
        "three containers, host aesmd",
        ["test1", "test2", "test3"],
        "aesmd",
        None,
        {"test1": False, "test2": False, "test3": False},
        "hostPath",
        "3Mi",
    ),
    (
        "volumes and mounts only once",
        ["test"],
        "aesmd",
        [{"name": "aesmd-socket", "emptyDir": {"medium": "Memory"}}],
        {"test": False},
        "emptyDir",
        "1Mi",
    ),
]


@pytest.mark.parametrize(
    ("names", "provider", "volumes", "provision", "volume_kind", "annotation"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_intel_e2e_cases(
    names: list[str],
    provider: str,
    volumes: list[Any] | None,
    provision: dict[str, bool],
    volume_kind: str | None,
    annotation: str,
) -> None:
    original = intel_e2e_pod(names, provider, volumes)
    if volumes is not None:  # the case pre-sets the mount too
        original["spec"]["containers"][0]["volumeMounts"] = [
            {"name": "aesmd-socket", "mountPath": "/var/run/aesmd"}
        ]
    result = inject_one(original)
    kubernetes_validate.validate(result, "1.33.0", strict=True)
    spec = result["spec"]
    for c in spec["containers"]:
        for side in ("limits", "requests"):
            resources = c["resources"][side]
            assert resources[ENCLAVE] == "1" and resources[EPC] == "1Mi"
            assert (PROVISION in resources) == provision[c["name"]], (c["name"], side)
            if provision[c["name"]]:
                assert resources[PROVISION] == "1"
    volumes_out = spec.get("volumes", [])
    socket_volume = volumes[0]["name"] if volumes else AESM_VOLUME  # the pod's own, kept, or ours
    if volume_kind is None:
        assert volumes_out == [] and all("env" not in c for c in spec["containers"])
    else:
        assert len(volumes_out) == 1 and volumes_out[0]["name"] == socket_volume
        assert volume_kind in volumes_out[0]
        if volume_kind == "hostPath":
            assert volumes_out[0]["hostPath"] == {"path": "/var/run/aesmd", "type": "DirectoryOrCreate"}
        else:
            assert volumes_out[0]["emptyDir"] == {"medium": "Memory"}
        for c in spec["containers"]:
            assert [m["name"] for m in c["volumeMounts"]] == [socket_volume]
            assert c["volumeMounts"][0]["mountPath"] == "/var/run/aesmd"
            if volumes is None:  # ours: read-only but in the aesmd container, which creates the socket
                assert c["volumeMounts"][0].get("readOnly", False) is (c["name"] != "aesmd"), c["name"]
            assert c["env"][0] == {"name": "SGX_AESM_ADDR", "value": "1"}
    assert result["metadata"]["annotations"][EPC] == annotation


AESMD_DAEMONSET = {  # deployments/sgx_aesmd/base/intel-sgx-aesmd.yaml
    "apiVersion": "apps/v1",
    "kind": "DaemonSet",
    "metadata": {"name": "intel-sgx-aesmd", "labels": {"app": "intel-sgx-aesmd"}},
    "spec": {
        "selector": {"matchLabels": {"app": "intel-sgx-aesmd"}},
        "template": {
            "metadata": {
                "labels": {"app": "intel-sgx-aesmd"},
                "annotations": {"sgx.intel.com/quote-provider": "aesmd"},
            },
            "spec": {
                "containers": [
                    {
                        "name": "aesmd",
                        "image": "intel/sgx-aesmd-demo:devel",
                        "securityContext": {
                            "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False,
                        },
                        "resources": {"limits": {EPC: "1Mi"}},
                        "imagePullPolicy": "IfNotPresent",
                        "volumeMounts": [
                            {"name": "aesmdconf", "mountPath": "/etc/aesmd.conf", "subPath": "aesmd.conf"},
                            {
                                "name": "qplconf",
                                "mountPath": "/etc/sgx_default_qcnl.conf",
                                "subPath": "sgx_default_qcnl.conf",
                            },
                        ],
                    }
                ],
                "volumes": [
                    {
                        "name": "aesmdconf",
                        "configMap": {
                            "name": "sgx-attestation-conf",
                            "items": [{"key": "aesmd.conf", "path": "aesmd.conf"}],
                        },
                    },
                    {
                        "name": "qplconf",
                        "configMap": {
                            "name": "sgx-attestation-conf",
                            "items": [{"key": "sgx_default_qcnl.conf", "path": "sgx_default_qcnl.conf"}],
                        },
                    },
                ],
            },
        },
    },
}


def test_intel_aesmd_daemonset_gets_what_intels_webhook_gives_it() -> None:
    # Intel's aesmd DaemonSet ships without the socket volume: the webhook adds it (a hostPath: the
    # aesmd container is the only EPC container, so it is not a sidecar) and provision (it is the provider).
    result = inject_one(AESMD_DAEMONSET)
    kubernetes_validate.validate(result, "1.33.0", strict=True)
    spec = pod_spec(result)
    (aesmd,) = spec["containers"]
    assert aesmd["resources"]["limits"] == {EPC: "1Mi", ENCLAVE: "1", PROVISION: "1"}
    assert aesmd["resources"]["requests"] == aesmd["resources"]["limits"]
    # writable: this aesmd creates the node's socket (every other container mounts the directory read-only)
    assert {"name": AESM_VOLUME, "mountPath": "/var/run/aesmd"} in aesmd["volumeMounts"]
    assert aesmd["env"] == [{"name": "SGX_AESM_ADDR", "value": "1"}]
    socket = next(v for v in spec["volumes"] if v["name"] == AESM_VOLUME)
    assert socket["hostPath"] == {"path": "/var/run/aesmd", "type": "DirectoryOrCreate"}
    assert template_metadata(result)["annotations"][EPC] == "1Mi"


def enclave_job(quote_provider: str, in_process: bool) -> dict[str, Any]:
    """deployments/sgx_enclave_apps base Job with an overlay's pod annotation (and the in-proc mount)."""
    container: dict[str, Any] = {
        "name": "intelsgx-demo-job-1",
        "image": "intel/sgx-sdk-demo:devel",
        "workingDir": "/opt/intel/sgx-quote-generation/",
        "command": ["sgx-quote-generation"],
        "securityContext": {"allowPrivilegeEscalation": False},
        "resources": {"limits": {EPC: "512Ki"}},
    }
    volumes: list[Any] = []
    if in_process:
        container["command"] = ["/opt/intel/run-dcap-flow"]
        container["volumeMounts"] = [
            {"name": "qplconf", "mountPath": "/etc/sgx_default_qcnl.conf", "subPath": "sgx_default_qcnl.conf"}
        ]
        volumes = [{"name": "qplconf", "configMap": {"name": "sgx-attestation-conf"}}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "intelsgx-demo-job"},
        "spec": {
            "template": {
                "metadata": {"annotations": {"sgx.intel.com/quote-provider": quote_provider}},
                "spec": {"containers": [container], "restartPolicy": "Never", "volumes": volumes},
            }
        },
    }


def test_sgx_ecdsa_aesmd_quote_overlay() -> None:
    result = inject_one(enclave_job("aesmd", in_process=False))
    spec = pod_spec(result)
    (c,) = spec["containers"]
    assert c["resources"]["limits"] == {EPC: "512Ki", ENCLAVE: "1"}
    assert c["env"] == [{"name": "SGX_AESM_ADDR", "value": "1"}]
    assert spec["volumes"][0]["hostPath"]["type"] == "DirectoryOrCreate"
    assert template_metadata(result)["annotations"][EPC] == "512Ki"


def test_sgx_ecdsa_inproc_quote_overlay() -> None:
    result = inject_one(enclave_job("intelsgx-demo-job-1", in_process=True))
    spec = pod_spec(result)
    (c,) = spec["containers"]
    assert c["resources"]["limits"] == {EPC: "512Ki", ENCLAVE: "1", PROVISION: "1"}
    assert "env" not in c and [v["name"] for v in spec["volumes"]] == ["qplconf"]  # no socket in-process
    assert c["volumeMounts"][0]["name"] == "qplconf"  # the sample's own QCNL file is kept
    assert template_metadata(result)["annotations"][EPC] == "512Ki"


def test_inproc_overlay_with_our_pccs_keeps_the_samples_file_and_says_so() -> None:
    config = settings_from_mapping(
        {
            "profile": "intel",
            "runtimeClass": "none",
            "dcap": {"pccsUrl": "https://pccs.internal:8081/sgx/certification/v4/"},
        }
    )
    injected = inject_documents(
        [enclave_job("intelsgx-demo-job-1", in_process=True)], config, namespace_opted_in=True
    )
    assert any("mounts its own /etc/sgx_default_qcnl.conf: kept" in w for w in injected.warnings)
