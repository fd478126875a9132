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
  confidential-scheduler of the build (two replicas, leader election, the extender sidecar reading the
  scheduler's configuration for its mode) places the opted-in pod.

An opted-in pod also runs in a namespace enforcing Pod Security ``restricted``; a pod that succeeds or
is deleted frees its EPC for the next pending one; a pod created with ``nodeName`` beyond the node's EPC is
refused by the kubelet and never counted; restarting the device plugin, the kubelet and the extender loses no
accounting; preemption terminates the victim and starts the preemptor. The overlay runs in native mode (its
default): kube-scheduler counts, scores and binds, the extender filters and checks preemption. The node probe
alone (components/node-probe, added to the overlay as docs/install.md tells ACK users) publishes the node's
SGXAttestationReady, which the extender honours; it holds one of the node's 128 MiB. The intel overlay:
tests/e2e/test_on_node_intel.py; the Helm chart: tests/e2e/test_on_node_chart.py.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.incluster import (
    APP_NAMESPACE,
    NAMESPACE,
    PCCS_URL,
    QCNL_IN_AESMD,
    Installed,
    apply_all,
    built_overlay,
    delete_all,
    delete_and_wait,
    installed_on_node,
    node_condition,
    observe,
    opted_in_pod,
    pccs_ca_file,
    probe_here,
    provisioning_device_gone,
    refused_until_ready,
)
from tests.e2e.kube import JSON, ApiError, Kube
from tests.e2e.node import Node
from tests.e2e.processes import wait_until
from tests.manifests.building import MANIFESTS, NODE_PROBE_CONFIG

pytestmark = pytest.mark.e2e

EPC_MIB = 128
#: The node probe's own EPC (components/node-probe: one unit, so that it runs where EPC is advertised).
PROBE_MIB = 1
PROBE_NAMESPACE = NODE_PROBE_CONFIG["namespace"]
PROBE_DAEMONSET = "confidential-pods-node-probe"
ALIBABA_EPC = "alibabacloud.com/sgx_epc_MiB"
#: The node label the ``runv`` RuntimeClass of manifests/runtimeclasses selects.
RUNV_LABEL = ("alibabacloud.com/sandboxed-container", "Sandboxed-Container.runv")


def alibaba_node(kube: Kube, node: Node) -> None:
    """The node as ACK's SGX nodes are: Alibaba's device plugin with 128 MiB of EPC, the ``runv``
    RuntimeClass and the node label it selects."""
    node.start_device_plugin("alibaba", f"--epc-mib={EPC_MIB}")
    kube.patch(f"/api/v1/nodes/{node.name}", {"metadata": {"labels": {RUNV_LABEL[0]: RUNV_LABEL[1]}}})
    apply_all(kube, list(yaml.safe_load_all((MANIFESTS / "runtimeclasses" / "runv.yaml").read_text())))


@pytest.fixture(scope="module")
def installed(
    request: pytest.FixtureRequest, e2e_log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    """The alibaba overlay on the node (tests/e2e/incluster.py): the alibaba device plugin with 128 MiB
    of EPC, the ``runv`` RuntimeClass and the node label it selects; the node probe's DaemonSet with the
    test-only changes of :func:`probe_here` (the stand-in device nodes, the PCCS stand-in's CA), Ready."""
    work = tmp_path_factory.mktemp("on-node")

    def prepare(kube: Kube, node: Node, images: dict[str, str]) -> list[JSON]:
        alibaba_node(kube, node)
        probe_patch = probe_here(node, pccs_ca_file(work), container=0, host_dev_volume=2)
        edits = [
            # the node probe alone, added as docs/install.md says (with the ConfigMap it reads)
            ["add", "component", "../../components/node-probe"],
            [
                "add",
                "configmap",
                NODE_PROBE_CONFIG["name"],
                "--namespace",
                PROBE_NAMESPACE,
                "--from-file=config.yaml",
            ],
            ["add", "patch", "--kind", "DaemonSet", "--name", PROBE_DAEMONSET, "--patch", probe_patch],
        ]
        return built_overlay(work, "alibaba", images, edits)

    with installed_on_node(request.config, e2e_log_dir / "on-node", work, prepare) as product:
        # The node probe's pod holds its unit of EPC before any test counts the node's.
        wait_until(lambda: probe_ready(product.kube), timeout=120, what="the node probe's DaemonSet Ready")
        yield product


def probe_ready(kube: Kube) -> bool:
    daemonset = kube.get(f"/apis/apps/v1/namespaces/{PROBE_NAMESPACE}/daemonsets/{PROBE_DAEMONSET}")
    status = daemonset.get("status", {})
    return bool(status.get("desiredNumberScheduled") == 1 and status.get("numberReady") == 1)


def app_pods(view: dict[str, Any]) -> set[str]:
    """The names of the tests' pods the extender counts on the node (the node probe's left out)."""
    return {p["name"] for p in view["pods"] if p["namespace"] == APP_NAMESPACE}


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

    pod, facts, log = observe(kube, "enclave")
    path = f"/api/v1/namespaces/{APP_NAMESPACE}/pods/enclave"
    assert pod["status"]["phase"] == "Running", (pod["status"], log)
    assert pod["spec"]["nodeName"] == installed.node.name
    assert facts["AESM_CONNECT"] == "ok", log
    assert facts["SGX_AESM_ADDR"] == "1", log
    assert "DEVICE /dev/sgx_enclave char" in log and "DEVICE /dev/sgx_provision char" in log, log
    assert facts["EPC_UNITS"] == "64", log  # the alibaba plugin hands out one device per MiB
    assert facts["QCNL_PRESENT"] == "False", log  # quote: aesmd - the sidecar quotes, it has the file
    assert facts["PCCS"] == "200", log

    (status,) = [s for s in pod["status"]["initContainerStatuses"] if s["name"] == "aesmd"]
    container_id = status["containerID"].removeprefix("containerd://")
    sidecar = installed.node.ctr(
        "tasks", "exec", "--exec-id", "qcnl-check", container_id, "sh", "-c", QCNL_IN_AESMD
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


RESTRICTED_NAMESPACE = "e2e-restricted"


def test_an_opted_in_pod_runs_in_a_namespace_enforcing_restricted(installed: Installed) -> None:
    """Pod Security ``restricted`` enforced: the webhook's sidecar and volumes pass it, the pod runs."""
    kube = installed.kube
    namespace: JSON = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": RESTRICTED_NAMESPACE,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
        },
    }
    apply_all(kube, [namespace])
    try:
        _wait_gone(kube, f"/api/v1/namespaces/{APP_NAMESPACE}/pods/enclave")  # its EPC free again
        pod = opted_in_pod(installed.images["confidential-pods"])
        pod["spec"]["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        pod["spec"]["containers"][0]["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
        created = kube.create(f"/api/v1/namespaces/{RESTRICTED_NAMESPACE}/pods", pod)
        (sidecar,) = [c for c in created["spec"]["initContainers"] if c["name"] == "aesmd"]
        assert sidecar["securityContext"]["runAsNonRoot"] is True, sidecar
        observed, facts, log = observe(kube, "enclave", RESTRICTED_NAMESPACE)
        assert observed["status"]["phase"] == "Running", (observed["status"], log)
        assert facts["AESM_CONNECT"] == "ok", log
        assert facts["SGX_AESM_ADDR"] == "1", log
        assert facts["EPC_UNITS"] == "64", log
        assert "DEVICE /dev/sgx_enclave char" in log, log
        # The same pod without the securityContext restricted asks for is refused: the level is enforced.
        unrestricted = opted_in_pod(installed.images["confidential-pods"], "unrestricted")
        try:
            kube.create(f"/api/v1/namespaces/{RESTRICTED_NAMESPACE}/pods", unrestricted)
        except ApiError as exc:
            assert exc.status == 403 and "restricted" in str(exc), exc
        else:
            raise AssertionError("a pod violating restricted was admitted")
    finally:
        delete_and_wait(kube, [namespace])


#: An application that runs until the test creates /tmp/done in its container, then exits 0.
WAIT_FOR_DONE = "import os, time\nwhile not os.path.exists('/tmp/done'):\n    time.sleep(0.2)\n"


def test_a_pod_that_succeeds_or_is_deleted_frees_its_epc_for_the_next_pending_pod(
    installed: Installed,
) -> None:
    """128 MiB of EPC hold one opted-in pod (64 + the sidecar's 8): the next one waits, refused by the
    confidential-scheduler pod's kube-scheduler (native mode: NodeResourcesFit counts the EPC), until the
    first succeeds; the third waits until the second is deleted. Both are then bound and run."""
    kube = installed.kube
    pods = f"/api/v1/namespaces/{APP_NAMESPACE}/pods"
    _wait_gone(kube, f"{pods}/enclave")

    def refused(name: str) -> bool:
        pod = kube.get(f"{pods}/{name}")
        conditions = pod.get("status", {}).get("conditions", [])
        # Native mode: kube-scheduler's NodeResourcesFit counts the EPC resource the device plugin advertises.
        return any(
            c["type"] == "PodScheduled"
            and c.get("reason") == "Unschedulable"
            and f"Insufficient {ALIBABA_EPC}" in c.get("message", "")
            for c in conditions
        )

    try:
        _create_waiting(installed, "first")
        wait_until(lambda: _phase(kube, "first") == "Running", timeout=60, what="first Running")
        _create_waiting(installed, "second")
        wait_until(lambda: refused("second"), timeout=60, what="second refused for want of EPC")
        assert not kube.get(f"{pods}/second")["spec"].get("nodeName")

        (status,) = kube.get(f"{pods}/first")["status"]["containerStatuses"]
        container = status["containerID"].removeprefix("containerd://")
        installed.node.ctr(
            "tasks", "exec", "--exec-id", "done", container, "python3", "-c", "open('/tmp/done', 'w').close()"
        )
        wait_until(lambda: _phase(kube, "first") == "Succeeded", timeout=60, what="first Succeeded")
        wait_until(lambda: _phase(kube, "second") == "Running", timeout=120, what="second bound and Running")
        assert kube.get(f"{pods}/second")["spec"]["nodeName"] == installed.node.name

        _create_waiting(installed, "third")
        wait_until(lambda: refused("third"), timeout=60, what="third refused for want of EPC")
        kube.delete(f"{pods}/second", grace_period_seconds=0)
        wait_until(lambda: _phase(kube, "third") == "Running", timeout=120, what="third bound and Running")
        assert kube.get(f"{pods}/third")["spec"]["nodeName"] == installed.node.name
    finally:
        for name in ("first", "second", "third"):
            with contextlib.suppress(ApiError):
                kube.delete(f"{pods}/{name}", grace_period_seconds=0)


def _create_waiting(installed: Installed, name: str) -> None:
    """An opted-in pod whose application runs until the test creates /tmp/done in its container."""
    pod = opted_in_pod(installed.images["confidential-pods"], name)
    pod["spec"]["containers"][0]["command"] = ["python3", "-c", WAIT_FOR_DONE]
    installed.kube.create(f"/api/v1/namespaces/{APP_NAMESPACE}/pods", pod)


def _phase(kube: Kube, name: str) -> str:
    return str(kube.get(f"/api/v1/namespaces/{APP_NAMESPACE}/pods/{name}").get("status", {}).get("phase", ""))


def _wait_gone(kube: Kube, path: str) -> None:
    def gone() -> bool:
        try:
            kube.get(path)
        except ApiError as exc:
            return exc.status == 404
        return False

    wait_until(gone, timeout=60, what=f"{path} gone")


def _container_id(kube: Kube, path: str, container: str) -> str:
    pod = kube.get(path)
    statuses = [*pod["status"].get("initContainerStatuses", []), *pod["status"].get("containerStatuses", [])]
    (status,) = [s for s in statuses if s["name"] == container]
    return str(status["containerID"]).removeprefix("containerd://")


def _leader_pod(kube: Kube) -> str:
    """The path of the confidential-scheduler pod holding the lease."""
    lease = kube.get(f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/confidential-scheduler")
    holder = str(lease["spec"]["holderIdentity"])
    pods = kube.get(
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        params={"labelSelector": "app.kubernetes.io/name=confidential-scheduler"},
    )["items"]
    (leader,) = [p for p in pods if holder.startswith(p["metadata"]["name"])]
    return f"/api/v1/namespaces/{NAMESPACE}/pods/{leader['metadata']['name']}"


def extender_view(installed: Installed) -> dict[str, Any]:
    """The leader's extender's ``GET /inspect/<node>``, asked from inside its container (it listens on
    localhost only)."""
    container = _container_id(installed.kube, _leader_pod(installed.kube), "extender")
    url = f"http://127.0.0.1:8444/inspect/{installed.node.name}"
    script = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    exec_id = f"inspect-{time.monotonic_ns()}"
    text = installed.node.ctr("tasks", "exec", "--exec-id", exec_id, container, "python", "-c", script)
    view: dict[str, Any] = json.loads(text)
    return view


def _unschedulable_for_epc(kube: Kube, path: str) -> bool:
    conditions = kube.get(path).get("status", {}).get("conditions", [])
    return any(
        c["type"] == "PodScheduled"
        and c.get("reason") == "Unschedulable"
        and f"Insufficient {ALIBABA_EPC}" in c.get("message", "")
        for c in conditions
    )


def test_a_pod_created_with_node_name_beyond_the_epc_is_refused_by_the_kubelet_and_never_counted(
    installed: Installed,
) -> None:
    """``spec.nodeName`` skips every scheduler: the kubelet's admission refuses the pod (256 MiB asked of
    128), it fails without starting, and neither kube-scheduler nor the extender counts it: an opted-in pod
    then binds and runs in the EPC it would have taken."""
    kube = installed.kube
    pods = f"/api/v1/namespaces/{APP_NAMESPACE}/pods"
    _wait_gone(kube, f"{pods}/enclave")
    greedy: JSON = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "greedy"},
        "spec": {
            "nodeName": installed.node.name,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "app",
                    "image": installed.images["confidential-pods"],
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                    "resources": {"limits": {ALIBABA_EPC: str(2 * EPC_MIB)}},
                }
            ],
        },
    }
    try:
        kube.create(pods, greedy)
        wait_until(
            lambda: kube.get(f"{pods}/greedy").get("status", {}).get("phase") == "Failed",
            timeout=60,
            what="the kubelet to refuse the pod",
        )
        status = kube.get(f"{pods}/greedy")["status"]
        # The kubelet's device manager refuses it at admission (kubelet v1.37: before the resource predicate).
        assert status["reason"] == "UnexpectedAdmissionError", status
        available = EPC_MIB - PROBE_MIB  # the node probe holds its unit
        assert f"{ALIBABA_EPC}. Requested: {2 * EPC_MIB}, Available: {available}" in status["message"], status
        assert not status.get("containerStatuses") or all(
            "running" not in s.get("state", {}) for s in status["containerStatuses"]
        ), status
        view = extender_view(installed)
        assert "greedy" not in app_pods(view), view
        assert int(view["used"]) == PROBE_MIB * 2**20, view

        kube.create(pods, opted_in_pod(installed.images["confidential-pods"]))
        observed, facts, log = observe(kube, "enclave")
        assert observed["status"]["phase"] == "Running", (observed["status"], log)
        assert facts["EPC_UNITS"] == "64", log
    finally:
        for name in ("greedy", "enclave"):
            with contextlib.suppress(ApiError):
                kube.delete(f"{pods}/{name}", grace_period_seconds=0)


