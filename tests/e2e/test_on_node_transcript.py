"""docs/install.md's newcomer transcript, replayed on the real node (issue 23, Proof: "a newcomer's transcript
in docs/install.md ... from a fresh clone to ``doctor`` all green on the e2e control plane that a test
replays").

Every ``console`` block of the section "A first install, as a newcomer sees it" runs as written, with bash,
one after the other, in a directory that holds a copy of charts/ (as a fresh clone has it) and the values file
the section shows; stdout and stderr interleaved as a terminal shows them; each output and exit code compared
with the document's after :func:`tests.e2e.transcript.normalise` (the apiserver's port, Helm's clock, how long
``doctor --wait`` waited and its progress lines, the ConfigMaps' content hashes, dates: see its
``NORMALISATIONS`` for why each varies). ``CONFIDENTIAL_PODS_TRANSCRIPT=record`` writes what ran into the
document instead: its outputs are copied from a run, never typed.

What the transcript starts from, and the test provides:

- **the package installed**: ``confidential-pods`` on PATH is this interpreter's (the README's
  ``pip install .`` is not replayed: it would install into the test's own environment);
- **a kubeconfig**: ``KUBECONFIG`` names the admin kubeconfig of a control plane of the module's own
  (tests/e2e/incluster.py's pieces: the node, kube-controller-manager, the default scheduler, the
  ``kubernetes`` Service's route), so no command names a cluster;
- **a cluster as ACK's is**: Alibaba's device plugin with 128 MiB of EPC, the ``runv`` RuntimeClass and the
  node label it selects (tests/e2e/test_on_node.py's ``alibaba_node``), and an AESM DaemonSet for host-mode
  pods, as ACK's add-on runs one (here ``kube-system/aesmd``: the aesmd stand-in as root, its hostPath
  ``/var/run/aesmd`` being the host's ``/run/aesmd``, refused when it exists and removed after, as
  tests/e2e/test_on_node_intel.py does);
- **the images the values name**: there is no registry. The images tests/e2e/images/build.sh built are tagged
  in the node's containerd with the references the transcript uses (:data:`TAGS`: ours as
  ``registry.example.com/confidential-pods:0.1.0``, the aesmd stand-in as
  ``registry.example.com/aesmd:2.26``, our kube-scheduler build of v1.37.2 as
  ``registry.k8s.io/kube-scheduler:v1.37.2``, the image the chart picks for the cluster's version), which
  ``imagePullPolicy: IfNotPresent`` then finds on the node. The commands and the values file are not changed.

After the transcript, an opted-in pod runs with what was injected (the install the newcomer made works), and
the release is uninstalled as a user removes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import gate, transcript
from tests.e2e.incluster import (
    APP_NAMESPACE,
    NAMESPACE,
    apply_all,
    node_cluster,
    observe,
    opted_in_pod,
)
from tests.e2e.kube import JSON, Kube
from tests.e2e.node import Node
from tests.e2e.processes import wait_until
from tests.e2e.test_on_node import ALIBABA_EPC, EPC_MIB, alibaba_node
from tests.e2e.transcript import (
    Replayed,
    difference,
    newcomer_directory,
    newcomer_environment,
    parse,
    record,
)

pytestmark = pytest.mark.e2e

#: The references the transcript's values (and the chart, for kube-scheduler) name, by the built image.
TAGS = {
    "confidential-pods": "registry.example.com/confidential-pods:0.1.0",
    "aesmd-standin": "registry.example.com/aesmd:2.26",
    "kube-scheduler": "registry.k8s.io/kube-scheduler:v1.37.2",
}
HOST_AESMD_DIR = Path("/var/run/aesmd")
AESMD = ("kube-system", "aesmd")


@dataclass
class Cluster:
    node: Node
    kube: Kube
    kubeconfig: Path
    images: dict[str, str]


def aesmd_daemonset(image: str) -> JSON:
    """An AESM DaemonSet as ACK's add-on runs one for host-mode pods: aesmd (the stand-in) as root, serving
    the node's /var/run/aesmd."""
    namespace, name = AESMD
    probe = {"exec": {"command": ["/bin/sh", "-c", "test -S /var/run/aesmd/aesm.socket"]}, "periodSeconds": 2}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "aesmd",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "securityContext": {"runAsUser": 0},
                            "readinessProbe": probe,
                            "volumeMounts": [{"name": "aesmd", "mountPath": "/var/run/aesmd"}],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "aesmd",
                            "hostPath": {"path": str(HOST_AESMD_DIR), "type": "DirectoryOrCreate"},
                        }
                    ],
                },
            },
        },
    }


