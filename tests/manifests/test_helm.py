"""charts/confidential-pods: lint, render, validate, and no drift from the kustomize overlays.

For each overlay of manifests/ (and the components the chart switches on), ``helm template`` with the
matching values must give the objects ``kustomize build`` gives, field for field. What is ignored, and
only that:

* the label ``app.kubernetes.io/managed-by`` (``kustomize`` / ``Helm``) and Helm's ``helm.sh/chart``;
* the content hash that ends the names of the generated ConfigMaps (kustomize's configMapGenerator and the
  chart each hash the content their own way; both change the name when the content changes), in the names
  and wherever they are referenced;
* the text layout of ``config.yaml`` when values are merged into it (compared as parsed YAML then);
* the Namespace ``confidential-pods``: the chart installs into the release namespace, which Helm creates
  (``--create-namespace``) before the chart's objects, so the chart cannot; the overlays' namespace is the
  release namespace here;
* the certs Job's ``ttlSecondsAfterFinished`` (with a Job named per revision, the chart survives
  ``helm upgrade`` with a new image; kustomize keeps one Job).

What the chart requires to render (:data:`CHART_VALUES`: the alibaba ``region`` and aesmd sidecar image, the
intel aesmd image and PCCS) the kustomize side gets the same way before comparing: its placeholders replaced,
the configuration keys merged in. kube-scheduler's image follows ``--kube-version``: the overlays' version.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests.building import (
    AESMD_IMAGE,
    CHART,
    CHART_VALUES,
    NAMESPACE,
    OVERLAY_KUBE_VERSION,
    PCCS_URL,
    REGION,
    KustomizeError,
    Manifest,
    build_with_components,
    documented_patches,
    find,
    helm_template,
)
from tests.manifests.test_build import VERSIONS, validate
from tests.manifests.test_servicemonitor import validate as validate_monitor

IGNORED_LABELS = ("app.kubernetes.io/managed-by", "helm.sh/chart")
AESMD_PLACEHOLDER = "aesmd-image-required.invalid/aesmd:set-me"
GENERATED = re.compile(
    r"^(confidential-pods-config|confidential-scheduler-config|confidential-pods-aesmd-config"
    r"|confidential-pods-node-probe-config)-[a-z0-9]+$"
)

#: (chart values, the overlay, the components added to it, extra configuration keys the values set).
ALIBABA_CONFIG = {"aesmSidecarImage": AESMD_IMAGE}
INTEL_CONFIG = {"dcap": {"pccsUrl": PCCS_URL}}
CASES: dict[str, tuple[list[str], str, list[str], dict[str, Any]]] = {
    "alibaba": ([*CHART_VALUES["alibaba"]], "alibaba", [], ALIBABA_CONFIG),
    "azure": ([*CHART_VALUES["azure"]], "azure", [], {}),
    "intel": ([*CHART_VALUES["intel"]], "intel", [], INTEL_CONFIG),
    "base": ([*CHART_VALUES["base"]], "base", [], {}),
    "cert-manager": (["overlay=base", "certs.mode=cert-manager"], "cert-manager", [], {}),
    "route-epc-pods": (
        ["overlay=azure", "routeEPCPods=true"],
        "azure",
        ["route-epc-pods"],
        {"routeEPCPods": True},
    ),
    # the node probe alone, added as docs/install.md says (with the ConfigMap it reads)
    "node-probe": (
        [*CHART_VALUES["alibaba"], "nodeProbe.enabled=true"],
        "alibaba",
        ["node-probe"],
        ALIBABA_CONFIG,
    ),
    "monitoring": (
        [*CHART_VALUES["intel"], "monitoring.enabled=true"],
        "intel",
        ["servicemonitor"],
        INTEL_CONFIG,
    ),
    # epcResource set to a name no profile uses: the chart names it in the route entry's CEL; kustomize needs
    # the JSON patch docs/install.md gives the overlay (applied below, read from the docs).
    "route-epc-resource": (
        ["overlay=azure", "routeEPCPods=true", "config.epcResource=example.com/sgx_epc"],
        "azure",
        ["route-epc-pods"],
        {"routeEPCPods": True, "epcResource": "example.com/sgx_epc"},
    ),
}
#: The overlay's own patches, per case: what the docs tell an operator to add.
PATCHES: dict[str, list[Manifest]] = {
    "route-epc-resource": documented_patches("/webhooks/2/matchConditions/0/expression"),
}


def normalized(objects: list[Manifest], region: str | None = None) -> dict[tuple[str, str, str], Manifest]:
    """Objects by (kind, namespace, name) with what the comparison ignores taken out (module docstring)."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            if GENERATED.match(value):
                return value.rsplit("-", 1)[0]
            if value == AESMD_PLACEHOLDER:
                return AESMD_IMAGE
            return value.replace("<region>", region) if region else value
        return value

    found: dict[tuple[str, str, str], Manifest] = {}
    for obj in objects:
        obj = walk(obj)
        labels = obj["metadata"].get("labels", {})
        for label in IGNORED_LABELS:
            labels.pop(label, None)
        if obj["kind"] == "ConfigMap" and "config.yaml" in obj.get("data", {}):
            obj["data"]["config.yaml"] = yaml.safe_load(obj["data"]["config.yaml"])
        if obj["kind"] == "Job":
            obj["spec"].pop("ttlSecondsAfterFinished", None)
        if (obj["kind"], obj["metadata"]["name"]) == ("Namespace", NAMESPACE):
            continue
        key = (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        assert key not in found, f"{key} twice"
        found[key] = obj
    return found


@pytest.fixture(scope="module")
def rendered(helm: str) -> dict[str, list[Manifest]]:
    return {case: helm_template(helm, *values) for case, (values, *_) in CASES.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_chart_installs_what_the_overlay_installs(
    case: str, rendered: dict[str, list[Manifest]], kustomize: str, tmp_path: Path
) -> None:
    _, overlay, components, config = CASES[case]
    built = build_with_components(kustomize, overlay, components, tmp_path, PATCHES.get(case))
    expected = normalized(built, REGION)
    for key, obj in expected.items():
        if key[0] == "ConfigMap" and key[2] in (
            "confidential-pods-config",
            "confidential-pods-aesmd-config",
            "confidential-pods-node-probe-config",
        ):
            obj["data"]["config.yaml"].update(config)
    chart = normalized(rendered[case])
    assert sorted(chart) == sorted(expected)
    for key in expected:
        assert chart[key] == expected[key], key


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rendered_object_validates(
    rendered: dict[str, list[Manifest]], case: str, version: str
) -> None:
    for obj in rendered[case]:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            validate_monitor(obj)
        else:
            validate(obj, version)


@pytest.mark.parametrize("case", sorted(CASES))
def test_lint(helm: str, case: str) -> None:
    values, *_ = CASES[case]
    command = [helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    command += ["--kube-version", OVERLAY_KUBE_VERSION]
    for value in values:
        command += ["--set", value]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


SIDECAR = f"config.aesmSidecarImage={AESMD_IMAGE}"
INTEL = ["overlay=intel", f"config.dcap.pccsUrl={PCCS_URL}"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([SIDECAR], "region: the ACK region of the PCCS"),
        (
            ["region=Hangzhou", SIDECAR],
            "at '/region': 'Hangzhou' does not match pattern",
        ),  # values.schema.json
        # alibaba's runv sandbox with quote: aesmd and no sidecar image (issue 23, item 2)
        (
            [f"region={REGION}"],
            "config.aesmSidecarImage: runtimeClass runv runs opted-in pods in a VM sandbox",
        ),
        (
            ["overlay=base", "config.runtimeClass=kata-qemu"],
            "config.aesmSidecarImage: runtimeClass kata-qemu",
        ),
        (
            ["overlay=azure", "config.aesm=sidecar"],
            "config.aesmSidecarImage: aesm is sidecar and quote is aesmd",
        ),
        (["overlay=base", "config.quote=in-process"], "config.dcap.pccsUrl: quote is in-process"),
        # the aesmd DaemonSet: its image (the placeholder the overlay ships is refused too) and its PCCS
        (INTEL, "aesmd.image: the aesmd DaemonSet (on for the intel overlay, or aesmd.enabled=true) needs"),
        (
            [*INTEL, "aesmd.image=aesmd-image-required.invalid/aesmd:set-me"],
            "a placeholder; set the aesmd image",
        ),
        (["overlay=intel", f"aesmd.image={AESMD_IMAGE}"], "config.dcap.pccsUrl: the aesmd DaemonSet renders"),
        (["overlay=azure", "aesmd.enabled=true"], "aesmd.image: the aesmd DaemonSet"),
        # the node probe alone renders the QCNL file from the configured PCCS (base has none)
        (["overlay=base", "nodeProbe.enabled=true"], "config.dcap.pccsUrl: the node probe renders"),
        # two node probes would write one condition in turn
        (
            [*INTEL, f"aesmd.image={AESMD_IMAGE}", "nodeProbe.enabled=true"],
            "nodeProbe.enabled: the aesmd DaemonSet",
        ),
        (["overlay=aws"], "at '/overlay': value must be one of 'alibaba', 'azure', 'intel', 'base'"),
        (  # written into the route entry's CEL: no quote may get there
            ["overlay=azure", "routeEPCPods=true", "config.epcResource=example.com/x') || true || ('"],
            "at '/config/epcResource': 'example.com/x\\') || true || (\\'' does not match pattern",
        ),
    ],
)
def test_required_values_fail_with_what_to_set(helm: str, values: list[str], message: str) -> None:
    with pytest.raises(KustomizeError, match=re.escape(message)):
        helm_template(helm, *values)


def test_alibaba_with_a_pccs_of_its_own_needs_no_region(helm: str) -> None:
    """``region`` only fills the ``<region>`` of the overlay's PCCS URL: a ``config.dcap.pccsUrl`` of the
    user's replaces that URL, so the region is not required (and nowhere written)."""
    objects = helm_template(helm, SIDECAR, f"config.dcap.pccsUrl={PCCS_URL}")
    config = yaml.safe_load(find(objects, "ConfigMap", "confidential-pods-config")["data"]["config.yaml"])
    assert config["dcap"] == {"pccsUrl": PCCS_URL, "useSecureCert": True}
    assert "<region>" not in yaml.safe_dump_all(objects)


@pytest.mark.parametrize("case", ["azure", "base"])
def test_what_needs_nothing_set_renders_with_the_defaults(helm: str, case: str) -> None:
    """azure and base leave nothing to set: their defaults render (the alibaba and intel cases above fail
    naming what to set, never later in the cluster)."""
    assert helm_template(helm, *CHART_VALUES[case])


def test_values_reach_the_objects(helm: str) -> None:
    objects = helm_template(
        helm,
        *CHART_VALUES["intel"],
        "image.repository=registry.example.com/cp",
        "image.tag=1.2.3",
        "webhook.replicas=3",
        "scheduler.replicas=1",
        "config.defaultEPC=128Mi",
        "aesmd.enabled=false",
        "podSecurityLookup.enabled=false",
    )
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("DaemonSet", "confidential-pods-aesmd") not in kinds
    assert ("ClusterRole", "confidential-pods-webhook") not in kinds
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    assert deployments["confidential-pods-webhook"]["spec"]["replicas"] == 3
    assert deployments["confidential-scheduler"]["spec"]["replicas"] == 1
    webhook_pod = deployments["confidential-pods-webhook"]["spec"]["template"]["spec"]
    assert webhook_pod["automountServiceAccountToken"] is False
    assert webhook_pod["containers"][0]["image"] == "registry.example.com/cp:1.2.3"
    (config_map,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("confidential-pods-config")
    ]
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["defaultEPC"] == "128Mi" and config["profile"] == "intel"  # merged over the overlay's file
    # The config's hash is in its name: a changed configuration rolls the pods.
    default = helm_template(helm, *CHART_VALUES["intel"])
    names = {o["metadata"]["name"] for o in default if o["kind"] == "ConfigMap"}
    assert config_map["metadata"]["name"] not in names


def test_the_chart_files_are_the_overlays_files() -> None:
    """The overlay files the chart reads are copies of manifests/' own (the drift test covers what they render
    to; this names the file to copy when it fails), and so is the dashboard of docs/dashboards."""
    manifests = CHART.parents[1] / "manifests"
    for overlay in ("alibaba", "azure", "intel", "base"):
        source = manifests / "base" if overlay == "base" else manifests / "overlays" / overlay
        for name in ("config.yaml", "scheduler-config.yaml"):
            copy = CHART / "files" / overlay / name
            assert copy.read_text() == (source / name).read_text(), f"copy {source / name} to {copy}"
    dashboard = CHART.parents[1] / "docs" / "dashboards" / "confidential-pods.json"
    copy = CHART / "files" / "dashboards" / "confidential-pods.json"
    assert copy.read_text() == dashboard.read_text(), f"copy {dashboard} to {copy}"
