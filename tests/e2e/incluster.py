"""What a cluster has and the e2e harness lacks, for the product installed as pods on the e2e node.

- :func:`controller_manager`: kube-controller-manager (tests/e2e/build.sh builds it) with the controllers an
  installation needs, for as long as a test needs them;
- :func:`apiserver_service_route`: pods reach the ``kubernetes`` Service's address without kube-proxy (one
  iptables DNAT rule on the node's bridge to the apiserver on 127.0.0.1);
- :func:`apply_all`, :func:`delete_all`, :func:`delete_and_wait`: what ``kubectl apply --server-side -f`` and
  ``kubectl delete -f`` send (kubectl is not on CI's machine).

:data:`APISERVER_ARGS`: the apiserver flags such a control plane needs.

:func:`installed_on_node`: all of it, the node and an overlay installed as a user installs it (what
tests/e2e/test_on_node.py and test_on_node_intel.py share), with the PCCS stand-in, :func:`opted_in_pod`
and :func:`observe` (what such a pod sees from inside).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.e2e import gate
from tests.e2e.harness import KUBERNETES_SERVICE_IP, BinariesMissingError, ControlPlane, default_bin_dir
from tests.e2e.images import built
from tests.e2e.kube import JSON, ApiError, Kube, pod_events
from tests.e2e.node import Node, NodeBinaries
from tests.e2e.nodeconfig import BRIDGE, NODE_IP
from tests.e2e.nodehost import host_problems
from tests.e2e.nodeimages import busybox_image, pause_image
from tests.e2e.pki import CertificateAuthority
from tests.e2e.processes import HarnessError, Process, wait_until
from tests.manifests.building import MANIFESTS, find_kustomize

#: Webhook Services are called at their endpoints' pod IPs (EndpointSlices), not at their ClusterIP: there is
#: no kube-proxy (the pinned cmd/kube-apiserver/app/server.go, buildServiceResolver).
APISERVER_ARGS = ("--enable-aggregator-routing=true",)
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "job-controller",
    "garbage-collector-controller",
    "endpointslice-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
    "disruption-controller",
    "daemonset-controller",
)
#: Kinds without a namespace, among what test_on_node.py applies.
CLUSTER_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "RuntimeClass",
    "PriorityClass",
}
APPLY_PATCH = "application/apply-patch+yaml"


def object_path(manifest: JSON) -> str:
    """The REST path of ``manifest`` (the kinds applied here: lower-case plural, -y -> -ies, -s -> -ses)."""
    group_version = manifest["apiVersion"]
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    kind = manifest["kind"]
    lower = kind.lower()
    plural = (
        lower[:-1] + "ies" if lower.endswith("y") else lower + "es" if lower.endswith("s") else lower + "s"
    )
    meta = manifest["metadata"]
    if kind in CLUSTER_KINDS:
        return f"{prefix}/{plural}/{meta['name']}"
    return f"{prefix}/namespaces/{meta.get('namespace', 'default')}/{plural}/{meta['name']}"


def apply_all(kube: Kube, manifests: list[JSON]) -> None:
    """What ``kubectl apply --server-side -f`` sends: one apply patch per object, in the file's order
    (kubectl is not on CI's machine; the apiserver's server-side apply is the same either way)."""
    for manifest in manifests:
        kube.request(
            "PATCH",
            object_path(manifest),
            body=manifest,
            params={"fieldManager": "kubectl", "force": "true"},
            content_type=APPLY_PATCH,
        )


def delete_all(kube: Kube, manifests: list[JSON]) -> None:
    """``kubectl delete --ignore-not-found --wait=false -f``: every object, the last first."""
    for manifest in reversed(manifests):
        with contextlib.suppress(ApiError):
            kube.delete(object_path(manifest))


def delete_and_wait(kube: Kube, manifests: list[JSON]) -> None:
    """Delete ``manifests`` while kube-controller-manager runs; wait for their namespaces to be gone (the
    namespace controller deletes what is in them, the kubelet stops the pods)."""
    delete_all(kube, manifests)
    for manifest in manifests:
        if manifest["kind"] == "Namespace":
            path = object_path(manifest)
            wait_until(lambda path=path: gone(kube, path), timeout=120, what=f"{path} gone")  # type: ignore[misc]


def gone(kube: Kube, path: str) -> bool:
    try:
        kube.get(path)
    except ApiError as exc:
        return exc.status == 404
    return False


@contextlib.contextmanager
def apiserver_service_route(kube: Kube, apiserver_url: str) -> Iterator[None]:
    """Pods reach the ``kubernetes`` Service's address: DNAT on the bridge to the apiserver on 127.0.0.1."""
    port = str(kube.get("/api/v1/namespaces/default/services/kubernetes")["spec"]["ports"][0]["port"])
    target = "127.0.0.1:" + apiserver_url.rsplit(":", 1)[1]
    rule = ["PREROUTING", "-i", BRIDGE, "-d", f"{KUBERNETES_SERVICE_IP}/32", "-p", "tcp", "--dport", port]
    rule += ["-j", "DNAT", "--to-destination", target]
    subprocess.run(["sysctl", "-q", "-w", f"net.ipv4.conf.{BRIDGE}.route_localnet=1"], check=True)
    subprocess.run(["iptables", "-t", "nat", "-A", *rule], check=True)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-t", "nat", "-D", *rule], check=False)


