"""The product runs as pods on the real node, installed as a user installs it (issue 24, item 5, alibaba).

``kustomize build manifests/overlays/alibaba`` is applied as ``kubectl apply --server-side`` applies it
(kubectl is not on CI's machine), the image names replaced by the images tests/e2e/images/build.sh built
(``kustomize edit set image`` in a copy of the overlay, as docs/images.md tells users), ``dcap.pccsUrl`` set
to a PCCS stand-in running as a pod and ``aesmSidecarImage`` to the aesmd stand-in, on a control plane of the
module's own (the session's may hold a product installed from processes, tests/e2e/product.py, whose webhook
would mutate these pods too). What a cluster has and this one lacks is provided the smallest way
(tests/e2e/incluster.py):

- **kube-controller-manager** (built from the pinned module by tests/e2e/build.sh) with the controllers the
  install needs: Deployments and ReplicaSets, the certificate Job, EndpointSlices (the apiserver calls the
  webhook Service at its endpoints, ``--enable-aggregator-routing``), ServiceAccounts, ``kube-root-ca.crt``,
  the garbage collector, the namespace controller (the teardown) and PodDisruptionBudgets.
- **the ``kubernetes`` Service** without kube-proxy: pods route the Service range to the node (the CNI
  configuration of tests/e2e/nodeconfig.py) and one iptables DNAT rule on the bridge sends the ``kubernetes``
  Service's address to the apiserver on 127.0.0.1 (``route_localnet`` on the bridge); removed after.
- **the default scheduler** places the webhook, the Job and the PCCS stand-in; the
  confidential-scheduler of the build (two replicas, leader election, the extender sidecar) places the
  opted-in pod.

Not here yet (next increment): the intel overlay with its AESM DaemonSet, the Helm chart, Pod Security
``restricted``, ``quote: in-process``, pod lifecycle and preemption on the node.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import gate
from tests.e2e.harness import BinariesMissingError, ControlPlane
from tests.e2e.images import built
from tests.e2e.incluster import (
    APISERVER_ARGS,
    apiserver_service_route,
    apply_all,
    controller_manager,
    delete_and_wait,
)
from tests.e2e.kube import JSON, ApiError, Kube
from tests.e2e.node import Node, NodeBinaries
from tests.e2e.nodeconfig import NODE_IP
from tests.e2e.nodehost import host_problems
from tests.e2e.nodeimages import busybox_image, pause_image
from tests.e2e.pki import CertificateAuthority
from tests.e2e.processes import HarnessError, wait_until
from tests.manifests.building import MANIFESTS, find_kustomize

pytestmark = pytest.mark.e2e

NAMESPACE = "confidential-pods"
#: Where the test's own pods go (the PCCS stand-in and the opted-in pod).
APP_NAMESPACE = "e2e-on-node"
EPC_MIB = 128
ALIBABA_EPC = "alibabacloud.com/sgx_epc_MiB"
#: The node label the ``runv`` RuntimeClass of manifests/runtimeclasses selects.
RUNV_LABEL = ("alibabacloud.com/sandboxed-container", "Sandboxed-Container.runv")
PCCS_PORT = 8081
PCCS_URL = f"https://{NODE_IP}:{PCCS_PORT}/sgx/certification/v4/"
UPSTREAM_IMAGE = "ghcr.io/confidential-pods/confidential-pods"
UPSTREAM_SCHEDULER = "registry.k8s.io/kube-scheduler"
#: What the opted-in pod's application prints about itself (its image is ours: python3), then it stays up
#: for the test to look into its aesmd sidecar. With ``quote: aesmd`` the quote library runs in the sidecar:
#: the QCNL file is mounted there, not here.
OBSERVE = r"""
import os, socket, ssl, stat, sys, time, urllib.request
print("QCNL_PRESENT", os.path.lexists("/etc/sgx_default_qcnl.conf"))
error = None
for attempt in range(60):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect("/var/run/aesmd/aesm.socket")
        s.close()
        error = None
        break
    except OSError as exc:
        error = exc
        time.sleep(0.5)
