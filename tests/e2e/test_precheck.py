"""``confidential-pods precheck`` against the real kube-apiserver, before anything is applied: each overlay
as shipped and as a user fills it in, judged against the cluster's SGX nodes, an opted-in restricted namespace
and the control plane's version.

The manifests name kube-scheduler v1.34.13; the e2e control plane is v1.37.x (tests/e2e/build.sh): as shipped
that is three minors of skew, which the version skew policy forbids (kube-scheduler may be one minor older
than kube-apiserver, never newer), and precheck must fail naming the image to set. With that image set to the
API server's version, or one minor older, it passes; one minor newer fails again. Nothing is installed here.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from confidential_pods.profiles import PROFILES
from operate.clusterprecheck import parse_version
from tests.commands import cli
from tests.e2e.harness import ControlPlane
from tests.e2e.kube import JSON, Kube
from tests.e2e.product import Overlay
from tests.e2e.test_scheduling import sgx_allocatable
from tests.machine import free_port
from tests.manifests.building import CHART_VALUES, find_tool, helm_template
from tests.manifests.test_precheck import AS_SHIPPED, filled

pytestmark = pytest.mark.e2e

SCHEDULER = "registry.k8s.io/kube-scheduler"
OPTED_IN_RESTRICTED = {
    "confidential-pods.io/injection": "enabled",
    "pod-security.kubernetes.io/enforce": "restricted",
}


def precheck(
    plane: ControlPlane, *args: str, kubeconfig: Path | None = None, output: str = "json"
) -> tuple[int, Any]:
    """(exit code, the JSON document or the text) of ``confidential-pods precheck`` as a user runs it."""
    result = subprocess.run(
        cli("precheck", "--kubeconfig", str(kubeconfig or plane.api.admin_kubeconfig), "-o", output, *args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1, 2), result.stderr
    if output == "text":
        return result.returncode, result.stdout + result.stderr
    assert result.stderr == "", result.stderr
    return result.returncode, json.loads(result.stdout)


def checks(document: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {check["check"]: check for check in document["checks"]}


def with_scheduler(objects: list[JSON], image: str) -> list[JSON]:
    """The build with its kube-scheduler image replaced, as ``kustomize edit set image`` does."""
    result = copy.deepcopy(objects)
    for obj in result:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "confidential-scheduler":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                if container["name"] == "kube-scheduler":
                    container["image"] = image
    return result


def write(path: Path, objects: list[JSON]) -> str:
    path.write_text(yaml.safe_dump_all(objects))
    return str(path)


@pytest.fixture(scope="module")
def server(kube: Kube) -> tuple[int, int, int]:
    """The control plane's version, as /version reports it."""
    version = parse_version(str(kube.get("/version")["gitVersion"]))
    assert version is not None
    return version


@pytest.mark.parametrize("build", ["alibaba", "intel", "azure"])
def test_precheck_judges_each_overlay_against_the_cluster(
    build: str,
    control_plane: ControlPlane,
    kube: Kube,
    server: tuple[int, int, int],
    make_node: Callable[..., JSON],
    make_namespace: Callable[..., str],
    tmp_path: Path,
) -> None:
    overlay, profile = Overlay.build(build), PROFILES[build]
    other = PROFILES["alibaba" if build != "alibaba" else "intel"]
    node = make_node(sgx_allocatable(profile, 256))["metadata"]["name"]
    stranger = make_node(sgx_allocatable(other, 128))["metadata"]["name"]
    restricted = make_namespace(OPTED_IN_RESTRICTED)
    major, minor, patch = server
    wanted = f"{SCHEDULER}:v{major}.{minor}.{patch}"

    # As shipped: what the files leave to set, and the manifests' kube-scheduler too old for this cluster.
    code, document = precheck(control_plane, "-f", write(tmp_path / "shipped.yaml", overlay.objects))
    assert code == 2 and document["worst"] == "fail"
    assert [item["what"] for item in document["toSet"]] == AS_SHIPPED[build]
    assert document["serverVersion"].startswith(f"v{major}.{minor}.{patch}")
    assert (document["profile"], document["epcResource"]) == (build, profile.epc_resource)
    found = checks(document)
    shipped = overlay.one("Deployment", "confidential-scheduler")["spec"]["template"]["spec"]["containers"][0]
    shipped_version = parse_version(shipped["image"].rpartition(":")[2])
    assert shipped_version is not None and minor - shipped_version[1] > 1, "the e2e plane is not ahead"
    version = found["scheduler-version"]
    assert version["status"] == "fail", version
    assert f"{minor - shipped_version[1]} minor versions older" in version["message"]
    assert f"kustomize edit set image {SCHEDULER}={wanted}" in version["hint"]
    # Both nodes named: this build's resource on one, another profile's on the other (not counted).
    nodes = found["sgx-nodes"]
    assert nodes["status"] == "warn", nodes
    assert f"advertise {profile.epc_resource} (profile {build}), 256Mi of EPC: {node}" in nodes["message"]
    assert f"advertise {other.epc_resource}: {stranger}" in nodes["message"]
    # intel and azure inject host-mode AESM, which a restricted namespace refuses; alibaba's runv sandbox gets
    # an aesmd sidecar instead, which it admits.
    if build == "alibaba":
        assert found["pod-security"]["status"] == "ok", found["pod-security"]
        assert "runtimeClass runv is a sandbox" in found["pod-security"]["message"]
    else:
        assert found["pod-security"]["status"] == "warn"
        assert found["pod-security"]["message"].endswith(f": {restricted} (restricted)")

    # Filled in as the lines above say, with the image the hint names: nothing to set, the version fits;
    # the warnings stay (exit 1). One minor older still fits, one newer does not.
    for image, status in [
        (wanted, "ok"),
        (f"{SCHEDULER}:v{major}.{minor - 1}.0", "ok"),
        (f"{SCHEDULER}:v{major}.{minor + 1}.0", "fail"),
    ]:
        objects = with_scheduler(filled(overlay.objects), image)
        code, document = precheck(control_plane, "-f", write(tmp_path / "filled.yaml", objects))
        assert document["toSet"] == [] and checks(document)["scheduler-version"]["status"] == status
        assert code == (1 if status == "ok" else 2), document

    # Only the other profile's node left, and a configuration for this build's profile: no node counts,
    # and the profile (or epcResource) to set is named.
    kube.delete(f"/api/v1/nodes/{node}")
    code, document = precheck(control_plane, "-f", str(tmp_path / "filled.yaml"))
    nodes = checks(document)["sgx-nodes"]
    assert code == 2 and nodes["status"] == "fail", nodes
    assert f"no node advertises {profile.epc_resource} (profile {build})" in nodes["message"]
    assert f"set profile: {other.name} in the configuration" in nodes["hint"]
    assert f"epcResource: {other.epc_resource}" in nodes["hint"]