@contextlib.contextmanager
def controller_manager(control_plane: ControlPlane, log_dir: Path) -> Iterator[Process]:
    binary = default_bin_dir() / "kube-controller-manager"
    if not os.access(binary, os.X_OK):
        raise BinariesMissingError(f"{binary} missing; run tests/e2e/build.sh")
    api = control_plane.api
    process = Process.start(
        "kube-controller-manager",
        (
            str(binary),
            f"--kubeconfig={api.admin_kubeconfig}",
            "--leader-elect=false",
            "--secure-port=0",
            f"--controllers={','.join(CONTROLLERS)}",
            f"--root-ca-file={api.ca.files.cert}",
            "--concurrent-deployment-syncs=2",
            "--v=2",
        ),
        log_dir,
    )
    try:
        yield process
    finally:
        process.stop()


# --- The product installed on the node as a user installs it (test_on_node.py, test_on_node_intel.py) ---

NAMESPACE = "confidential-pods"
#: Where the tests' own pods go (the PCCS stand-in and the opted-in pods).
APP_NAMESPACE = "e2e-on-node"
PCCS_PORT = 8081
PCCS_URL = f"https://{NODE_IP}:{PCCS_PORT}/sgx/certification/v4/"
UPSTREAM_IMAGE = "ghcr.io/confidential-pods/confidential-pods"
UPSTREAM_SCHEDULER = "registry.k8s.io/kube-scheduler"
#: What an opted-in pod's application prints about itself (its image is ours: python3), then it stays up
#: for the test to look into its other containers.
OBSERVE = r"""
import json, os, socket, ssl, stat, sys, time, urllib.request
qcnl = "/etc/sgx_default_qcnl.conf"
print("QCNL_PRESENT", os.path.lexists(qcnl))
if os.path.lexists(qcnl):
    print("QCNL_KIND", "symlink" if os.path.islink(qcnl) else "regular" if os.path.isfile(qcnl) else "other")
    with open(qcnl) as f:
        print("QCNL_JSON", json.dumps(json.load(f)))
with open("/proc/self/mounts") as f:
    for line in f:
        fields = line.split()
        if fields[1] in ("/var/run/aesmd", "/run/aesmd"):  # /var/run may be a link to /run
            print("AESM_MOUNT", fields[3].split(",")[0])
error = None if os.path.isdir("/var/run/aesmd") else "no socket directory"
for attempt in range(60 if error is None else 0):
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
#: What a test runs in an aesmd container (busybox sh builtins only): the QCNL file's kind, then its text.
QCNL_IN_AESMD = (
    "f=/etc/sgx_default_qcnl.conf; if [ -L $f ]; then echo symlink; elif [ -f $f ]; then echo regular; "
    'else echo missing; fi; while IFS= read -r line || [ -n "$line" ]; do echo "$line"; done < $f'
)


@dataclass
class Installed:
    node: Node
    kube: Kube
    images: dict[str, str]


def built_overlay(
    work: Path, overlay_name: str, images: dict[str, str], edits: Sequence[Sequence[str]] = ()
) -> list[JSON]:
    """The overlay as a user builds it after ``kustomize edit set image`` and setting dcap.pccsUrl (and
    ``aesmSidecarImage``: the aesmd stand-in), from a copy of manifests/ in ``work``. ``edits``: more
    ``kustomize edit`` commands (their arguments) to run in the copy's overlay."""
    kustomize = find_kustomize()
    if kustomize is None:
        raise HarnessError("kustomize not found; .ci/run installs it")
    shutil.copytree(MANIFESTS, work / "manifests")
    overlay = work / "manifests" / "overlays" / overlay_name
    replace = [
        f"{UPSTREAM_IMAGE}={images['confidential-pods']}",
        f"{UPSTREAM_SCHEDULER}={images['kube-scheduler']}",
    ]
    for edit in (["set", "image", *replace], *edits):
        subprocess.run([str(kustomize), "edit", *edit], cwd=overlay, check=True)
    config = yaml.safe_load((overlay / "config.yaml").read_text())
    config.setdefault("dcap", {})["pccsUrl"] = PCCS_URL
    config["aesmSidecarImage"] = images["aesmd-standin"]
    (overlay / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    built = subprocess.run(
        [str(kustomize), "build", str(overlay)], check=True, capture_output=True, text=True
    ).stdout
    return [document for document in yaml.safe_load_all(built) if document]


def deployment_available(kube: Kube, name: str, namespace: str = NAMESPACE) -> bool:
    deployment = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    wanted = deployment["spec"].get("replicas", 1)
    return bool(deployment.get("status", {}).get("availableReplicas", 0) == wanted)


def job_complete(kube: Kube, name: str) -> bool:
    job = kube.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}")
    return any(
        c["type"] == "Complete" and c["status"] == "True" for c in job.get("status", {}).get("conditions", [])
    )


