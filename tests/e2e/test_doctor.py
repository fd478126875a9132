"""``confidential-pods doctor`` and ``kubectl confidential-pods`` against the real kube-apiserver.

Every overlay (the ``installation`` fixture): its webhook configuration and serving Secret are the ones
``certs install`` wrote. What a cluster would also hold — the Deployments (with a status, as their
controller would write it), the configuration ConfigMap the webhook Deployment mounts, the scheduler's
leader Lease, an AESM DaemonSet — is seeded here, then broken one fault at a time, and the doctor must
say so, naming what is wrong. Other tests share this apiserver (their namespaces never finish deleting
without a namespace controller), so the assertions are about what this test seeded.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from extender.modes import classify
from tests.commands import cli, kubectl_plugin
from tests.e2e.kube import JSON, Kube, pod_events
from tests.e2e.processes import wait_until
from tests.e2e.product import NAMESPACE, Installation, delete_quietly
from tests.e2e.test_scheduling import TIMEOUT, Scene, confidential_pod, scene, sgx_allocatable, sgx_node

__all__ = ["scene", "sgx_node"]  # the fixtures of test_scheduling

pytestmark = pytest.mark.e2e

APPS = f"/apis/apps/v1/namespaces/{NAMESPACE}"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
CONFIG_MAP = "confidential-pods-config-e2e0000000"


def _micro(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def seeded(installation: Installation, kube: Kube) -> Iterator[Installation]:
    """The installation's Deployments (ready), their ConfigMaps, a fresh leader Lease."""
    created: list[str] = []
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "namespace": NAMESPACE},
        "data": {"config.yaml": yaml.safe_dump(installation.settings)},
    }
    kube.create(f"/api/v1/namespaces/{NAMESPACE}/configmaps", config_map)
    created.append(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{CONFIG_MAP}")
    # The scheduler's KubeSchedulerConfiguration, as built (the Deployment mounts it as scheduler-config).
    scheduler_config = installation.overlay.one("ConfigMap", "confidential-scheduler-config")
    kube.create(f"/api/v1/namespaces/{NAMESPACE}/configmaps", scheduler_config)
    created.append(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{scheduler_config['metadata']['name']}")
    for name in ("confidential-pods-webhook", "confidential-scheduler"):
        deployment = json.loads(json.dumps(installation.overlay.one("Deployment", name)))
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            if volume.get("configMap", {}).get("name", "").startswith("confidential-pods-config"):
                volume["configMap"]["name"] = CONFIG_MAP  # the hash-suffixed name of this build
        kube.create(f"{APPS}/deployments", deployment)
        created.append(f"{APPS}/deployments/{name}")
        set_ready(kube, name, 2)
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "confidential-scheduler", "namespace": NAMESPACE},
        "spec": {
            "holderIdentity": "confidential-scheduler-0_e2e",
            "leaseDurationSeconds": 15,
            "renewTime": _micro(datetime.now(UTC)),
        },
    }
    kube.create(LEASES, lease)
    created.append(f"{LEASES}/confidential-scheduler")
    try:
        yield installation
    finally:
        for path in reversed(created):
            delete_quietly(kube, path)


def set_ready(kube: Kube, name: str, ready: int) -> None:
    status = {
        "status": {"replicas": 2, "readyReplicas": ready, "availableReplicas": ready, "observedGeneration": 1}
    }
    kube.patch(f"{APPS}/deployments/{name}/status", status)


@pytest.fixture
def aesm_daemonset(kube: Kube, namespace: str) -> Iterator[str]:
    """A DaemonSet that provides the AESM socket directory on the nodes (as components/aesmd does)."""
    labels = {"app": "node-aesmd"}
    container = {
        "name": "aesmd",
        "image": "registry.example.com/aesmd:1",
        "volumeMounts": [{"name": "socket", "mountPath": "/var/run/aesmd"}],
    }
    template = {
        "metadata": {"labels": labels},
        "spec": {
            "containers": [container],
            "volumes": [
                {"name": "socket", "hostPath": {"path": "/var/run/aesmd", "type": "DirectoryOrCreate"}}
            ],
        },
    }
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "node-aesmd"},
        "spec": {"selector": {"matchLabels": labels}, "template": template},
    }
    path = f"/apis/apps/v1/namespaces/{namespace}/daemonsets"
    kube.create(path, daemonset)
    kube.patch(
        f"{path}/node-aesmd/status",
        {
            "status": {
                "numberReady": 1,
                "desiredNumberScheduled": 1,
                "currentNumberScheduled": 1,
                "numberMisscheduled": 0,
            }
        },
    )
    yield f"{namespace}/node-aesmd"
    delete_quietly(kube, f"{path}/node-aesmd")


