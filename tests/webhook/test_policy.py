"""Policy table: pod in → pod out (patch applied with jsonpatch), denials, idempotence, schema."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import jsonpointer
import kubernetes_validate
import pytest

from confidential_pods.settings import Settings, settings_from_mapping
from tests.webhook.samples import CONFIDENTIAL, container, pod, realistic_pod
from webhook.mounts import AESM_VOLUME
from webhook.patching import escape, pointer
from webhook.policy import STATUS, mutate

KUBERNETES_VERSION = "1.33.0"
ALI = "alibabacloud.com~1sgx_epc_MiB"
INTEL = "sgx.intel.com~1epc"
ENCLAVE = "sgx.intel.com~1enclave"
AZURE = "kubernetes.azure.com~1sgx_epc_mem_in_MiB"
HOST = {"aesm": "host", "runtimeClass": "none"}
#: A sandbox RuntimeClass with its aesmd sidecar image (the defaults leave the runtime alone).
SIDECAR = {"runtimeClass": "kata", "aesmSidecarImage": "registry.example/aesmd:2.25"}
ABSENT = object()
LIMIT_APP = "/metadata/annotations/epc-limit.nri.io~1container.app"


def settings(**keys: Any) -> Settings:
    return settings_from_mapping(keys)


def c0(path: str) -> str:
    return "/spec/containers/0/" + path


# (id, settings, pod, namespace_opted_in, {json pointer: value or ABSENT}, warning substrings)
MUTATED: list[tuple[str, dict[str, Any], dict[str, Any], bool, dict[str, Any], list[str]]] = [
    (
        "minimal-host-socket",
        HOST,
        pod(annotations=CONFIDENTIAL),
        False,
        {
            c0(f"resources/requests/{ALI}"): "64",
            c0(f"resources/limits/{ALI}"): "64",
            # read-only: the app only connect()s; it cannot unlink or replace the node's socket
            c0("volumeMounts"): [{"name": AESM_VOLUME, "mountPath": "/var/run/aesmd", "readOnly": True}],
            c0("env"): [{"name": "SGX_AESM_ADDR", "value": "1"}],
            "/spec/volumes": [
                # DirectoryOrCreate (the attestation issue): the aesmd pod may create it on a fresh node
                {"name": AESM_VOLUME, "hostPath": {"path": "/var/run/aesmd", "type": "DirectoryOrCreate"}}
            ],
            "/spec/runtimeClassName": ABSENT,
            "/spec/schedulerName": ABSENT,
        },
        [],
    ),
    (
        "kata-sidecar",
        SIDECAR,
        pod(annotations=CONFIDENTIAL),
        False,
        {
            "/spec/runtimeClassName": "kata",
            "/spec/initContainers/0/name": "aesmd",
            "/spec/initContainers/0/image": "registry.example/aesmd:2.25",
            "/spec/initContainers/0/restartPolicy": "Always",
            f"/spec/initContainers/0/resources/requests/{ALI}": "8",
            f"/spec/initContainers/0/resources/limits/{ALI}": "8",
            # the sidecar serves the socket: its mount is writable
            "/spec/initContainers/0/volumeMounts/0": {"name": AESM_VOLUME, "mountPath": "/var/run/aesmd"},
            "/spec/volumes": [{"name": AESM_VOLUME, "emptyDir": {"medium": "Memory"}}],
            c0("volumeMounts/0"): {"name": AESM_VOLUME, "mountPath": "/var/run/aesmd", "readOnly": True},
            c0(f"resources/limits/{ALI}"): "64",
        },
        [],
    ),
    (
        "namespace-opt-in-without-annotations",
        HOST,
        pod(),
        True,
        {c0(f"resources/limits/{ALI}"): "64", "/metadata/annotations/confidential-pods.io~1status": ...},
        [],
    ),
    (
        "epc-annotation-and-per-container-override",
        HOST,
        pod(
            annotations={
                **CONFIDENTIAL,
                "confidential-pods.io/epc": "128Mi",
                "confidential-pods.io/epc.worker": "1Gi",
            },
            containers=[container("app"), container("worker")],
        ),
        False,
        {
            c0(f"resources/requests/{ALI}"): "128",
            f"/spec/containers/1/resources/limits/{ALI}": "1024",
            f"/spec/containers/1/resources/requests/{ALI}": "1024",
        },
        [],
    ),
    (
        "containers-annotation-init-and-native-sidecar",
        SIDECAR,
        pod(
            annotations={
                **CONFIDENTIAL,
                "confidential-pods.io/containers": "attest, tunnel",
                "confidential-pods.io/epc.tunnel": "32Mi",
            },
            containers=[container("app")],
            init=[container("attest"), container("tunnel", restartPolicy="Always")],
        ),
        False,
        {
            # the aesmd sidecar goes first so it runs before the enclave init container
            "/spec/initContainers/0/name": "aesmd",
            "/spec/initContainers/1/name": "attest",
            f"/spec/initContainers/1/resources/limits/{ALI}": "64",
            "/spec/initContainers/2/restartPolicy": "Always",
            f"/spec/initContainers/2/resources/limits/{ALI}": "32",
            "/spec/initContainers/2/env": [{"name": "SGX_AESM_ADDR", "value": "1"}],
            c0("resources"): ABSENT,
            c0("env"): ABSENT,
        },
        [],
    ),
    (
        "existing-resource-kept-and-completed",
        HOST,
        pod(
            annotations=CONFIDENTIAL,
            containers=[
                container("app", resources={"limits": {"alibabacloud.com/sgx_epc_MiB": "256", "cpu": "1"}})
            ],
        ),
        False,
        {
            c0(f"resources/requests/{ALI}"): "256",
            c0(f"resources/limits/{ALI}"): "256",
            c0("resources/limits/cpu"): "1",
        },
        [],
    ),
    (
        # The pod's own mount at /var/run/aesmd is its choice: kept (with a warning), and no socket volume
        # is added for nobody; a volume of its own named like the webhook's old one is just its volume.
        "own-socket-mount-kept-env-not-duplicated",
        HOST,
        pod(
            annotations=CONFIDENTIAL,
            containers=[
                container(
                    "app",
                    env=[{"name": "SGX_AESM_ADDR", "value": "1"}, {"name": "A", "value": "b"}],
                    volumeMounts=[{"name": "aesm", "mountPath": "/var/run/aesmd"}],
                )
            ],
            volumes=[
                {"name": "aesmd-socket", "hostPath": {"path": "/custom/aesmd"}},
                {"name": "aesm", "emptyDir": {}},
            ],
        ),
        False,
        {
            c0("env"): [{"name": "SGX_AESM_ADDR", "value": "1"}, {"name": "A", "value": "b"}],
            c0("volumeMounts"): [{"name": "aesm", "mountPath": "/var/run/aesmd"}],
            "/spec/volumes/0": {"name": "aesmd-socket", "hostPath": {"path": "/custom/aesmd"}},
            "/spec/volumes/2": ABSENT,
        },
        ["container app mounts its own /var/run/aesmd: kept (the webhook's AESM socket unused)"],
    ),
    (
        "intel-profile",
        {**HOST, "profile": "intel"},
        pod(
            annotations={**CONFIDENTIAL, "confidential-pods.io/epc": "96Mi"},
            containers=[container("a"), container("b")],
        ),
        False,
        {
            c0(f"resources/requests/{INTEL}"): "96Mi",
            c0(f"resources/limits/{ENCLAVE}"): "1",
            f"/spec/containers/1/resources/requests/{ENCLAVE}": "1",
            f"/metadata/annotations/{INTEL}": "192Mi",
        },
        [],
    ),
    (
        "azure-profile-rounds-up-with-warning",
        {**HOST, "profile": "azure"},
        pod(annotations={**CONFIDENTIAL, "confidential-pods.io/epc": "100M"}),
        False,
        {c0(f"resources/limits/{AZURE}"): "96", c0(f"resources/requests/{AZURE}"): "96"},
        ["rounded up to 96Mi"],
    ),
    (
        "user-runtime-class-kept-not-sandbox",
        {"aesm": "host"},
        pod(annotations=CONFIDENTIAL, runtimeClassName="gvisor-off"),
        False,
        {"/spec/runtimeClassName": "gvisor-off", "/spec/volumes/0/hostPath/path": "/var/run/aesmd"},
        [],
    ),
    (
        "runtime-class-annotation-runv-gets-sidecar",
        {**SIDECAR, "runtimeClass": "none"},
        pod(annotations={**CONFIDENTIAL, "confidential-pods.io/runtime-class": "runv"}),
        False,
        {"/spec/runtimeClassName": "runv", "/spec/initContainers/0/name": "aesmd"},
        [],
    ),
    (
        "sandbox-with-host-network-allowed-without-sandbox",
        {**SIDECAR, "aesm": "host"},
        pod(annotations={**CONFIDENTIAL, "confidential-pods.io/runtime-class": "none"}, hostNetwork=True),
        False,
        {"/spec/runtimeClassName": ABSENT, "/spec/volumes/0/name": AESM_VOLUME, "/spec/hostNetwork": True},
        [],
    ),
    (
        "scheduler-and-tolerations",
        {
            **HOST,
            "schedulerName": "confidential-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {"key": "sgx.alibabacloud.com/epc", "operator": "Exists", "effect": "NoSchedule"},
            ],
        },
        realistic_pod(),
        False,
        {
            "/spec/schedulerName": "confidential-scheduler",
            "/spec/tolerations/1": {
                "key": "sgx.alibabacloud.com/epc",
                "operator": "Exists",
                "effect": "NoSchedule",
            },
            "/spec/tolerations/2": ABSENT,
            "/spec/containers/1/resources/limits": ABSENT,
            "/spec/containers/2/env": ABSENT,
            c0("env/2"): {"name": "SGX_AESM_ADDR", "value": "1"},
            c0("volumeMounts/2/name"): AESM_VOLUME,
            "/spec/volumes/3/name": AESM_VOLUME,
        },
        [],
    ),
    (
        "custom-scheduler-kept",
        {**HOST, "schedulerName": "confidential-scheduler"},
        pod(annotations=CONFIDENTIAL, schedulerName="volcano"),
        False,
        {"/spec/schedulerName": "volcano"},
        [],
    ),
    (
        "aesm-none",
        {**HOST},
        pod(annotations={**CONFIDENTIAL, "confidential-pods.io/aesm": "none"}),
        False,
        {"/spec/volumes": ABSENT, c0("env"): ABSENT, c0(f"resources/limits/{ALI}"): "64"},
        [],
    ),
    (
        "unknown-fields-preserved-and-unknown-annotation-warned",
        HOST,
        pod(
            annotations={**CONFIDENTIAL, "confidential-pods.io/epcs": "1Gi"},
            containers=[
                container("app", resizePolicy=[{"resourceName": "cpu", "restartPolicy": "NotRequired"}])
            ],
            init=[container("sidecar", restartPolicy="Always")],
            hostUsers=False,
        ),
        False,
        {
            c0("resizePolicy/0/resourceName"): "cpu",
            "/spec/initContainers/0/restartPolicy": "Always",
            "/spec/hostUsers": False,
            "/spec/initContainers/0/resources": ABSENT,
        },
        ["unknown annotation confidential-pods.io/epcs ignored"],
    ),
    (
        "null-annotations-and-resources",
        HOST,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "annotations": None},
            "spec": {"containers": [{"name": "app", "image": "x", "resources": None, "env": None}]},
        },
        True,
        {c0(f"resources/limits/{ALI}"): "64", c0("env"): [{"name": "SGX_AESM_ADDR", "value": "1"}]},
        [],
    ),
    (
        "epc-limits-nri-app-and-injected-sidecar",  # the sgx-epc NRI plugin's keys, in bytes
        {**SIDECAR, "epcLimits": "nri"},
        pod(annotations=CONFIDENTIAL),
        False,
        {LIMIT_APP: "67108864", "/metadata/annotations/epc-limit.nri.io~1container.aesmd": "8388608"},
        [],
    ),
    (
        "epc-limits-nri-authors-limit-replaced",  # "0" is no limit to the plugin: the webhook's value wins
        {**HOST, "epcLimits": "nri"},
        pod(annotations={**CONFIDENTIAL, "epc-limit.nri.io/container.app": "0", "epc-limit.nri.io/pod": "1"}),
        False,
        {LIMIT_APP: "67108864", "/metadata/annotations/epc-limit.nri.io~1pod": "1"},
        ["annotation epc-limit.nri.io/container.app='0' replaced by 67108864"],
    ),
    (
        "epc-limits-none-writes-nothing",
        HOST,
        pod(annotations={**CONFIDENTIAL, "epc-limit.nri.io/container.app": "0"}),
        False,
        {LIMIT_APP: "0", "/metadata/annotations/epc-limit.nri.io~1container.aesmd": ABSENT},
        [],
    ),
]


def _resolve(document: Any, path: str) -> Any:
    return jsonpointer.resolve_pointer(document, path, ABSENT)


def _assert_patch_is_safe(original: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    """Only adds; never /spec or /metadata wholesale; arrays are only created where missing."""
    document = copy.deepcopy(original)
    for operation in operations:
        assert operation["op"] == "add", operation
        assert operation["path"] not in ("", "/spec", "/metadata"), operation
        if isinstance(operation["value"], list):
            assert _resolve(document, operation["path"]) in (ABSENT, None), f"replaces an array: {operation}"
        document = jsonpatch.apply_patch(document, [operation])


@pytest.mark.parametrize(
    ("keys", "original", "opted_in", "expected", "warnings"),
    [case[1:] for case in MUTATED],
    ids=[case[0] for case in MUTATED],
)
def test_mutated(
    keys: dict[str, Any],
    original: dict[str, Any],
    opted_in: bool,
    expected: dict[str, Any],
    warnings: list[str],
) -> None:
    config = settings(**keys)
    before = copy.deepcopy(original)
    mutation = mutate(original, namespace_opted_in=opted_in, settings=config)
    assert original == before, "mutate must not modify its input"
    assert mutation.outcome == "mutated", mutation.message
    operations = [dict(op) for op in mutation.patch]
    _assert_patch_is_safe(original, operations)
    result = jsonpatch.apply_patch(original, operations)

    for path, value in expected.items():
        if value is ...:
            assert _resolve(result, path) is not ABSENT, path
        else:
            assert _resolve(result, path) == value, path
    for wanted in warnings:
        assert any(wanted in w for w in mutation.warnings), mutation.warnings
    if not warnings:
        assert mutation.warnings == ()

    status = json.loads(result["metadata"]["annotations"][STATUS])
    assert status["profile"] == config.profile.name
    assert status["epcBytes"] > 0 and status["containers"]
    kubernetes_validate.validate(result, KUBERNETES_VERSION, strict=True)

    # Idempotence: the marker makes a second review a no-op ...
    again = mutate(result, namespace_opted_in=opted_in, settings=config)
    assert again.outcome == "unchanged" and again.patch == ()
    # ... and even without the marker nothing would be added twice (no duplicate env, mounts, sidecars).
    unmarked = copy.deepcopy(result)
    del unmarked["metadata"]["annotations"][STATUS]
    replay = mutate(unmarked, namespace_opted_in=opted_in, settings=config)
    assert [op["path"] for op in replay.patch] == ["/metadata/annotations/confidential-pods.io~1status"]


def test_realistic_pod_keeps_everything_else() -> None:
    original = realistic_pod()
    mutation = mutate(original, namespace_opted_in=False, settings=settings(**HOST))
    result = jsonpatch.apply_patch(original, [dict(op) for op in mutation.patch])
    # Strip what was added; the rest must be byte-for-byte what came in.
    del result["metadata"]["annotations"][STATUS]
    app = result["spec"]["containers"][0]
    for side in ("requests", "limits"):
        del app["resources"][side]["alibabacloud.com/sgx_epc_MiB"]
    app["env"].pop()
    app["volumeMounts"].pop()
    result["spec"]["volumes"].pop()
    assert result == original


@pytest.mark.parametrize(
    ("keys", "original", "opted_in", "outcome"),
    [
        (HOST, pod(), False, "skipped"),
        (HOST, pod(annotations={"confidential-pods.io/confidential": "false"}), True, "skipped"),
        (HOST, pod(annotations={"confidential-pods.io/confidential": "false"}), False, "skipped"),
        (HOST, pod(annotations={**CONFIDENTIAL, STATUS: "{}"}), False, "unchanged"),
    ],
    ids=["not-opted-in", "opt-out-wins-over-namespace", "opt-out", "already-injected"],
)
def test_not_mutated(keys: dict[str, Any], original: dict[str, Any], opted_in: bool, outcome: str) -> None:
    mutation = mutate(original, namespace_opted_in=opted_in, settings=settings(**keys))
    assert (mutation.outcome, mutation.patch, mutation.allowed) == (outcome, (), True)


def _with(annotations: dict[str, str], **spec: Any) -> dict[str, Any]:
    return pod(annotations={**CONFIDENTIAL, **annotations}, **spec)


# (id, settings, pod, all of these substrings in the denial message)
DENIED: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    (
        "bad-opt-in-value",
        HOST,
        pod(annotations={"confidential-pods.io/confidential": "yes"}),
        ["confidential-pods.io/confidential", "'yes'", '"true" or "false"'],
    ),
    (
        "epc-not-a-quantity",
        HOST,
        _with({"confidential-pods.io/epc": "lots"}),
        ["confidential-pods.io/epc", "'lots'", "64Mi"],
    ),
    ("epc-zero", HOST, _with({"confidential-pods.io/epc": "0"}), ["'0'", "positive"]),
    ("epc-negative", HOST, _with({"confidential-pods.io/epc": "-64Mi"}), ["'-64Mi'", "positive"]),
    (
        "epc-above-max",
        {**HOST, "maxEPCPerPod": "1Gi"},
        _with({"confidential-pods.io/epc": "2Gi"}),
        ["'2Gi'", "1Gi"],
    ),
    (
        "total-above-max",
        {**HOST, "maxEPCPerPod": "128Mi"},
        _with({}, containers=[container("a"), container("b"), container("c")]),
        ["192Mi", "a 64Mi, b 64Mi, c 64Mi", "128Mi", "maxEPCPerPod"],
    ),
    (
        "unknown-container",
        HOST,
        _with({"confidential-pods.io/containers": "app,ghost"}),
        ["confidential-pods.io/containers", "ghost", "containers: app"],
    ),
    ("empty-container-list", HOST, _with({"confidential-pods.io/containers": " , "}), ["empty"]),
    (
        "override-unknown-container",
        HOST,
        _with({"confidential-pods.io/epc.ghost": "1Mi"}),
        ["ghost", "does not have"],
    ),
    (
        "override-not-enclave",
        HOST,
        _with({"confidential-pods.io/epc.init": "1Mi"}, init=[container("init")]),
        ["init", "not an enclave container", "confidential-pods.io/containers"],
    ),
    (
        "request-differs-from-limit",
        HOST,
        _with(
            {},
            containers=[
                container(
                    "app",
                    resources={
                        "requests": {"alibabacloud.com/sgx_epc_MiB": "32"},
                        "limits": {"alibabacloud.com/sgx_epc_MiB": "64"},
                    },
                )
            ],
        ),
        ["container app", "request 32", "limit 64", "request = limit"],
    ),
    (
        "bad-aesm",
        HOST,
        _with({"confidential-pods.io/aesm": "socket"}),
        ["confidential-pods.io/aesm", "'socket'", "host, sidecar, none"],
    ),
    (
        "bad-runtime-class",
        HOST,
        _with({"confidential-pods.io/runtime-class": "Kata_QEMU"}),
        ["'Kata_QEMU'", "RuntimeClass"],
    ),
    (
        "sidecar-without-image",
        {"runtimeClass": "kata"},
        _with({}),
        ["aesmSidecarImage", "kata", "ask the cluster operator", "confidential-pods.io/aesm"],
    ),
    (
        "host-aesm-in-sandbox",
        SIDECAR,
        _with({"confidential-pods.io/aesm": "host"}),
        ["host", "sandboxed RuntimeClass kata", "sidecar"],
    ),
    (
        "sandbox-host-network",
        SIDECAR,
        _with({}, hostNetwork=True),
        ["hostNetwork: true", "kata", "runtime-class: none"],
    ),
    (
        "sandbox-host-pid-ipc",
        SIDECAR,
        _with({}, hostPID=True, hostIPC=True),
        ["hostPID: true", "hostIPC: true"],
    ),
    (
        "sandbox-privileged",
        SIDECAR,
        _with({}, containers=[container("app", securityContext={"privileged": True})]),
        ["privileged container app"],
    ),
    (
        "no-containers",
        HOST,
        {"metadata": {"annotations": CONFIDENTIAL}, "spec": {"containers": []}},
        ["at least one container"],
    ),
    (
        "spec-not-object",
        HOST,
        {"metadata": {"annotations": CONFIDENTIAL}, "spec": []},
        ["spec must be an object"],
    ),
    (
        "container-without-name",
        HOST,
        {"metadata": {"annotations": CONFIDENTIAL}, "spec": {"containers": [{}]}},
        ["name"],
    ),
    ("annotation-not-string", HOST, {"metadata": {"annotations": {"a": 1}}, "spec": {}}, ["annotations"]),
]


@pytest.mark.parametrize(
    ("keys", "original", "fragments"), [case[1:] for case in DENIED], ids=[case[0] for case in DENIED]
)
def test_denied(keys: dict[str, Any], original: dict[str, Any], fragments: list[str]) -> None:
    mutation = mutate(original, namespace_opted_in=False, settings=settings(**keys))
    assert mutation.outcome == "denied" and not mutation.allowed and mutation.patch == ()
    for fragment in fragments:
        assert fragment in mutation.message


def test_intel_sidecar_gets_enclave_and_epc() -> None:
    mutation = mutate(
        pod(annotations=CONFIDENTIAL),
        namespace_opted_in=False,
        settings=settings(**{"profile": "intel", **SIDECAR}),
    )
    result = jsonpatch.apply_patch(pod(annotations=CONFIDENTIAL), [dict(op) for op in mutation.patch])
    sidecar = result["spec"]["initContainers"][0]
    # The sidecar quotes (quote: aesmd): it also gets the provisioning device (the attestation issue).
    assert sidecar["resources"]["limits"] == {
        "sgx.intel.com/epc": "8Mi",
        "sgx.intel.com/enclave": "1",
        "sgx.intel.com/provision": "1",
    }
    # pod total carries the sidecar's EPC too (Kata sizes the VM's EPC from it)
    assert result["metadata"]["annotations"]["sgx.intel.com/epc"] == "72Mi"
    kubernetes_validate.validate(result, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("part", "escaped"), [("a/b", "a~1b"), ("a~b", "a~0b"), ("~/", "~0~1"), (3, "3")])
def test_pointer_escaping(part: str | int, escaped: str) -> None:
    assert escape(part) == escaped
    assert pointer(["metadata", "annotations", part]) == f"/metadata/annotations/{escaped}"