def job_logs(kube: Kube, name: str, namespace: str = NAMESPACE) -> str:
    """The last lines each pod of Job ``name`` logged (its previous run's when it restarted): why a Job does
    not complete, for the failure message."""
    selector = {"labelSelector": f"job-name={name}"}
    pods = kube.get(f"/api/v1/namespaces/{namespace}/pods", params=selector)["items"]
    lines = []
    for pod in pods:
        path = f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}/log"
        for previous in ("true", "false"):
            try:
                text = kube.get_text(f"{path}?previous={previous}&tailLines=20")
            except ApiError:
                continue
            lines.append(f"--- {pod['metadata']['name']} (previous={previous}):\n{text}")
            break
    return "\n".join(lines) or f"(no pod of Job {name} logged anything)"


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


def opted_in_pod(image: str, name: str = "enclave", **annotations: str) -> JSON:
    """A pod asking for confidential-pods (``annotations``: more of ours) whose application prints
    :data:`OBSERVE`'s findings."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "annotations": {"confidential-pods.io/confidential": "true", **annotations},
        },
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
            # optional: in namespaces without the test CA the pod runs too (and says the PCCS is unverified).
            "volumes": [{"name": "pccs-ca", "configMap": {"name": "pccs-ca", "optional": True}}],
        },
    }


def observe(kube: Kube, name: str, namespace: str = APP_NAMESPACE) -> tuple[JSON, dict[str, str], str]:
    """Wait for the opted-in pod ``name`` to print what it sees; its pod, the facts and the whole log."""
    path = f"/api/v1/namespaces/{namespace}/pods/{name}"
    log = ""

    def observed() -> bool:
        nonlocal log
        if kube.get(path).get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return True
        with contextlib.suppress(ApiError):
            log = kube.get_text(path + "/log?container=app")
        return "DONE" in log

    wait_until(observed, timeout=120, what=f"the opted-in pod {name} to print what it sees")
    found: dict[str, str] = {}
    for line in log.splitlines():
        key, _, value = line.partition(" ")
        found.setdefault(key, value)
    return kube.get(path), found, log


def _namespaced(api_version: str, kind: str, name: str, **fields: object) -> JSON:
    meta = {"name": name, "namespace": APP_NAMESPACE}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}


def pccs_ca_file(work: Path) -> Path:
    """The test CA's certificate that :func:`installed_on_node` signs the PCCS stand-in's with, written before
    the overlay is applied (so a hostPath in it may name the file)."""
    return work / "pccs-ca" / "ca.crt"


#: Where the node probe's container finds the test CA of the PCCS stand-in (:func:`probe_here`).
PROBE_PCCS_CA = "/etc/pccs-ca/ca.crt"


def probe_here(node: Node, pccs_ca: Path, *, container: int, host_dev_volume: int) -> str:
    """A JSON patch of a DaemonSet running the node probe (its ``container``-th container; ``host_dev_volume``
    the index of its ``host-dev`` volume), with the test-only changes: the node's stand-in device nodes as its
    /host/dev, a round every 2 s, and the test CA that signed the PCCS stand-in's certificate (a hostPath of
    the one file) as its ``--pccs-ca``: the image trusts only the system's CAs."""
    spec = "/spec/template/spec"
    ca_volume = {"name": "pccs-ca", "hostPath": {"path": str(pccs_ca), "type": "File"}}
    ca_mount = {"name": "pccs-ca", "mountPath": PROBE_PCCS_CA, "readOnly": True}
    probe, host_dev = f"{spec}/containers/{container}", f"{spec}/volumes/{host_dev_volume}"
    return json.dumps(
        [
            {"op": "test", "path": f"{host_dev}/name", "value": "host-dev"},
            {"op": "replace", "path": f"{host_dev}/hostPath/path", "value": str(node.dev_dir)},
            {"op": "add", "path": f"{spec}/volumes/-", "value": ca_volume},
            {"op": "test", "path": f"{probe}/name", "value": "node-probe"},
            {"op": "add", "path": f"{probe}/volumeMounts/-", "value": ca_mount},
            {"op": "add", "path": f"{probe}/args/-", "value": f"--pccs-ca={PROBE_PCCS_CA}"},
            {"op": "add", "path": f"{probe}/args/-", "value": "--interval=2s"},
        ]
    )