def doctor(installation: Installation, *args: str) -> tuple[int, dict[str, dict[str, str]], dict[str, Any]]:
    """(exit code, findings by check, the whole JSON document) of ``confidential-pods doctor -o json``."""
    kubeconfig = str(installation.plane.api.admin_kubeconfig)
    result = subprocess.run(
        cli("doctor", "--kubeconfig", kubeconfig, "-o", "json", *args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1, 2), result.stderr
    document = json.loads(result.stdout)
    return result.returncode, {c["check"]: c for c in document["checks"]}, document


def bound_pod(name: str, node: str, resource: str, amount: str, scheduler: str) -> JSON:
    """A pod stored as bound (``spec.nodeName`` at creation: no scheduler involved)."""
    container = {
        "name": "app",
        "image": "registry.example.com/app:1",
        "resources": {"requests": {resource: amount}, "limits": {resource: amount}},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "schedulerName": scheduler, "containers": [container]},
    }


def amount(installation: Installation, mib: int) -> str:
    return f"{mib}Mi" if installation.profile.unit == 1 else str(mib)


def test_doctor_sees_a_healthy_installation_and_each_seeded_fault(
    seeded: Installation,
    kube: Kube,
    namespace: str,
    make_namespace: Callable[..., str],
    make_node: Callable[..., JSON],
    aesm_daemonset: str,
) -> None:
    installation, profile = seeded, seeded.profile
    scheduler = installation.settings["schedulerName"]
    node = make_node(sgx_allocatable(profile, 256))["metadata"]["name"]
    kube.create(
        f"/api/v1/namespaces/{namespace}/pods",
        bound_pod("kms", node, profile.epc_resource, amount(installation, 64), scheduler),
    )

    code, checks, document = doctor(installation)
    assert document["configuration"] == f"ConfigMap {NAMESPACE}/{CONFIG_MAP}"  # read from the cluster
    for name in (
        "epc-resource",
        "webhook-configuration",
        "webhook",
        "scheduler",
        "scheduler-mode",
        "aesm-source",
        "route-epc-pods",
    ):
        assert checks[name]["status"] == "ok", checks[name]
    mode = classify(installation.overlay.scheduler_config(""), profile.epc_resource).mode
    assert mode is not None and checks["scheduler-mode"]["message"].startswith(f"{mode} mode: ")
    assert profile.epc_resource in checks["epc-resource"]["message"]
    assert "confidential-scheduler-0_e2e" in checks["scheduler"]["message"]
    assert aesm_daemonset in checks["aesm-source"]["message"]
    assert node not in checks["epc-overcommit"]["message"]
    assert f"{namespace}/kms" not in checks["epc-pods-scheduler"]["message"]
    assert code == {"ok": 0, "warn": 1, "fail": 2}[document["worst"]]
    # Nothing fails: --wait returns at the first round, ready.
    code, _, document = doctor(installation, "--wait", "60s")
    assert document["ready"] is True and code < 2, document

    # Faults, each named in its check.
    set_ready(kube, "confidential-pods-webhook", 0)
    stale = _micro(datetime.now(UTC) - timedelta(minutes=5))
    kube.patch(f"{LEASES}/confidential-scheduler", {"spec": {"renewTime": stale}})
    kube.create(
        f"/api/v1/namespaces/{namespace}/pods",
        bound_pod("rogue", node, profile.epc_resource, amount(installation, 256), "default-scheduler"),
    )
    restricted = make_namespace(
        {"confidential-pods.io/injection": "enabled", "pod-security.kubernetes.io/enforce": "restricted"}
    )
    scheduler_config = installation.overlay.one("ConfigMap", "confidential-scheduler-config")
    ignorable = installation.overlay.scheduler_config("http://127.0.0.1:8444")
    ignorable["extenders"][0]["ignorable"] = True
    kube.patch(
        f"/api/v1/namespaces/{NAMESPACE}/configmaps/{scheduler_config['metadata']['name']}",
        {"data": {"config.yaml": yaml.safe_dump(ignorable)}},
    )
    code, checks, _ = doctor(installation)
    assert code == 2
    assert checks["webhook"]["status"] == "fail" and "0 of 2 replicas ready" in checks["webhook"]["message"]
    assert checks["scheduler-mode"]["status"] == "fail"
    assert "the extender is ignorable" in checks["scheduler-mode"]["message"]
    assert checks["scheduler"]["status"] == "fail" and "last renewed" in checks["scheduler"]["message"]
    assert checks["epc-pods-scheduler"]["status"] == "warn"
    assert f"{namespace}/rogue (default-scheduler)" in checks["epc-pods-scheduler"]["message"]
    assert (
        checks["epc-overcommit"]["status"] == "fail"
        and f"{node} (320Mi of 256Mi)" in checks["epc-overcommit"]["message"]
    )
    if profile.name == "alibaba":  # runv sandboxes opted-in pods: an aesmd sidecar, no hostPath to refuse
        assert checks["pod-security"]["status"] == "ok"
        assert "runtimeClass runv is a sandbox" in checks["pod-security"]["message"]
    else:  # only this test's namespace: every earlier test's opted-in namespace was given back its labels
        assert checks["pod-security"]["status"] == "warn"
        assert checks["pod-security"]["message"].endswith(f": {restricted} (restricted)")

    # A configuration for another profile than the nodes': the doctor names the resource to set.
    other = "intel" if profile.name != "intel" else "azure"
    wrong = installation.workdir / "wrong-profile.yaml"
    wrong.write_text(yaml.safe_dump({"profile": other, "routeEPCPods": True, "schedulerName": scheduler}))
    _, checks, document = doctor(installation, "--config", str(wrong))
    assert document["configuration"] == str(wrong)
    assert checks["epc-resource"]["status"] == "fail"
    assert f"{profile.epc_resource} on " in checks["epc-resource"]["message"]
    assert "set epcResource:" in checks["epc-resource"]["hint"]
    # no EPC resource known: the nodes' EPC cannot be judged overcommitted, so that check is skipped
    assert checks["epc-overcommit"]["status"] == "skipped"
    assert checks["epc-overcommit"]["dependsOn"] == ["epc-resource"]
    assert checks["route-epc-pods"]["status"] == "warn"  # the key without the entry


