"""Configuration file: defaults, every key, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import jsonpatch
import pytest

from confidential_pods.profiles import PROFILES
from confidential_pods.settings import (
    ConfigError,
    Settings,
    incomplete,
    load_settings,
    problems,
    settings_from_mapping,
)
from webhook.policy import mutate


def test_defaults_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONFIDENTIAL_PODS_CONFIG", raising=False)
    settings = load_settings()
    assert settings == Settings()
    assert settings.profile is PROFILES["alibaba"]
    assert settings.runtime_class is None  # the pod's runtime is left alone: no sidecar image needed
    assert settings.quote == "aesmd" and settings.aesm_sidecar_image is None
    assert settings.audience == "webhook"
    assert settings.aesm == "host"
    assert settings.aesm_host_path == "/var/run/aesmd"
    assert settings.default_epc == 64 * 2**20


def test_every_key_read(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        """
profile: intel
defaultEPC: 32Mi
maxEPCPerPod: 1Gi
runtimeClass: runv
sandboxRuntimeClasses: [runv]
aesm: sidecar
aesmHostPath: /run/aesm
aesmSidecarImage: registry.example/aesmd:2.25
aesmSidecarEPC: 4Mi
schedulerName: confidential-scheduler
tolerations:
  - {key: sgx.intel.com/epc, operator: Exists, effect: NoSchedule}