@contextlib.contextmanager
def provisioning_device_gone(node: Node) -> Iterator[None]:
    """The node's stand-in ``sgx_provision`` device node renamed away while inside (what the node probe's
    devices check finds missing), back after."""
    provision = node.dev_dir / "sgx_provision"
    away = node.dev_dir / "sgx_provision.away"
    provision.rename(away)
    try:
        yield
    finally:
        away.rename(provision)


def node_condition(kube: Kube, node: str, kind: str = "SGXAttestationReady") -> JSON | None:
    """The Node's condition of ``kind``, if published."""
    conditions = kube.get(f"/api/v1/nodes/{node}")["status"].get("conditions", [])
    found = [c for c in conditions if c["type"] == kind]
    return found[0] if found else None


@contextlib.contextmanager
def node_cluster(
    config: pytest.Config, log_dir: Path, work: Path
) -> Iterator[tuple[ControlPlane, Kube, Node, dict[str, str]]]:
    """A control plane of the caller's own with the real node (our built images in its containerd),
    kube-controller-manager, the default scheduler and the route to the API server's Service; the images'
    references by name. Unavailable (skip, or fail under CONFIDENTIAL_PODS_E2E=require) without them."""
    problems = host_problems()
    if problems:
        gate.unavailable(config, "; ".join(problems))
    try:
        binaries = NodeBinaries.locate()
        archives = built.locate()
    except (BinariesMissingError, built.ImagesMissingError) as exc:
        gate.unavailable(config, str(exc))
    images = {name: archive.reference for name, archive in archives.items()}
    node_images = [pause_image(binaries.pause, work), busybox_image(work), *archives.values()]
    with contextlib.ExitStack() as stack:
        control_plane = stack.enter_context(
            ControlPlane.run(gate.binaries(config), work, log_dir, apiserver_args=APISERVER_ARGS)
        )
        control_plane.start_scheduler(name="kube-scheduler-default")
        kube = control_plane.api.admin_client()
        node = stack.enter_context(Node.run(control_plane.api, work / "node", log_dir, images=node_images))
        stack.enter_context(controller_manager(control_plane, log_dir))
        stack.enter_context(apiserver_service_route(kube, control_plane.api.url))
        yield control_plane, kube, node, images


