"""``helm install`` of charts/confidential-pods on a real kube-apiserver (a control plane of its own).

The chart's objects are accepted by the apiserver as Helm sends them (its own client, its create/patch
and ownership annotations) into the release namespace Helm creates (``--create-namespace``), not the
overlays' (so every reference must follow it); kube-scheduler's image is the apiserver's version;
NOTES.txt says what to check next. An upgrade with a new image and routeEPCPods on replaces the
certificate Job by the next revision's (a Job's pod template cannot change: patching the first one would
fail), adds the third webhook entry and rolls the configuration (a new ConfigMap name, referenced by both
Deployments), and an uninstall removes them. There is no controller-manager here, so nothing runs: what
is proved is that the apiserver stores what the chart says.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import ControlPlane
from tests.e2e.kube import ApiError, Kube
from tests.manifests.building import AESMD_IMAGE, CHART, CHART_VALUES, HELM_INSTALL_COMMAND, find_tool

pytestmark = pytest.mark.e2e

#: The release namespace: another than the overlays' confidential-pods.
NAMESPACE = "cp-system"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
CONFIGURATION = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/confidential-pods"
POLICY = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/confidential-pods-annotations"
POLICY_BINDING = (
    "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/confidential-pods-annotations"
)
VALUES = [arg for value in CHART_VALUES["intel"] for arg in ("--set", value)]


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
    command = [binary, *args, "--kubeconfig", str(plane.api.admin_kubeconfig), "--namespace", NAMESPACE]
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
    notes = helm(plane, "install", "confidential-pods", str(CHART), "--create-namespace", *VALUES)

    deployments = {d["metadata"]["name"]: d for d in kube.get(DEPLOYMENTS)["items"]}
    assert set(deployments) == {"confidential-pods-webhook", "confidential-scheduler"}
    webhook = deployments["confidential-pods-webhook"]
    assert webhook["metadata"]["annotations"]["meta.helm.sh/release-name"] == "confidential-pods"
    name, config = config_of(kube, webhook)
    assert config["profile"] == "intel" and config["ownNamespace"] == NAMESPACE
    configuration = kube.get(CONFIGURATION)
    assert [w["name"] for w in configuration["webhooks"]] == [
        "namespace.confidential-pods.io",
        "pod.confidential-pods.io",
    ]
    assert {w["clientConfig"]["service"]["namespace"] for w in configuration["webhooks"]} == {NAMESPACE}
    assert kube.get(f"/apis/apps/v1/namespaces/{NAMESPACE}-aesmd/daemonsets/confidential-pods-aesmd")
    assert kube.get(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/confidential-pods-webhook"
    )  # pod-security-lookup
    # kube-scheduler at the apiserver's own version (.Capabilities.KubeVersion), its distribution suffix cut
    version = re.match(r"v\d+\.\d+\.\d+", kube.get("/version")["gitVersion"])
    assert version is not None
    scheduler = deployments["confidential-scheduler"]["spec"]["template"]["spec"]["containers"][0]
    assert scheduler["image"] == f"registry.k8s.io/kube-scheduler:{version[0]}"
    first_job = kube.get(f"{JOBS}/confidential-pods-certs-install")
    assert first_job["spec"]["ttlSecondsAfterFinished"] == 86400
    # Our annotations fixed at admission: the policy, bound to deny.
    assert kube.get(POLICY)["spec"]["failurePolicy"] == "Fail"
    assert kube.get(POLICY_BINDING)["spec"]["validationActions"] == ["Deny"]
    # NOTES.txt: what was installed, what to check next, how to opt in; Helm's namespace lacks the Pod
    # Security label, which the notes ask for (their lookup of the namespace sees it)
    for line in (
        f"is installed in the namespace {NAMESPACE} (release confidential-pods, revision 1)",
        f"- the aesmd DaemonSet ({AESMD_IMAGE}) in the namespace {NAMESPACE}-aesmd",
        f"confidential-pods doctor --install-namespace {NAMESPACE} --wait 5m",
        "kubectl label namespace <yours> confidential-pods.io/injection=enabled",
        f"kubectl label namespace {NAMESPACE} pod-security.kubernetes.io/enforce=restricted",
    ):
        assert line in notes, notes

    # A new image (the certs Job's pod template changes) and routeEPCPods.
    helm(
        plane,
        "upgrade",
        "confidential-pods",
        str(CHART),
        *VALUES,
        "--set",
        "image.tag=0.2.0",
        "--set",
        "routeEPCPods=true",
    )
    jobs = {j["metadata"]["name"]: j for j in kube.get(JOBS)["items"]}
    assert set(jobs) == {"confidential-pods-certs-install-2"}  # Helm deleted the first revision's
    (container,) = jobs["confidential-pods-certs-install-2"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(":0.2.0")
    configuration = kube.get(CONFIGURATION)
    assert [w["name"] for w in configuration["webhooks"]][-1] == "route.confidential-pods.io"
    deployments = {d["metadata"]["name"]: d for d in kube.get(DEPLOYMENTS)["items"]}
    new_name, new_config = config_of(kube, deployments["confidential-pods-webhook"])
    assert new_name != name and new_config["routeEPCPods"] is True
    assert config_of(kube, deployments["confidential-scheduler"])[0] == new_name  # both roll

    helm(plane, "uninstall", "confidential-pods")
    assert kube.get(DEPLOYMENTS)["items"] == []
    assert kube.get(JOBS)["items"] == []
    for path in (CONFIGURATION, POLICY, POLICY_BINDING):
        with pytest.raises(ApiError) as gone:
            kube.get(path)
        assert gone.value.status == 404, path
