"""What a cluster has and the e2e harness lacks, for the product installed as pods on the e2e node.

- :func:`controller_manager`: kube-controller-manager (tests/e2e/build.sh builds it) with the controllers an
  installation needs, for as long as a test needs them;
- :func:`apiserver_service_route`: pods reach the ``kubernetes`` Service's address without kube-proxy (one
  iptables DNAT rule on the node's bridge to the apiserver on 127.0.0.1);
- :func:`apply_all`, :func:`delete_all`, :func:`delete_and_wait`: what ``kubectl apply --server-side -f`` and
  ``kubectl delete -f`` send (kubectl is not on CI's machine).

:data:`APISERVER_ARGS`: the apiserver flags such a control plane needs. Used by tests/e2e/test_on_node.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.harness import KUBERNETES_SERVICE_IP, BinariesMissingError, ControlPlane, default_bin_dir
from tests.e2e.kube import JSON, ApiError, Kube
from tests.e2e.nodeconfig import BRIDGE
from tests.e2e.processes import Process, wait_until

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
            wait_until(lambda path=path: _gone(kube, path), timeout=120, what=f"{path} gone")  # type: ignore[misc]


def _gone(kube: Kube, path: str) -> bool:
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