def test_doctor_reports_an_untrusted_serving_certificate(seeded: Installation, kube: Kube) -> None:
    """The serving Secret replaced by a certificate of another CA: the caBundle no longer trusts it."""
    from certs.authority import certificate_pem, issue_authority, issue_serving

    path = f"/api/v1/namespaces/{NAMESPACE}/secrets/confidential-pods-webhook-tls"
    original = kube.get(path)
    now = datetime.now(UTC)
    stranger = issue_serving(
        issue_authority(now=now), ["127.0.0.1", "confidential-pods-webhook.confidential-pods.svc"], now=now
    )
    kube.patch(path, {"data": {"tls.crt": base64.b64encode(certificate_pem(stranger.certificate)).decode()}})
    try:
        code, checks, _ = doctor(seeded)
        finding = checks["webhook-configuration"]
        assert code == 2 and finding["status"] == "fail" and "does not verify" in finding["message"]
    finally:
        kube.patch(path, {"data": {"tls.crt": original["data"]["tls.crt"]}})


def test_kubectl_plugin_nodes_and_why(scene: Scene) -> None:
    installation, kube, namespace, pods, sgx_node = scene.parts()
    profile = installation.profile
    node = sgx_node(256)
    config = installation.workdir / "config.yaml"
    common = ["--kubeconfig", str(installation.plane.api.admin_kubeconfig), "--config", str(config)]
    kube.create(
        f"/api/v1/namespaces/{namespace}/pods",
        bound_pod(
            "kms",
            node,
            profile.epc_resource,
            amount(installation, 64),
            installation.settings["schedulerName"],
        ),
    )

    listed = subprocess.run(
        kubectl_plugin("nodes", *common, "-o", "json"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (row,) = [r for r in json.loads(listed.stdout) if r["name"] == node]
    assert (row["capacity"], row["used"], row["pods"]) == (256 * 2**20, 64 * 2**20, 1)
    table = subprocess.run(
        kubectl_plugin("nodes", *common), capture_output=True, text=True, timeout=120, check=True
    )
    (line,) = [text for text in table.stdout.splitlines() if text.startswith(node)]
    assert "64Mi / 256Mi" in line and "192Mi" in line

    # A pod too big for the node: the real scheduler refuses it, `why` gives the extender's reason.
    big = pods(confidential_pod("too-big", epc_mib=1024))
    name = big["metadata"]["name"]
    wait_until(
        lambda: bool(pod_events(kube, namespace, name, "FailedScheduling")),
        timeout=TIMEOUT,
        what="kube-scheduler to record FailedScheduling",
    )
    explained = subprocess.run(
        kubectl_plugin("why", name, "-n", namespace, *common),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert f"{namespace}/{name} requests " in explained.stdout  # 1Gi, plus the sidecar's EPC on alibaba
    (reason,) = [text for text in explained.stdout.splitlines() if text.strip().startswith(node)]
    assert "insufficient SGX EPC: pod requests" in reason and "node has only 256Mi in total" in reason
    assert "kube-scheduler said (FailedScheduling events" in explained.stdout
    missing = subprocess.run(
        kubectl_plugin("why", "no-such-pod", "-n", namespace, *common),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing.returncode == 2 and "not found" in missing.stderr