print("AESM_CONNECT", error or "ok")
print("SGX_AESM_ADDR", os.environ.get("SGX_AESM_ADDR"))
for path in ("/dev/sgx_enclave", "/dev/sgx_provision"):
    try:
        print("DEVICE", path, "char" if stat.S_ISCHR(os.stat(path).st_mode) else "other")
    except OSError as exc:
        print("DEVICE", path, exc)
visible = os.environ.get("SGX_VISIBLE_DEVICES", "")
print("EPC_UNITS", len(visible.split(",")) if visible else 0)
try:
    context = ssl.create_default_context(cafile="/etc/pccs-ca/ca.crt")
    with urllib.request.urlopen(sys.argv[1] + "rootcacrl", context=context, timeout=10) as answer:
        print("PCCS", answer.status)
except Exception as exc:
    print("PCCS", repr(exc))
print("DONE", flush=True)
time.sleep(600)
"""
#: What the test runs in the aesmd sidecar (busybox sh builtins only): the QCNL file's kind, then its text.
SIDECAR_QCNL = (
    "f=/etc/sgx_default_qcnl.conf; if [ -L $f ]; then echo symlink; elif [ -f $f ]; then echo regular; "
    'else echo missing; fi; while IFS= read -r line || [ -n "$line" ]; do echo "$line"; done < $f'
)


def built_overlay(work: Path, images: dict[str, str]) -> list[JSON]:
    """The alibaba overlay as a user builds it after ``kustomize edit set image`` and setting dcap.pccsUrl."""
    kustomize = find_kustomize()
    if kustomize is None:
        raise HarnessError("kustomize not found; .ci/run installs it")
    copy = work / "manifests"
    shutil.copytree(MANIFESTS, copy)
    overlay = copy / "overlays" / "alibaba"
    subprocess.run(
        [
            str(kustomize),
            "edit",
            "set",
            "image",
            f"{UPSTREAM_IMAGE}={images['confidential-pods']}",
            f"{UPSTREAM_SCHEDULER}={images['kube-scheduler']}",
        ],
        cwd=overlay,
        check=True,
    )
    config = yaml.safe_load((overlay / "config.yaml").read_text())
    config["dcap"]["pccsUrl"] = PCCS_URL
    config["aesmSidecarImage"] = images["aesmd-standin"]
    (overlay / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    built = subprocess.run(
        [str(kustomize), "build", str(overlay)], check=True, capture_output=True, text=True
    ).stdout
    return [document for document in yaml.safe_load_all(built) if document]


@dataclass
class Installed:
    node: Node
    kube: Kube
    images: dict[str, str]


def deployment_available(kube: Kube, name: str) -> bool:
    deployment = kube.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}")
    wanted = deployment["spec"].get("replicas", 1)
    return bool(deployment.get("status", {}).get("availableReplicas", 0) == wanted)


def job_complete(kube: Kube, name: str) -> bool:
    job = kube.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}")
    return any(
        c["type"] == "Complete" and c["status"] == "True" for c in job.get("status", {}).get("conditions", [])
    )


def pccs_pod(image: str) -> JSON:
    """The PCCS stand-in: host network, so its certificate names the node's address, which pods reach."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pccs", "labels": {"app": "pccs"}},
        "spec": {
            "hostNetwork": True,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "pccs",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "args": [f"--listen={NODE_IP}:{PCCS_PORT}"],
                    "volumeMounts": [{"name": "tls", "mountPath": "/etc/pccs/tls", "readOnly": True}],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
            "volumes": [{"name": "tls", "secret": {"secretName": "pccs-tls"}}],
        },
    }


def opted_in_pod(image: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "enclave", "annotations": {"confidential-pods.io/confidential": "true"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "app",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", OBSERVE, PCCS_URL],
                    "volumeMounts": [{"name": "pccs-ca", "mountPath": "/etc/pccs-ca", "readOnly": True}],
                }
            ],
            "volumes": [{"name": "pccs-ca", "configMap": {"name": "pccs-ca"}}],
        },
    }


