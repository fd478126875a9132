"""The Helm chart on the real node (issue 24, item 5: "and the Helm chart once").

``helm install`` of charts/confidential-pods (alibaba overlay, native mode) against a control plane of the
module's own, as a user installs it: the images set through ``image.repository``/``image.tag`` and
``scheduler.image``, the region, and ``config`` values for the PCCS stand-in's URL and the aesmd stand-in as
``aesmSidecarImage``; Helm's own client creates the objects. The rest is tests/e2e/incluster.py's
``installed_on_node``, as for the kustomize overlays: the certificate Job completes, the webhook and
confidential-scheduler Deployments become available, and an opted-in pod admitted and placed by them runs with
what was injected.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.incluster import (
    APP_NAMESPACE,
    NAMESPACE,
    PCCS_URL,
    Installed,
    installed_on_node,
    observe,
    opted_in_pod,
)
from tests.e2e.kube import JSON, Kube
from tests.e2e.node import Node
from tests.e2e.test_on_node import alibaba_node
from tests.manifests.building import CHART, HELM_INSTALL_COMMAND, find_tool

pytestmark = pytest.mark.e2e

RELEASE = "confidential-pods"


def helm(node: Node, *args: str) -> str:
    binary = find_tool("helm")
    if binary is None:
        pytest.fail(f"helm not found; install it with: {HELM_INSTALL_COMMAND}", pytrace=False)
    command = [binary, *args, "--kubeconfig", str(node.api.admin_kubeconfig), "--namespace", NAMESPACE]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def chart_values(images: dict[str, str]) -> list[str]:
    """What a user sets: the images they pushed, the region, the PCCS and the aesmd sidecar image."""
    repository, _, tag = images["confidential-pods"].rpartition(":")
    config = {"dcap": {"pccsUrl": PCCS_URL}, "aesmSidecarImage": images["aesmd-standin"]}
    return [
        "--set", "region=cn-hangzhou",
        "--set", f"image.repository={repository}",
        "--set", f"image.tag={tag}",
        "--set", f"scheduler.image={images['kube-scheduler']}",
        "--set-json", f"config={json.dumps(config)}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def installed(
    request: pytest.FixtureRequest, e2e_log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("on-node-chart")

    def prepare(kube: Kube, node: Node, images: dict[str, str]) -> list[JSON]:
        alibaba_node(kube, node)
        # As the chart's README tells users: Helm creates the release namespace (the chart installs into it).
        helm(node, "install", RELEASE, str(CHART), "--create-namespace", *chart_values(images))
        return []  # Helm applied everything; installed_on_node waits for it to become ready

    with installed_on_node(request.config, e2e_log_dir / "on-node-chart", work, prepare) as product:
        yield product
        # As a user removes it, while the node still runs its pods.
        helm(product.node, "uninstall", RELEASE, "--wait", "--timeout", "120s")
        assert product.kube.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")["items"] == []


def test_the_chart_installs_and_an_opted_in_pod_runs(installed: Installed) -> None:
    kube = installed.kube
    deployments = kube.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")["items"]
    for deployment in deployments:
        assert deployment["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
        assert deployment["status"].get("availableReplicas") == deployment["spec"]["replicas"], deployment[
            "status"
        ]
    pods = kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert {installed.images["confidential-pods"], installed.images["kube-scheduler"]} <= images, images

    created = kube.create(
        f"/api/v1/namespaces/{APP_NAMESPACE}/pods", opted_in_pod(installed.images["confidential-pods"])
    )
    assert created["spec"]["schedulerName"] == "confidential-scheduler"
    assert created["spec"]["runtimeClassName"] == "runv"
    pod, facts, log = observe(kube, "enclave")
    assert pod["status"]["phase"] == "Running", (pod["status"], log)
    assert pod["spec"]["nodeName"] == installed.node.name
    assert facts["AESM_CONNECT"] == "ok", log
    assert facts["EPC_UNITS"] == "64", log
    assert facts["PCCS"] == "200", log
    assert "DEVICE /dev/sgx_enclave char" in log, log
    kube.delete(f"/api/v1/namespaces/{APP_NAMESPACE}/pods/enclave", grace_period_seconds=0)