def test_precheck_takes_the_kubeconfig_context(control_plane: ControlPlane, tmp_path: Path) -> None:
    """A kubeconfig whose current context is an API server nobody answers for: one line; ``--context``
    picks the working one."""
    config = yaml.safe_load(control_plane.api.admin_kubeconfig.read_text())
    cluster = copy.deepcopy(config["clusters"][0])
    cluster["name"], cluster["cluster"]["server"] = "gone", f"https://127.0.0.1:{free_port()}"
    config["clusters"].append(cluster)
    config["contexts"].append(
        {"name": "gone", "context": {"cluster": "gone", "user": config["users"][0]["name"]}}
    )
    config["current-context"] = "gone"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    built = write(tmp_path / "built.yaml", filled(Overlay.build("azure").objects))

    code, text = precheck(control_plane, "-f", built, kubeconfig=kubeconfig, output="text")
    assert code == 2
    assert text == f"confidential-pods: cannot reach the API server at {cluster['cluster']['server']}: " \
        "Connection refused\n"  # fmt: skip
    code, text = precheck(
        control_plane, "-f", built, "--context", "e2e", kubeconfig=kubeconfig, output="text"
    )
    first, *rest = text.splitlines()
    assert first.startswith(f"cluster: {control_plane.api.url} (Kubernetes v")
    assert rest[0] == "ok: nothing left to set"
    # the shipped kube-scheduler (v1.34) on this v1.37 control plane: the one failure
    assert code == 2 and [line.split()[1] for line in rest if line.startswith("fail")] == [
        "scheduler-version"
    ]


def test_what_the_user_may_not_read_is_said_per_check(control_plane: ControlPlane, tmp_path: Path) -> None:
    """A user without RBAC may read /version (system:public-info-viewer) but no nodes or namespaces: the
    checks that need them say so with the API server's answer, the version is still judged."""
    kubeconfig = control_plane.api.user_kubeconfig("precheck-nobody")
    built = write(tmp_path / "built.yaml", filled(Overlay.build("intel").objects))
    code, document = precheck(control_plane, "-f", built, kubeconfig=kubeconfig)
    found = checks(document)
    assert code == 2
    for check, resource in (("sgx-nodes", "nodes"), ("pod-security", "namespaces")):
        assert found[check]["status"] == "fail"
        assert found[check]["message"].startswith(f"cannot check: {resource}: 403 ")
        assert 'User "precheck-nobody" cannot list resource' in found[check]["message"]
    assert found["scheduler-version"]["status"] == "fail"  # the shipped v1.34 on v1.37, read all the same


def test_the_chart_rendered_for_this_cluster_passes_and_for_an_older_one_fails(
    control_plane: ControlPlane, server: tuple[int, int, int], tmp_path: Path
) -> None:
    """The chart's kube-scheduler follows the Kubernetes version it is rendered for (``helm template
    --kube-version``; ``helm install`` takes the cluster's): rendered for this cluster, precheck finds no
    skew; rendered for a cluster two minors older, it fails."""
    helm = find_tool("helm")
    if helm is None:
        pytest.skip("helm not found (.ci/run installs it)")
    major, minor, patch = server
    for version, status in [(f"v{major}.{minor}.{patch}", "ok"), (f"v{major}.{minor - 2}.0", "fail")]:
        objects = helm_template(helm, *CHART_VALUES["alibaba"], kube_version=version)
        code, document = precheck(control_plane, "-f", write(tmp_path / "chart.yaml", objects))
        found = checks(document)["scheduler-version"]
        assert document["toSet"] == [] and found["status"] == status, found
        assert f"runs kube-scheduler v{major}.{minor - (0 if status == 'ok' else 2)}." in found["message"]
        assert (code == 2) == (status == "fail"), document  # else 0, or 1 for a cluster without SGX nodes