@pytest.fixture(scope="module")
def installed(
    request: pytest.FixtureRequest, e2e_log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    """A control plane of this module's own (the session's may hold a product installed from processes,
    tests/e2e/product.py, whose webhook would mutate these pods too), the node, kube-controller-manager, the
    default scheduler, and the alibaba overlay installed on them."""
    problems = host_problems()
    if problems:
        gate.unavailable(request.config, "; ".join(problems))
    try:
        binaries = NodeBinaries.locate()
        archives = built.locate()
    except (BinariesMissingError, built.ImagesMissingError) as exc:
        gate.unavailable(request.config, str(exc))
    images = {name: archive.reference for name, archive in archives.items()}
    work = tmp_path_factory.mktemp("on-node")
    log_dir = e2e_log_dir / "on-node"
    node_images = [pause_image(binaries.pause, work), busybox_image(work), *archives.values()]
    with contextlib.ExitStack() as stack:
        control_plane = stack.enter_context(
            ControlPlane.run(gate.binaries(request.config), work, log_dir, apiserver_args=APISERVER_ARGS)
        )
        control_plane.start_scheduler(name="kube-scheduler-default")
        kube = control_plane.api.admin_client()
        node = stack.enter_context(Node.run(control_plane.api, work / "node", log_dir, images=node_images))
        stack.enter_context(controller_manager(control_plane, log_dir))
        stack.enter_context(apiserver_service_route(kube, control_plane.api.url))
        node.start_device_plugin("alibaba", f"--epc-mib={EPC_MIB}")
        kube.patch(f"/api/v1/nodes/{node.name}", {"metadata": {"labels": {RUNV_LABEL[0]: RUNV_LABEL[1]}}})
        apply_all(kube, list(yaml.safe_load_all((MANIFESTS / "runtimeclasses" / "runv.yaml").read_text())))

        # The test's namespace, and the PCCS stand-in in it with a certificate of a test CA for the node's IP.
        app_namespace: JSON = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP_NAMESPACE}}
        apply_all(kube, [app_namespace])
        stack.callback(delete_and_wait, kube, [app_namespace])
        ca = CertificateAuthority.create(work / "pccs-ca")
        cert = ca.issue(work / "pccs-ca", "pccs", common_name="pccs", ip_addresses=(NODE_IP,), server=True)
        tls = {"tls.crt": cert.cert.read_text(), "tls.key": cert.key.read_text()}
        apply_all(
            kube,
            [
                _namespaced("v1", "Secret", "pccs-tls", type="kubernetes.io/tls", stringData=tls),
                _namespaced("v1", "ConfigMap", "pccs-ca", data={"ca.crt": ca.files.cert.read_text()}),
            ],
        )
        kube.create(f"/api/v1/namespaces/{APP_NAMESPACE}/pods", pccs_pod(images["pccs-standin"]))

        manifests = built_overlay(work, images)
        apply_all(kube, manifests)
        stack.callback(delete_and_wait, kube, manifests)
        wait_until(
            lambda: job_complete(kube, "confidential-pods-certs-install"),
            timeout=180,
            what="the certificate Job to complete",
        )
        for name in ("confidential-pods-webhook", "confidential-scheduler"):
            wait_until(
                lambda name=name: deployment_available(kube, name),  # type: ignore[misc]
                timeout=180,
                what=f"Deployment {name} available",
            )
        yield Installed(node, kube, images)


def _namespaced(api_version: str, kind: str, name: str, **fields: object) -> JSON:
    meta = {"name": name, "namespace": APP_NAMESPACE}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}