def test_restarting_the_device_plugin_the_kubelet_and_the_extender_loses_no_accounting(
    installed: Installed,
) -> None:
    """One running opted-in pod holds 72 of the node's 128 MiB; after each restart — the device plugin, the
    kubelet, the leader's extender container — it is still Running with its EPC, the node advertises 128
    again, the extender's ledger counts it, and a second pod stays refused for want of EPC. When the first
    pod exits, the second runs."""
    kube = installed.kube
    node = installed.node
    pods = f"/api/v1/namespaces/{APP_NAMESPACE}/pods"
    _wait_gone(kube, f"{pods}/enclave")

    def advertised() -> str:
        return str(kube.get(f"/api/v1/nodes/{node.name}")["status"]["allocatable"].get(ALIBABA_EPC, ""))

    def accounted(what: str) -> None:
        wait_until(
            lambda: advertised() == str(EPC_MIB), timeout=90, what=f"128 MiB advertised again after {what}"
        )
        wait_until(
            lambda: app_pods(extender_view(installed)) == {"holder"},
            timeout=90,
            what=f"the extender's ledger to count the running pod after {what}",
        )
        view = extender_view(installed)
        assert int(view["used"]) == (72 + PROBE_MIB) * 2**20, (what, view)
        assert _phase(kube, "holder") == "Running", what
        assert _container_id(kube, f"{pods}/holder", "app") == holder_container, what  # never restarted
        assert not kube.get(f"{pods}/waiting")["spec"].get("nodeName"), f"second pod bound after {what}"
        wait_until(
            lambda: _unschedulable_for_epc(kube, f"{pods}/waiting"),
            timeout=90,
            what=f"the second pod refused for EPC after {what}",
        )

    try:
        _create_waiting(installed, "holder")
        wait_until(lambda: _phase(kube, "holder") == "Running", timeout=60, what="holder Running")
        holder_container = _container_id(kube, f"{pods}/holder", "app")
        _create_waiting(installed, "waiting")
        wait_until(
            lambda: _unschedulable_for_epc(kube, f"{pods}/waiting"), timeout=60, what="waiting refused"
        )

        node.start_device_plugin("alibaba", f"--epc-mib={EPC_MIB}")  # stops the running one first
        accounted("the device plugin's restart")
        node.stop_kubelet()
        node.start_kubelet()
        wait_until(node.ready, timeout=90, what="the node Ready after the kubelet's restart")
        accounted("the kubelet's restart")
        extender = _container_id(kube, _leader_pod(kube), "extender")
        node.ctr("tasks", "kill", "--signal", "SIGKILL", extender)
        wait_until(
            lambda: (
                _container_id(kube, _leader_pod(kube), "extender") != extender
                and all(s["ready"] for s in kube.get(_leader_pod(kube))["status"]["containerStatuses"])
            ),
            timeout=120,
            what="the extender container restarted and ready",
        )
        accounted("the extender's restart")

        node.ctr(
            "tasks",
            "exec",
            "--exec-id",
            "done",
            holder_container,
            "python3",
            "-c",
            "open('/tmp/done', 'w').close()",
        )
        wait_until(lambda: _phase(kube, "holder") == "Succeeded", timeout=60, what="holder Succeeded")
        wait_until(
            lambda: _phase(kube, "waiting") == "Running", timeout=120, what="the second pod bound and Running"
        )
    finally:
        for name in ("holder", "waiting"):
            with contextlib.suppress(ApiError):
                kube.delete(f"{pods}/{name}", grace_period_seconds=0)


