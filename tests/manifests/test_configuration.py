"""The webhook/extender configuration of every install loads, and the examples behave as documented."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from confidential_pods.errors import ConfigError
from confidential_pods.profiles import PROFILES
from confidential_pods.settings import Settings, problems, settings_from_mapping
from tests.manifests.building import INSTALLS, MANIFESTS, PROFILE_OF, Manifest, find
from webhook.policy import mutate

EXAMPLES = MANIFESTS / "examples"


#: The region an operator sets in the alibaba overlay (its dcap.pccsUrl is required per region).
REGION = "cn-hangzhou"
#: The aesmd image an operator sets where the overlay sandboxes pods (alibaba: runv).
AESMD_IMAGE = "registry.example.com/sgx/aesmd:2.25"


def shipped_settings(objects: list[Manifest]) -> Settings:
    """The overlay's configuration as shipped, but the region, which the loader refuses as a placeholder."""
    config_map = find(objects, "ConfigMap", "confidential-pods-config")
    assert set(config_map["data"]) == {"config.yaml"}
    text = config_map["data"]["config.yaml"].replace("<region>", REGION)  # what the operator does
    return settings_from_mapping(yaml.safe_load(text))


def settings_of(objects: list[Manifest]) -> Settings:
    """The configuration as an operator completes it: the region, and the aesmd image the overlay needs."""
    settings = shipped_settings(objects)
    if problems(settings):
        settings = replace(settings, aesm_sidecar_image=AESMD_IMAGE)
    assert problems(settings) == ()
    return settings


def test_alibaba_overlay_requires_the_region(built: dict[str, list[Manifest]]) -> None:
    text = find(built["alibaba"], "ConfigMap", "confidential-pods-config")["data"]["config.yaml"]
    with pytest.raises(ConfigError, match=r"dcap.pccsUrl: .*placeholder \(<region>\)"):
        settings_from_mapping(yaml.safe_load(text))
    settings = settings_of(built["alibaba"])
    assert settings.dcap.pccs_url == f"https://sgx-dcap-server.{REGION}.aliyuncs.com/sgx/certification/v4/"


def test_azure_overlay_uses_azures_pccs_cache(built: dict[str, list[Manifest]]) -> None:
    dcap = settings_of(built["azure"]).dcap
    assert dcap.pccs_url == "https://global.acccache.azure.net/sgx/certification/v4/"
    assert dcap.local_pck_url == "http://169.254.169.254/metadata/THIM/sgx/certification/v4/"


@pytest.mark.parametrize("name", INSTALLS)
def test_configuration_loads(built: dict[str, list[Manifest]], name: str) -> None:
    settings = settings_of(built[name])
    assert settings.profile == PROFILES[PROFILE_OF[name]]
    assert settings.own_namespace == find(built[name], "Namespace", "confidential-pods")["metadata"]["name"]
    assert settings.scheduler_name == "confidential-scheduler"


@pytest.mark.parametrize("name", ["alibaba", "intel", "azure"])
def test_overlays_tolerate_the_epc_taint(built: dict[str, list[Manifest]], name: str) -> None:
    settings = settings_of(built[name])
    assert settings.tolerations == (
        {"key": settings.profile.epc_resource, "operator": "Exists", "effect": "NoSchedule"},
    )


def test_overlay_runtime_classes(built: dict[str, list[Manifest]]) -> None:
    assert settings_of(built["alibaba"]).runtime_class == "runv"
    assert settings_of(built["intel"]).runtime_class is None
    assert settings_of(built["azure"]).runtime_class is None


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _template_pod(deployment: dict[str, Any]) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": "enclave-app-1", "namespace": "default"},
        "spec": template["spec"],
    }


@pytest.mark.parametrize("name", ["intel", "azure", "base"])
def test_confidential_deployment_example_is_injected(built: dict[str, list[Manifest]], name: str) -> None:
    settings = settings_of(built[name])
    (deployment,) = _documents(EXAMPLES / "confidential-deployment.yaml")
    pod = _template_pod(deployment)
    mutation = mutate(pod, namespace_opted_in=False, settings=settings)
    assert mutation.outcome == "mutated", mutation.message
    result = jsonpatch.apply_patch(pod, mutation.patch)
    kubernetes_validate.validate(result, "1.33.0", strict=True)
    enclave, shipper = result["spec"]["containers"]
    resource = settings.profile.epc_resource
    assert enclave["resources"]["limits"][resource] == enclave["resources"]["requests"][resource]
    assert settings.profile.parse_resource(enclave["resources"]["limits"][resource]) == 128 * 1024 * 1024
    assert resource not in shipper["resources"]["limits"]
    assert result["spec"]["schedulerName"] == "confidential-scheduler"


@pytest.mark.parametrize("name", INSTALLS)
def test_overlays_as_shipped_leave_only_the_documented_keys_to_set(
    built: dict[str, list[Manifest]], name: str
) -> None:
    """The webhook starts unready (the offline tools exit 2) with these until they are set; the alibaba
    overlay's config.yaml says so beside runtimeClass: runv."""
    expected = ["aesmSidecarImage"] if name == "alibaba" else []
    assert [problem.key for problem in problems(shipped_settings(built[name]))] == expected


def test_alibaba_needs_an_aesmd_image_for_runv(built: dict[str, list[Manifest]]) -> None:
    """As shipped, the alibaba overlay's configuration is incomplete (aesmSidecarImage, docs/install.md
    says how); with it set, the example is injected with the sidecar."""
    (problem,) = problems(shipped_settings(built["alibaba"]))
    assert problem.key == "aesmSidecarImage" and "runtimeClass runv" in problem.message
    text = find(built["alibaba"], "ConfigMap", "confidential-pods-config")["data"]["config.yaml"]
    assert "aesmSidecarImage" in text and "/readyz" in text  # the comment says what happens until it is set
    (deployment,) = _documents(EXAMPLES / "confidential-deployment.yaml")
    pod = _template_pod(deployment)
    mutation = mutate(pod, namespace_opted_in=False, settings=settings_of(built["alibaba"]))
    assert mutation.outcome == "mutated", mutation.message
    result = jsonpatch.apply_patch(pod, mutation.patch)
    assert result["spec"]["runtimeClassName"] == "runv"
    assert [c["name"] for c in result["spec"]["initContainers"]] == ["aesmd"]
    assert result["spec"]["initContainers"][0]["image"] == AESMD_IMAGE


@pytest.mark.parametrize("name", INSTALLS)
def test_refused_pod_example_is_refused_with_the_documented_message(
    built: dict[str, list[Manifest]], name: str
) -> None:
    path = EXAMPLES / "refused-pod.yaml"
    (pod,) = _documents(path)
    mutation = mutate(pod, namespace_opted_in=False, settings=settings_of(built[name]))
    assert mutation.outcome == "denied"
    comment = " ".join(
        line.lstrip("#").strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    )
    documented = re.search(r"denied the request: (.*?) \(docs/", comment)
    assert documented, "refused-pod.yaml quotes the webhook's message"
    assert mutation.message == documented.group(1)


def test_opted_in_namespace_example_selects_the_namespace_entry() -> None:
    (namespace,) = _documents(EXAMPLES / "namespace-opted-in.yaml")
    assert namespace["metadata"]["labels"] == {"confidential-pods.io/injection": "enabled"}