def test_install_becomes_ready(installed: Installed) -> None:
    kube = installed.kube
    pods = kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
    by_app: dict[str, list[JSON]] = {}
    for pod in pods:
        by_app.setdefault(pod["metadata"]["labels"].get("app.kubernetes.io/name", ""), []).append(pod)
    webhooks = [p for p in by_app["confidential-pods-webhook"] if p["status"]["phase"] == "Running"]
    assert len(webhooks) == 2
    for pod in webhooks:
        assert pod["spec"]["containers"][0]["image"] == installed.images["confidential-pods"]
        assert all(s["ready"] for s in pod["status"]["containerStatuses"])
    schedulers = [p for p in by_app["confidential-scheduler"] if p["status"]["phase"] == "Running"]
    assert len(schedulers) == 2
    for pod in schedulers:
        statuses = {s["name"]: s for s in pod["status"]["containerStatuses"]}
        assert statuses["kube-scheduler"]["ready"] and statuses["extender"]["ready"], statuses
    lease = kube.get(f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/confidential-scheduler")
    holder = lease["spec"]["holderIdentity"]
    assert any(holder.startswith(p["metadata"]["name"]) for p in schedulers), holder
    secret = kube.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/confidential-pods-webhook-tls")
    assert set(secret["data"]) >= {"tls.crt", "tls.key"}
    configuration = kube.get(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/confidential-pods"
    )
    assert all(w["clientConfig"].get("caBundle") for w in configuration["webhooks"])


def test_opted_in_pod_runs_with_the_aesmd_sidecar_and_sees_what_was_injected(installed: Installed) -> None:
    kube = installed.kube
    created = kube.create(
        f"/api/v1/namespaces/{APP_NAMESPACE}/pods", opted_in_pod(installed.images["confidential-pods"])
    )
    spec = created["spec"]
    assert spec["schedulerName"] == "confidential-scheduler"
    assert spec["runtimeClassName"] == "runv"
    sidecars = [c for c in spec.get("initContainers", []) if c["name"] == "aesmd"]
    assert len(sidecars) == 1 and sidecars[0]["image"] == installed.images["aesmd-standin"]
    (app,) = spec["containers"]
    assert app["resources"]["limits"][ALIBABA_EPC] == "64"

    path = f"/api/v1/namespaces/{APP_NAMESPACE}/pods/enclave"
    log = ""

    def observed() -> bool:
        nonlocal log
        if kube.get(path).get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return True
        with contextlib.suppress(ApiError):
            log = kube.get_text(path + "/log?container=app")
        return "DONE" in log

    wait_until(observed, timeout=120, what="the opted-in pod to print what it sees")
    pod = kube.get(path)
    assert pod["status"]["phase"] == "Running", (pod["status"], log)
    assert pod["spec"]["nodeName"] == installed.node.name
    facts = _facts(log)
    assert facts["AESM_CONNECT"] == "ok", log
    assert facts["SGX_AESM_ADDR"] == "1", log
    assert "DEVICE /dev/sgx_enclave char" in log and "DEVICE /dev/sgx_provision char" in log, log
    assert facts["EPC_UNITS"] == "64", log  # the alibaba plugin hands out one device per MiB
    assert facts["QCNL_PRESENT"] == "False", log  # quote: aesmd - the sidecar quotes, it has the file
    assert facts["PCCS"] == "200", log

    (status,) = [s for s in pod["status"]["initContainerStatuses"] if s["name"] == "aesmd"]
    container_id = status["containerID"].removeprefix("containerd://")
    sidecar = installed.node.ctr(
        "tasks", "exec", "--exec-id", "qcnl-check", container_id, "sh", "-c", SIDECAR_QCNL
    )
    kind, _, text = sidecar.partition("\n")
    assert kind == "regular", sidecar
    qcnl: dict[str, Any] = json.loads(text)
    assert qcnl["pccs_url"] == PCCS_URL, qcnl
    assert qcnl["use_secure_cert"] is True, qcnl
    sidecar_log = kube.get_text(path + "/log?container=aesmd")
    assert f'pccs_url="{PCCS_URL}"' in sidecar_log, sidecar_log

    # The kubelet allocated the EPC: 64 MiB for the application and 8 MiB for the sidecar, of the node's 128.
    node = kube.get(f"/api/v1/nodes/{installed.node.name}")
    assert node["status"]["allocatable"][ALIBABA_EPC] == str(EPC_MIB)
    (sidecar_spec,) = [c for c in pod["spec"]["initContainers"] if c["name"] == "aesmd"]
    assert sidecar_spec["resources"]["limits"][ALIBABA_EPC] == "8"
    kube.delete(path, grace_period_seconds=0)


def _facts(log: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in log.splitlines():
        key, _, value = line.partition(" ")
        found.setdefault(key, value)
    return found