@contextlib.contextmanager
def installed_on_node(
    config: pytest.Config,
    log_dir: Path,
    work: Path,
    prepare: Callable[[Kube, Node, dict[str, str]], list[JSON]],
) -> Iterator[Installed]:
    """A control plane of the caller's own (the session's may hold a product installed from processes,
    tests/e2e/product.py, whose webhook would mutate these pods too), the node, kube-controller-manager, the
    default scheduler, the PCCS stand-in, and an overlay installed on them: ``prepare`` readies the node for
    it (device plugin, labels, NFD's resources) and returns its manifests (:func:`built_overlay`) to apply."""
    with node_cluster(config, log_dir, work) as (_, kube, node, images), contextlib.ExitStack() as stack:
        manifests = prepare(kube, node, images)

        # The tests' namespace, and the PCCS stand-in in it with a certificate of a test CA for the node's IP.
        app_namespace: JSON = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP_NAMESPACE}}
        apply_all(kube, [app_namespace])
        stack.callback(delete_and_wait, kube, [app_namespace])
        ca_dir = pccs_ca_file(work).parent
        ca = CertificateAuthority.create(ca_dir)
        cert = ca.issue(ca_dir, "pccs", common_name="pccs", ip_addresses=(NODE_IP,), server=True)
        tls = {"tls.crt": cert.cert.read_text(), "tls.key": cert.key.read_text()}
        apply_all(
            kube,
            [
                _namespaced("v1", "Secret", "pccs-tls", type="kubernetes.io/tls", stringData=tls),
                _namespaced("v1", "ConfigMap", "pccs-ca", data={"ca.crt": ca.files.cert.read_text()}),
            ],
        )
        kube.create(f"/api/v1/namespaces/{APP_NAMESPACE}/pods", pccs_pod(images["pccs-standin"]))

        apply_all(kube, manifests)
        stack.callback(delete_and_wait, kube, manifests)
        try:
            wait_until(
                lambda: job_complete(kube, "confidential-pods-certs-install"),
                timeout=180,
                what="the certificate Job to complete",
            )
        except HarnessError as exc:
            raise HarnessError(f"{exc}\n{job_logs(kube, 'confidential-pods-certs-install')}") from None
        for name in ("confidential-pods-webhook", "confidential-scheduler"):
            wait_until(
                lambda name=name: deployment_available(kube, name),  # type: ignore[misc]
                timeout=180,
                what=f"Deployment {name} available",
            )
        yield Installed(node, kube, images)


def refused_until_ready(
    installed: Installed,
    suffix: str,
    broken: contextlib.AbstractContextManager[None],
    reason: str,
    message: str,
    *,
    not_quoting_placed: bool = True,
) -> None:
    """While ``broken``: the probe publishes ``SGXAttestationReady: False`` with ``reason``; a new quoting pod
    is refused there, the extender's FailedScheduling naming the probe's ``message``; a ``quote: none`` pod
    is placed there (unless ``not_quoting_placed`` is false: a node with EPC for one pod only). After: True,
    and the quoting pod is bound and runs (pods named ``*-<suffix>``); the AESM socket connects and the PCCS
    answers from inside it."""
    kube, node = installed.kube, installed.node
    pods = f"/api/v1/namespaces/{APP_NAMESPACE}/pods"
    quoting, not_quoting = f"quoting-{suffix}", f"not-quoting-{suffix}"

    def readiness() -> tuple[str, str]:
        found = node_condition(kube, node.name)
        return (found["status"], found.get("reason", "")) if found else ("", "")

    def bound(name: str) -> str:
        return str(kube.get(f"{pods}/{name}")["spec"].get("nodeName") or "")

    def told_not_ready(name: str) -> bool:
        events = pod_events(kube, APP_NAMESPACE, name, "FailedScheduling")
        return any(f"SGX attestation not ready: {message}" in str(e.get("message")) for e in events)

    wait_until(lambda: readiness()[0] == "True", timeout=60, what="the node ready")
    with broken:
        wait_until(lambda: readiness() == ("False", reason), timeout=60, what=f"the node unready: {reason}")
        kube.create(pods, opted_in_pod(installed.images["confidential-pods"], quoting))
        wait_until(lambda: told_not_ready(quoting), timeout=60, what="the quoting pod refused, told why")
        assert not bound(quoting)
        if not_quoting_placed:
            pod = opted_in_pod(
                installed.images["confidential-pods"], not_quoting, **{"confidential-pods.io/quote": "none"}
            )
            kube.create(pods, pod)
            wait_until(lambda: bound(not_quoting) == node.name, timeout=60, what="the quote: none pod bound")
            assert not bound(quoting)
    wait_until(lambda: readiness()[0] == "True", timeout=60, what="the node ready again")
    # kube-scheduler retries the refused pod on the node's update; when that retry reaches the extender
    # before its own watch applied the update, the pod is refused again and waits for another event or for
    # the manifests' --pod-max-in-unschedulable-pods-duration=60s (docs/extender.md, "Retries after EPC is
    # freed"): up to about 90 s with kube-scheduler's 30 s flush.
    wait_until(lambda: bound(quoting) == node.name, timeout=120, what="the quoting pod bound once ready")
    observed, facts, log = observe(kube, quoting)
    assert observed["status"]["phase"] == "Running", (observed["status"], log)
    assert facts["AESM_CONNECT"] == "ok", log
    assert facts["PCCS"] == "200", log
    for name in (quoting, not_quoting) if not_quoting_placed else (quoting,):
        kube.delete(f"{pods}/{name}", grace_period_seconds=0)
