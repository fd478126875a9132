"""``helm install`` of charts/confidential-pods on a real kube-apiserver (a control plane of its own).

The chart's objects are accepted by the apiserver as Helm sends them (its own client, its create/patch
and ownership annotations), an upgrade that turns on routeEPCPods adds the third webhook entry and rolls the
configuration (a new ConfigMap name, referenced by both Deployments), and an uninstall removes them. There is
no controller-manager here, so nothing runs: what is proved is that the apiserver stores what the chart says.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import ControlPlane
from tests.e2e.kube import ApiError, Kube
from tests.manifests.building import CHART, HELM_INSTALL_COMMAND, find_tool

pytestmark = pytest.mark.e2e

NAMESPACE = "confidential-pods"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
CONFIGURATION = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/confidential-pods"
POLICY = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/confidential-pods-annotations"
POLICY_BINDING = (
    "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/confidential-pods-annotations"
)


@pytest.fixture(scope="module")
def plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    from tests.e2e import gate

    binaries = gate.binaries(request.config)  # skips (fails in CI) without tests/e2e/build.sh
    work = tmp_path_factory.mktemp("helm-install")
    with ControlPlane.run(binaries, work, work / "logs") as control_plane:
        yield control_plane


def helm(plane: ControlPlane, *args: str) -> str:
    binary = find_tool("helm")
    if binary is None:
        pytest.fail(f"helm not found; install it with: {HELM_INSTALL_COMMAND}", pytrace=False)
    command = [binary, *args, "--kubeconfig", str(plane.api.admin_kubeconfig), "--namespace", "default"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def config_of(kube: Kube, deployment: dict[str, object]) -> tuple[str, dict[str, object]]:
    """The name of the ConfigMap a Deployment mounts as ``config``, and its configuration."""
    spec = deployment["spec"]["template"]["spec"]  # type: ignore[index]
    (name,) = [v["configMap"]["name"] for v in spec["volumes"] if v["name"] == "config"]
    data = kube.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{name}")["data"]["config.yaml"]
    return name, yaml.safe_load(data)


def test_install_upgrade_uninstall(plane: ControlPlane, tmp_path: Path) -> None:
    kube = plane.api.admin_client()
    helm(plane, "install", "confidential-pods", str(CHART), "--set", "overlay=intel")

    deployments = {d["metadata"]["name"]: d for d in kube.get(DEPLOYMENTS)["items"]}
    assert set(deployments) == {"confidential-pods-webhook", "confidential-scheduler"}
    webhook = deployments["confidential-pods-webhook"]
    assert webhook["metadata"]["annotations"]["meta.helm.sh/release-name"] == "confidential-pods"
    name, config = config_of(kube, webhook)
    assert config["profile"] == "intel"
    configuration = kube.get(CONFIGURATION)
    assert [w["name"] for w in configuration["webhooks"]] == [
        "namespace.confidential-pods.io",
        "pod.confidential-pods.io",
    ]
    assert kube.get("/apis/apps/v1/namespaces/confidential-pods-aesmd/daemonsets/confidential-pods-aesmd")
    assert kube.get(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/confidential-pods-webhook"
    )  # pod-security-lookup
    assert kube.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/confidential-pods-certs-install")
    # Our annotations fixed at admission: the policy, bound to deny.
    assert kube.get(POLICY)["spec"]["failurePolicy"] == "Fail"
    assert kube.get(POLICY_BINDING)["spec"]["validationActions"] == ["Deny"]

    helm(
        plane,
        "upgrade",
        "confidential-pods",
        str(CHART),
        "--set",
        "overlay=intel",
        "--set",
        "routeEPCPods=true",
    )
    configuration = kube.get(CONFIGURATION)
    assert [w["name"] for w in configuration["webhooks"]][-1] == "route.confidential-pods.io"
    deployments = {d["metadata"]["name"]: d for d in kube.get(DEPLOYMENTS)["items"]}
    new_name, new_config = config_of(kube, deployments["confidential-pods-webhook"])
    assert new_name != name and new_config["routeEPCPods"] is True
    assert config_of(kube, deployments["confidential-scheduler"])[0] == new_name  # both roll

    helm(plane, "uninstall", "confidential-pods")
    assert kube.get(DEPLOYMENTS)["items"] == []
    for path in (CONFIGURATION, POLICY, POLICY_BINDING):
        with pytest.raises(ApiError) as gone:
            kube.get(path)
        assert gone.value.status == 404, path
