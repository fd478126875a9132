"""Attestation-ready pods: every profile x quote mode x AESM mode, the QCNL file, Pod Security.

Expected values follow docs/attestation.md (the contract): which containers get the provisioning
device, which get the quote library's configuration (a downward-API file mounted with subPath), and
where the AESM socket comes from. Every mutated pod is validated against the Kubernetes OpenAPI schema
and mutated a second time to check idempotence.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest

from confidential_pods.profiles import PROFILES
from confidential_pods.qcnl import QCNL_PATH
from confidential_pods.settings import Settings, settings_from_mapping
from tests.webhook.samples import CONFIDENTIAL, container, pod
from webhook.mounts import AESM_VOLUME, QCNL_VOLUME
from webhook.policy import STATUS, mutate

PCCS = "https://pccs.example.internal:8081/sgx/certification/v4/"
DCAP = {"pccsUrl": PCCS, "retryTimes": 3, "extra": {"pccs_api_version": "3.1"}}
QCNL_TEXT = (
    '{"pccs_url":"https://pccs.example.internal:8081/sgx/certification/v4/","use_secure_cert":true,'
    '"retry_times":3,"pccs_api_version":"3.1"}'
)
SIDECAR_IMAGE = "registry.example/aesmd:2.25"
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
}


def settings(profile: str, **keys: Any) -> Settings:
    base = {"profile": profile, "runtimeClass": "none", "aesmSidecarImage": SIDECAR_IMAGE, "dcap": DCAP}
    return settings_from_mapping({**base, **keys})


def mutated(original: dict[str, Any], config: Settings, **options: Any) -> tuple[dict[str, Any], Any]:
    before = copy.deepcopy(original)
    mutation = mutate(original, namespace_opted_in=False, settings=config, **options)
    assert original == before
    assert mutation.outcome == "mutated", mutation.message
    result = jsonpatch.apply_patch(original, [dict(op) for op in mutation.patch])
    kubernetes_validate.validate(result, "1.33.0", strict=True)
    # Idempotent: marked, no second patch; and without the marker, nothing but the marker again.
    assert mutate(result, namespace_opted_in=False, settings=config, **options).outcome == "unchanged"
    unmarked = copy.deepcopy(result)
    del unmarked["metadata"]["annotations"][STATUS]
    replay = mutate(unmarked, namespace_opted_in=False, settings=config, **options)
    assert [op["path"] for op in replay.patch] == ["/metadata/annotations/confidential-pods.io~1status"]
    return result, mutation


def containers_by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = result["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def quote_pod(quote: str | None, aesm: str | None) -> dict[str, Any]:
    annotations = dict(CONFIDENTIAL)
    if quote is not None:
        annotations["confidential-pods.io/quote"] = quote
    if aesm is not None:
        annotations["confidential-pods.io/aesm"] = aesm
    return pod(annotations=annotations)


def expected(quote: str | None, aesm: str | None) -> tuple[str, bool, bool]:
    """(socket: host/sidecar/none, app quotes in-process, the sidecar quotes) — docs/attestation.md."""
    mode = quote or "aesmd"
    socket = aesm if aesm is not None else ("host" if mode == "aesmd" else "none")
    return socket, mode == "in-process", socket == "sidecar" and mode == "aesmd"


@pytest.mark.parametrize("profile", ["alibaba", "azure", "intel"])
@pytest.mark.parametrize("quote", [None, "aesmd", "in-process", "none"])
@pytest.mark.parametrize("aesm", [None, "host", "sidecar", "none"])
def test_profile_quote_aesm_matrix(profile: str, quote: str | None, aesm: str | None) -> None:
    config = settings(profile)
    result, mutation = mutated(quote_pod(quote, aesm), config)
    socket, app_quotes, sidecar_quotes = expected(quote, aesm)
    by_name = containers_by_name(result)
    app = by_name["app"]
    provision = PROFILES[profile].provision_resource
    volumes = {v["name"]: v for v in result["spec"].get("volumes", [])}
    status = json.loads(result["metadata"]["annotations"][STATUS])
    assert (status["quote"], status["aesm"]) == (quote or "aesmd", socket)

    # The AESM socket: a hostPath (DirectoryOrCreate), an in-memory emptyDir shared with the sidecar, or none.
    if socket == "host":
        assert volumes[AESM_VOLUME]["hostPath"] == {"path": "/var/run/aesmd", "type": "DirectoryOrCreate"}
    elif socket == "sidecar":
        assert volumes[AESM_VOLUME] == {"name": AESM_VOLUME, "emptyDir": {"medium": "Memory"}}
    else:
        assert AESM_VOLUME not in volumes and "env" not in app
    if socket != "none":
        assert {"name": "SGX_AESM_ADDR", "value": "1"} in app["env"]
        # The app only connect()s: read-only. The sidecar serves the socket: writable.
        assert {"name": AESM_VOLUME, "mountPath": "/var/run/aesmd", "readOnly": True} in app["volumeMounts"]
    assert ("aesmd" in by_name) == (socket == "sidecar")
    if socket == "sidecar":
        assert {"name": AESM_VOLUME, "mountPath": "/var/run/aesmd"} in by_name["aesmd"]["volumeMounts"]

    # The provisioning device: on every container that quotes, where the profile has a resource for it.
    app_limits = app["resources"]["limits"]
    assert (provision in app_limits) == (bool(provision) and app_quotes)
    if socket == "sidecar":
        sidecar = by_name["aesmd"]
        assert sidecar["securityContext"] == RESTRICTED
        assert (provision in sidecar["resources"]["limits"]) == bool(provision)
        assert sidecar["resources"]["limits"] == sidecar["resources"]["requests"]

    # The QCNL file: a regular file (subPath of a downward-API volume) in every container that quotes.
    quoting = [name for name, does in (("app", app_quotes), ("aesmd", sidecar_quotes)) if does]
    for name, c in by_name.items():
        mounts = [m for m in c.get("volumeMounts", []) if m["name"] == QCNL_VOLUME]
        expected_mounts = [
            {
                "name": QCNL_VOLUME,
                "mountPath": QCNL_PATH,
                "subPath": "sgx_default_qcnl.conf",
                "readOnly": True,
            }
        ]
        assert mounts == (expected_mounts if name in quoting else []), name
    if quoting:
        assert result["metadata"]["annotations"]["confidential-pods.io/qcnl"] == QCNL_TEXT
        assert volumes[QCNL_VOLUME]["downwardAPI"]["items"] == [
            {
                "path": "sgx_default_qcnl.conf",
                "fieldRef": {"fieldPath": "metadata.annotations['confidential-pods.io/qcnl']"},
            }
        ]
    else:
        assert (
            QCNL_VOLUME not in volumes
            and "confidential-pods.io/qcnl" not in result["metadata"]["annotations"]
        )
    assert mutation.warnings == ()


@pytest.mark.parametrize("profile", ["alibaba", "azure", "intel"])
def test_in_process_in_a_sandbox_needs_no_sidecar(profile: str) -> None:
    # Kata/runV: the host socket cannot reach into the VM; a pod that quotes itself needs no aesmd at all.
    config = settings(profile, runtimeClass="kata", aesmSidecarImage=None)
    result, _ = mutated(quote_pod("in-process", None), config)
    by_name = containers_by_name(result)
    assert set(by_name) == {"app"} and result["spec"]["runtimeClassName"] == "kata"
    assert any(m["mountPath"] == QCNL_PATH for m in by_name["app"]["volumeMounts"])


def test_in_process_without_a_pccs_is_refused_naming_the_key() -> None:
    config = settings_from_mapping({"aesm": "host", "runtimeClass": "none"})
    mutation = mutate(quote_pod("in-process", None), namespace_opted_in=False, settings=config)
    assert mutation.outcome == "denied" and "dcap.pccsUrl" in mutation.message
    assert 'confidential-pods.io/quote: "aesmd"' in mutation.message


def test_qcnl_conf_path_is_honoured_and_a_users_own_file_kept() -> None:
    config = settings("intel")
    moved = container("app", env=[{"name": "QCNL_CONF_PATH", "value": "/opt/app/qcnl.json"}])
    own = container(
        "own",
        volumeMounts=[{"name": "mine", "mountPath": QCNL_PATH, "subPath": "q.conf"}],
        resources={"limits": {"sgx.intel.com/epc": "8Mi"}},
    )
    original = pod(
        annotations={
            **CONFIDENTIAL,
            "confidential-pods.io/quote": "in-process",
            "confidential-pods.io/containers": "app,own",
        },
        containers=[moved, own],
        volumes=[{"name": "mine", "configMap": {"name": "my-qcnl"}}],
    )
    result, mutation = mutated(original, config)
    by_name = containers_by_name(result)
    assert {
        "name": QCNL_VOLUME,
        "mountPath": "/opt/app/qcnl.json",
        "subPath": "sgx_default_qcnl.conf",
        "readOnly": True,
    } in by_name["app"]["volumeMounts"]
    assert by_name["own"]["volumeMounts"] == [{"name": "mine", "mountPath": QCNL_PATH, "subPath": "q.conf"}]
    assert mutation.warnings == (
        f"container own mounts its own {QCNL_PATH}: kept (the webhook's PCCS settings unused)",
    )


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_host_socket_refused_where_pod_security_forbids_hostpath(level: str) -> None:
    config = settings("alibaba")
    mutation = mutate(quote_pod(None, None), namespace_opted_in=False, settings=config, namespace_level=level)
    assert mutation.outcome == "denied"
    assert f'Pod Security level "{level}" forbids' in mutation.message
    assert 'confidential-pods.io/aesm: "sidecar"' in mutation.message


@pytest.mark.parametrize("level", [None, "privileged", "baseline", "restricted"])
def test_sidecar_and_in_process_pass_any_level(level: str | None) -> None:
    config = settings("intel")
    for quote, aesm in (("aesmd", "sidecar"), ("in-process", None), ("none", None)):
        result, _ = mutated(quote_pod(quote, aesm), config, namespace_level=level)
        volumes = result["spec"].get("volumes", [])
        assert not any("hostPath" in v for v in volumes)  # baseline and restricted forbid only this here


def test_root_sidecar_when_configured() -> None:
    result, _ = mutated(quote_pod("aesmd", "sidecar"), settings("alibaba", aesmSidecarUser=0))
    context = containers_by_name(result)["aesmd"]["securityContext"]
    assert context["runAsUser"] == 0 and "runAsNonRoot" not in context


def test_intel_epc_annotation_is_binary_for_kata() -> None:
    # Kata refuses "1536" or "1k" (pkg/oci/utils.go: BinarySI only): rounded up to whole KiB.
    config = settings("intel", defaultEPC="1000")
    result, _ = mutated(quote_pod("none", None), config)
    assert result["metadata"]["annotations"]["sgx.intel.com/epc"] == "1Ki"