def test_preemption_on_the_node_terminates_the_victim_and_starts_the_preemptor(installed: Installed) -> None:
    """A low-priority opted-in pod holds 72 of 128 MiB; a high-priority one (72 more) fits only if it goes:
    kube-scheduler preempts it (the extender's preempt verb agreeing), the kubelet stops it, and the
    preemptor runs on the node."""
    kube = installed.kube
    pods = f"/api/v1/namespaces/{APP_NAMESPACE}/pods"
    classes = [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
        }
        for name, value in (("e2e-low", 100), ("e2e-high", 1000))
    ]
    apply_all(kube, classes)

    def create(name: str, priority_class: str) -> None:
        pod = opted_in_pod(installed.images["confidential-pods"], name)
        pod["spec"]["containers"][0]["command"] = ["sleep", "3600"]
        pod["spec"]["priorityClassName"] = priority_class
        kube.create(pods, pod)

    def pod(name: str) -> JSON | None:
        try:
            return kube.get(f"{pods}/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    try:
        _wait_gone(kube, f"{pods}/enclave")
        create("low", "e2e-low")
        wait_until(
            lambda: (pod("low") or {}).get("status", {}).get("phase") == "Running",
            timeout=60,
            what="low Running",
        )
        low_container = _container_id(kube, f"{pods}/low", "app")
        create("high", "e2e-high")
        wait_until(lambda: pod("low") is None, timeout=120, what="the victim evicted and gone")
        wait_until(
            lambda: (pod("high") or {}).get("status", {}).get("phase") == "Running",
            timeout=120,
            what="high Running",
        )
        high = pod("high")
        assert high is not None and high["spec"]["nodeName"] == installed.node.name

        # The victim's container really stops: the kubelet kills it once the pod is gone from the API (a grace
        # period of 0 removes the object at once), and containerd no longer runs it.
        def victim_running() -> bool:
            tasks = installed.node.ctr("tasks", "list").splitlines()
            return any(line.startswith(low_container) and "RUNNING" in line for line in tasks)

        wait_until(lambda: not victim_running(), timeout=60, what="the victim's container stopped")
        events = kube.get(
            f"/api/v1/namespaces/{APP_NAMESPACE}/events", params={"fieldSelector": "involvedObject.name=low"}
        )
        assert any(e.get("reason") == "Preempted" for e in events["items"]), [
            e.get("reason") for e in events["items"]
        ]
    finally:
        for name in ("low", "high"):
            with contextlib.suppress(ApiError):
                kube.delete(f"{pods}/{name}", grace_period_seconds=0)
        delete_all(kube, classes)


def test_the_node_probe_alone_publishes_readiness_that_the_extender_honours(installed: Installed) -> None:
    """components/node-probe, as ACK runs it (the pods bring their aesmd sidecar): the probe, alone in its
    DaemonSet with its unit of EPC, publishes ``SGXAttestationReady: True`` from the device nodes, the QCNL
    file rendered from the webhook's own configuration and its PCCS (verified with the test CA), the node's
    aesmd skipped. With the provisioning device node gone it publishes False (SGXDevicesMissing) and a quoting
    pod is refused there with the probe's message; with it back, True, and the pod binds and runs."""
    kube, node = installed.kube, installed.node
    wait_until(
        lambda: (node_condition(kube, node.name) or {}).get("status") == "True",
        timeout=60,
        what="the probe to publish SGXAttestationReady True",
    )
    published = node_condition(kube, node.name)
    assert published is not None and published["reason"] == "AllChecksPassed", published
    assert "aesm not checked (--skip aesm)" in published["message"], published
    assert f"PCCS {PCCS_URL}rootcacrl answers" in published["message"], published
    (probe,) = kube.get(f"/api/v1/namespaces/{PROBE_NAMESPACE}/pods")["items"]
    assert probe["spec"]["nodeName"] == node.name
    assert probe["spec"]["containers"][0]["resources"]["limits"][ALIBABA_EPC] == str(PROBE_MIB)

    _wait_gone(kube, f"/api/v1/namespaces/{APP_NAMESPACE}/pods/enclave")
    refused_until_ready(
        installed,
        "devices",
        provisioning_device_gone(node),
        "SGXDevicesMissing",
        "SGX device(s) missing",
        not_quoting_placed=False,
    )