ownNamespace: cp-system
scoringStrategy: MostAllocated
"""
    )
    settings = load_settings(path)
    assert settings.profile.epc_resource == "sgx.intel.com/epc"
    assert (settings.default_epc, settings.max_epc_per_pod) == (32 * 2**20, 2**30)
    assert settings.runtime_class == "runv" and settings.is_sandbox("runv")
    assert not settings.is_sandbox("runc") and not settings.is_sandbox(None)
    assert settings.aesm == "sidecar" and settings.aesm_host_path == "/run/aesm"
    assert settings.aesm_sidecar_image == "registry.example/aesmd:2.25"
    assert settings.aesm_sidecar_epc == 4 * 2**20
    assert settings.scheduler_name == "confidential-scheduler"
    assert settings.tolerations == (
        {"key": "sgx.intel.com/epc", "operator": "Exists", "effect": "NoSchedule"},
    )
    assert settings.own_namespace == "cp-system"
    assert settings.scoring_strategy == "MostAllocated"


@pytest.mark.parametrize(
    ("data", "resource", "unit"),
    [
        # An AKS cluster whose device plugin advertises Intel's name in MiB.
        ({"profile": "azure", "epcResource": "sgx.intel.com/epc"}, "sgx.intel.com/epc", 2**20),
        (
            {"profile": "azure", "epcResource": "sgx.intel.com/epc", "epcUnit": "bytes"},
            "sgx.intel.com/epc",
            1,
        ),
        ({"profile": "intel", "epcUnit": "MiB"}, "sgx.intel.com/epc", 2**20),
        ({"profile": "alibaba"}, "alibabacloud.com/sgx_epc_MiB", 2**20),
    ],
)
def test_epc_resource_overrides_the_profile(data: dict[str, object], resource: str, unit: int) -> None:
    settings = settings_from_mapping(data)
    profile = settings.profile
    assert (profile.epc_resource, profile.unit) == (resource, unit)
    assert profile.name == data["profile"]  # the rest of the profile stays: enclave resource, annotations
    assert profile.enclave_resource == PROFILES[profile.name].enclave_resource
    assert profile.parse_resource("93") == 93 * unit


def test_env_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("profile: azure\n")
    monkeypatch.setenv("CONFIDENTIAL_PODS_CONFIG", str(path))
    assert load_settings().profile.name == "azure"


def test_runtime_class_none_means_unset() -> None:
    assert settings_from_mapping({"runtimeClass": "none"}).runtime_class is None


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"profile": "amd"}, "profile"),
        ({"defaultEPC": "lots"}, "defaultEPC"),
        ({"defaultEPC": "0"}, "defaultEPC"),
        ({"maxEPCPerPod": "-1Gi"}, "maxEPCPerPod"),
        ({"defaultEPC": "2Gi", "maxEPCPerPod": "1Gi"}, "defaultEPC"),
        ({"aesm": "socket"}, "aesm"),
        ({"aesmHostPath": "var/run"}, "aesmHostPath"),
        ({"scoringStrategy": "Balanced"}, "scoringStrategy"),
        ({"tolerations": {"key": "x"}}, "tolerations"),
        ({"tolerations": [{"key": "x", "operator": "In"}]}, "tolerations[0].operator"),
        ({"tolerations": [{"key": "x", "effect": "Never"}]}, "tolerations[0].effect"),
        ({"tolerations": [{"key": "x", "colour": "red"}]}, "tolerations[0]"),
        ({"sandboxRuntimeClasses": "kata"}, "sandboxRuntimeClasses"),
        ({"defaultEpc": "64Mi"}, "defaultEpc"),
        ({"epcResource": "epc"}, "epcResource"),
        ({"epcResource": "kubernetes.io/epc"}, "epcResource"),
        ({"epcResource": "sgx.kubernetes.io/epc"}, "epcResource"),
        ({"epcResource": "Intel.com/epc"}, "epcResource"),
        ({"epcResource": "sgx.intel.com/e pc"}, "epcResource"),
        ({"epcResource": 7}, "epcResource"),
        ({"epcUnit": "KiB"}, "epcUnit"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, object], names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace("[", r"\[").replace("]", r"\]")):
        settings_from_mapping(data)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- profile\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(listy)


# --- issue 23, item 1: defaults that work together -------------------------------------------------------

PLAIN_OPTED_IN = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "app",
        "namespace": "shop",
        "annotations": {"confidential-pods.io/confidential": "true"},
    },
    "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
}
RUNTIME_CLASSES = {"unset": {}, "none": {"runtimeClass": "none"}, "kata": {"runtimeClass": "kata"},
                   "runv": {"runtimeClass": "runv"}}  # fmt: skip


def _outcome(profile: str, quote: str, runtime: str) -> str:
    """What a plain opted-in pod meets, every other key at its default: admitted, or a key to set
    (:func:`problems`: refused at start-up by the offline tools, the webhook unready), never pod by pod."""
    if quote == "in-process":
        return "dcap.pccsUrl"
    if quote == "aesmd" and runtime in ("kata", "runv"):
        return "aesmSidecarImage"  # the alibaba overlay as shipped (runv)
    return "admitted"


@pytest.mark.parametrize("runtime", list(RUNTIME_CLASSES))
@pytest.mark.parametrize("quote", ["unset", "aesmd", "in-process", "none"])
@pytest.mark.parametrize("profile", ["unset", *PROFILES])
def test_default_combinations_admit_a_plain_opted_in_pod_or_name_the_key(
    profile: str, quote: str, runtime: str
) -> None:
    data: dict[str, object] = {**RUNTIME_CLASSES[runtime]}
    if profile != "unset":
        data["profile"] = profile
    if quote != "unset":
        data["quote"] = quote
    expected = _outcome(profile, "aesmd" if quote == "unset" else quote, runtime)
    settings = settings_from_mapping(data)
    mutation = mutate(PLAIN_OPTED_IN, namespace_opted_in=False, settings=settings)
    if expected != "admitted":
        assert [problem.key for problem in problems(settings)] == [expected]
        assert incomplete(settings).startswith(f"configuration incomplete: {expected}: ")
        # what start-up refuses is exactly what the pod would meet
        assert mutation.outcome == "denied" and expected in mutation.message
        return
    assert problems(settings) == () and incomplete(settings) == ""
    assert mutation.outcome == "mutated", mutation.message
    pod = jsonpatch.apply_patch(PLAIN_OPTED_IN, [dict(op) for op in mutation.patch])
    (app,) = pod["spec"]["containers"]
    assert app["resources"]["limits"][settings.profile.epc_resource]  # it got its EPC


IMAGE = {"aesmSidecarImage": "registry.example/aesmd:2.25"}
PCCS = {"dcap": {"pccsUrl": "https://pccs.example:8081/sgx/certification/v4/"}}


@pytest.mark.parametrize(
    ("data", "keys"),
    [
        pytest.param({}, [], id="defaults"),
        pytest.param({"runtimeClass": "runv"}, ["aesmSidecarImage"], id="sandbox"),
        pytest.param({"runtimeClass": "runv", **IMAGE}, [], id="sandbox-with-image"),
        pytest.param({"runtimeClass": "runv", "quote": "none"}, [], id="sandbox-not-quoting"),
        pytest.param({"runtimeClass": "gvisor"}, ["aesmSidecarImage"], id="any-configured-class-sandboxes"),
        pytest.param({"aesm": "sidecar"}, ["aesmSidecarImage"], id="aesm-sidecar"),
        pytest.param({"aesm": "sidecar", **IMAGE}, [], id="aesm-sidecar-with-image"),
        pytest.param({"aesm": "sidecar", "quote": "none"}, [], id="aesm-sidecar-not-quoting"),
        pytest.param({"aesm": "none"}, [], id="aesm-none"),
        pytest.param({"quote": "in-process"}, ["dcap.pccsUrl"], id="in-process"),
        pytest.param({"quote": "in-process", **PCCS}, [], id="in-process-with-pccs"),
        pytest.param({"quote": "in-process", "runtimeClass": "kata"}, ["dcap.pccsUrl"], id="in-process-kata"),
    ],
)
def test_problems_name_the_key_to_set(data: dict[str, object], keys: list[str]) -> None:
    found = problems(settings_from_mapping(data))
    assert [problem.key for problem in found] == keys
    for problem in found:
        assert str(problem).startswith(f"{problem.key}: ") and "; set " in problem.message


def test_the_built_in_defaults_admit_a_plain_opted_in_pod() -> None:
    assert mutate(PLAIN_OPTED_IN, namespace_opted_in=False, settings=Settings()).outcome == "mutated"