def epc_advertised(kube: Kube, node: Node) -> bool:
    allocatable = kube.get(f"/api/v1/nodes/{node.name}")["status"].get("allocatable", {})
    return bool(allocatable.get(ALIBABA_EPC) == str(EPC_MIB))


def daemonset_ready(kube: Kube) -> bool:
    namespace, name = AESMD
    status = kube.get(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}").get("status", {})
    return bool(status.get("desiredNumberScheduled") == 1 and status.get("numberReady") == 1)


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, e2e_log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The cluster the newcomer's kubeconfig points at (see the module's docstring); nothing of ours in it."""
    config = request.config
    if HOST_AESMD_DIR.exists():
        gate.unavailable(config, f"{HOST_AESMD_DIR} exists on this machine: the test would share it")
    work = tmp_path_factory.mktemp("on-node-transcript")
    log_dir = e2e_log_dir / "on-node-transcript"
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, HOST_AESMD_DIR, ignore_errors=True)
        control_plane, kube, node, images = stack.enter_context(node_cluster(config, log_dir, work))
        alibaba_node(kube, node)
        # The device plugin has registered; the kubelet reports its EPC with the next node status update.
        wait_until(lambda: epc_advertised(kube, node), timeout=60, what=f"the node advertising {ALIBABA_EPC}")
        for name, reference in TAGS.items():
            node.ctr("images", "tag", "--force", images[name], reference)
        apply_all(kube, [aesmd_daemonset(images["aesmd-standin"])])
        wait_until(lambda: daemonset_ready(kube), timeout=120, what="the AESM DaemonSet ready")
        apply_all(kube, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP_NAMESPACE}}])
        yield Cluster(node, kube, control_plane.api.admin_kubeconfig, images)


def test_the_newcomers_transcript_replays(cluster: Cluster, tmp_path: Path) -> None:
    markdown = transcript.DOCUMENT.read_text(encoding="utf-8")
    steps = parse(markdown).steps
    cwd = newcomer_directory(tmp_path)
    env = newcomer_environment(KUBECONFIG=str(cluster.kubeconfig))
    outputs: list[Replayed] = []
    try:
        for step in steps:
            outputs.append(transcript.replay(step, cwd, env))
            if os.environ.get(transcript.RECORD_ENV) != "record":
                problem = difference(step, outputs[-1])
                assert not problem, (
                    f"{problem}\n(when the change is meant: {transcript.RECORD_ENV}=record python -m pytest "
                    "tests/e2e/test_on_node_transcript.py writes what ran into docs/install.md)"
                )
        if os.environ.get(transcript.RECORD_ENV) == "record":
            transcript.DOCUMENT.write_text(record(markdown, outputs), encoding="utf-8")

        # The install works: an opted-in pod runs, placed by the confidential scheduler, with its EPC and the
        # aesmd sidecar of the image the values named.
        kube = cluster.kube
        created = kube.create(
            f"/api/v1/namespaces/{APP_NAMESPACE}/pods", opted_in_pod(cluster.images["confidential-pods"])
        )
        assert created["spec"]["schedulerName"] == "confidential-scheduler"
        sidecars = [c for c in created["spec"].get("initContainers", []) if c["name"] == "aesmd"]
        assert [c["image"] for c in sidecars] == [TAGS["aesmd-standin"]], sidecars
        pod, facts, log = observe(kube, "enclave")
        assert pod["status"]["phase"] == "Running", (pod["status"], log)
        assert facts["AESM_CONNECT"] == "ok", log
        assert facts["EPC_UNITS"] == "64", log
        kube.delete(f"/api/v1/namespaces/{APP_NAMESPACE}/pods/enclave", grace_period_seconds=0)
    finally:
        helm = shutil.which("helm", path=env["PATH"])
        assert helm is not None
        subprocess.run(
            [helm, "uninstall", "confidential-pods", "--namespace", NAMESPACE, "--wait", "--timeout", "120s"],
            env=env,
            capture_output=True,
            timeout=180,
            check=False,
        )
