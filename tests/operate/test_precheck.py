"""``precheck``'s core: what a configuration and a build leave to set, one line naming each key or image."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from confidential_pods.errors import MalformedInput
from operate.precheck import ToSet, check_config, check_objects

PCCS = "https://pccs.example:8081/sgx/certification/v4/"


@pytest.mark.parametrize(
    ("config", "keys"),
    [
        pytest.param({}, [], id="defaults"),
        pytest.param({"runtimeClass": "runv"}, ["aesmSidecarImage"], id="sandbox-without-image"),
        pytest.param({"runtimeClass": "runv", "aesmSidecarImage": "r.example/aesmd:1"}, [], id="sandbox"),
        pytest.param({"aesm": "sidecar"}, ["aesmSidecarImage"], id="aesm-sidecar-without-image"),
        pytest.param({"quote": "in-process"}, ["dcap.pccsUrl"], id="in-process-without-pccs"),
        pytest.param({"quote": "in-process", "dcap": {"pccsUrl": PCCS}}, [], id="in-process"),
        pytest.param(
            {"runtimeClass": "runv", "dcap": {"pccsUrl": "https://sgx-dcap-server.<region>.aliyuncs.com/"}},
            ["dcap.pccsUrl", "aesmSidecarImage"],
            id="placeholder-and-sidecar-both-reported",
        ),
        pytest.param({"ownNamespace": "<namespace>"}, ["ownNamespace"], id="placeholder-anywhere"),
        pytest.param({"profile": "amd"}, ["profile"], id="bad-value-names-its-key"),
        pytest.param({"profil": "intel"}, ["the configuration"], id="unknown-key"),
        pytest.param(
            {"aesm": "socket", "tolerations": [{"effect": "Never"}], "profil": "x"},
            ["the configuration", "aesm", "tolerations[0].effect"],
            id="every-bad-key-its-own-line",
        ),
    ],
)
def test_config_names_each_key_to_set(config: dict[str, Any], keys: list[str]) -> None:
    found = check_config(config, "config.yaml")
    assert [item.what for item in found] == keys
    for item in found:
        assert str(item).startswith(f"set {item.what} (config.yaml): ") and "\n" not in str(item)


def _daemonset(image: str, args: list[str]) -> dict[str, Any]:
    container = {"name": "aesmd", "image": image}
    init = {"name": "qcnl", "image": "r.example/confidential-pods:1", "args": args}
    return {
        "kind": "DaemonSet",
        "metadata": {"name": "aesmd", "namespace": "sgx"},
        "spec": {"template": {"spec": {"initContainers": [init], "containers": [container]}}},
    }


def _config_map(config: dict[str, Any], name: str = "confidential-pods-config-2h5tk8m7g9") -> dict[str, Any]:
    return {"kind": "ConfigMap", "metadata": {"name": name}, "data": {"config.yaml": yaml.safe_dump(config)}}


@pytest.mark.parametrize(
    ("objects", "things"),
    [
        pytest.param([_config_map({})], [], id="complete"),
        pytest.param(
            [_config_map({}), _daemonset("aesmd-image-required.invalid/aesmd:set-me", ["qcnl"])],
            ["image aesmd-image-required.invalid/aesmd:set-me", "dcap.pccsUrl"],
            id="placeholder-image-and-qcnl-without-pccs",
        ),
        pytest.param(
            [_config_map({"dcap": {"pccsUrl": PCCS}}), _daemonset("r.example/aesmd:2.25", ["qcnl"])],
            [],
            id="aesmd-component-set",
        ),
        pytest.param([_config_map({"runtimeClass": "kata"})], ["aesmSidecarImage"], id="config-in-the-build"),
        pytest.param(
            [_config_map({"runtimeClass": "kata"}, name="confidential-scheduler-config")], [], id="other-map"
        ),
    ],
)
def test_objects_name_each_image_and_key_to_set(objects: list[dict[str, Any]], things: list[str]) -> None:
    found = check_objects(objects)
    assert [item.what for item in found] == things
    images = [item for item in found if item.what.startswith("image ")]
    for item in images:
        assert item.where == "DaemonSet sgx/aesmd, container aesmd"
        assert "kustomize edit set image aesmd-image-required.invalid/aesmd=" in item.message


def test_to_set_reads_as_one_line() -> None:
    assert str(ToSet("aesmSidecarImage", "config.yaml", "why")) == "set aesmSidecarImage (config.yaml): why"


def test_the_builds_configuration_is_read_by_the_one_reader() -> None:
    # The ConfigMap's config.yaml was read with bare yaml.safe_load: an alias bomb in it went unbounded
    # into check_config. It goes through confidential_pods.documents, as every file does.
    bomb = ["extra:", "  l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    bomb += [f"  l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)]
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "confidential-pods-config", "namespace": "confidential-pods"},
        "data": {"config.yaml": "\n".join(bomb) + "\n"},
    }
    with pytest.raises(MalformedInput, match=r"config\.yaml contains excessive aliasing"):
        check_objects([config_map])
