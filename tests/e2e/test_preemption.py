"""EPC-aware preemption on the real kube-scheduler: a critical enclave evicts the fewest lower-priority ones.

Every test runs once per overlay and scheduling mode. PriorityClasses ``e2e-low`` (100) and ``e2e-high``
(1000); every confidential pod goes to ``confidential-scheduler``, whose one profile counts EPC in
NodeResourcesFit in both modes (so DefaultPreemption's dry run sees it), and whose extender's ``preempt`` verb
checks the candidates against its ledger. There is no kubelet: a background thread plays its part for the
test's namespace — a pod that preemption deleted (``deletionTimestamp`` set) is removed as soon as it shows
up, as a kubelet would after stopping its containers. Another thread samples every node's stored pods
throughout: no node may ever hold more EPC than it has.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from confidential_pods.quantities import MiB
from tests.e2e.kube import JSON, ApiError, Kube, delete_pod, pod_events
from tests.e2e.processes import wait_until
from tests.e2e.product import SCHEDULER_NAME, Installation
from tests.e2e.test_scheduling import (
    POD_EPC,
    SIDECAR_EPC,
    TIMEOUT,
    Scene,
    bound,
    confidential_pod,
    namespace_pods,
    pod_epc,
    scene,
    sgx_node,
)

__all__ = ["scene", "sgx_node"]  # the fixtures, shared with test_scheduling

pytestmark = pytest.mark.e2e

LOW, HIGH = "e2e-low", "e2e-high"


@pytest.fixture(scope="module")
def priority_classes(kube: Kube) -> None:
    for name, value in ((LOW, 100), (HIGH, 1000)):
        body = {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
        }
        try:
            kube.create("/apis/scheduling.k8s.io/v1/priorityclasses", body)
        except ApiError as exc:
            if exc.status != 409:
                raise


class Kubelet(threading.Thread):
    """Removes the namespace's pods that were deleted gracefully (what a kubelet does when they stop)."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        super().__init__(daemon=True)
        self.kube, self.namespace = kube, namespace
        self.stopping = threading.Event()
        self.removed: list[str] = []

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            for name, pod in namespace_pods(self.kube, self.namespace).items():
                if pod["metadata"].get("deletionTimestamp"):
                    delete_pod(self.kube, self.namespace, name)
                    self.removed.append(name)


class Sampler(threading.Thread):
    """Sums the EPC of every stored pod per node when started, every 0.05 s, and once more when stopped (at
    least twice, however fast the scene runs); remembers any node found overcommitted."""

    def __init__(self, kube: Kube, installation: Installation, capacities: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.kube, self.profile, self.capacities = kube, installation.profile, capacities
        self.stopping = threading.Event()
        self.samples = 0
        self.overcommitted: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.sample()
            while not self.stopping.wait(0.05):
                self.sample()
            self.sample()  # the state the scene ended in
        except BaseException as exc:  # kept for the test's assertion: a thread's exception is only printed
            self.error = exc

    def sample(self) -> None:
        for node, capacity in self.capacities.items():
            pods = self.kube.get("/api/v1/pods", params={"fieldSelector": f"spec.nodeName={node}"})["items"]
            used = sum(pod_epc(p, self.profile) for p in pods)
            if used > capacity * MiB:
                self.overcommitted.append(f"{node}: {used // MiB} of {capacity} MiB")
        self.samples += 1


@pytest.fixture
def kubelet(kube: Kube, namespace: str) -> Iterator[Kubelet]:
    thread = Kubelet(kube, namespace)
    thread.start()
    yield thread
    thread.stopping.set()
    thread.join(5)


@dataclass(frozen=True)
class PreemptionScene(Scene):
    """A scheduling scene with the priority classes in place and a kubelet removing deleted pods."""

    kubelet: Kubelet


@pytest.fixture
def preemption(scene: Scene, priority_classes: None, kubelet: Kubelet) -> PreemptionScene:
    return PreemptionScene(*scene.parts(), kubelet=kubelet)


def with_priority(pod: JSON, priority_class: str, labels: dict[str, str] | None = None) -> JSON:
    pod["spec"]["priorityClassName"] = priority_class
    if labels:
        pod["metadata"]["labels"] = labels
    return pod


def fill(
    pods: Callable[..., JSON],
    kube: Kube,
    namespace: str,
    names: list[str],
    labels: dict[str, str] | None = None,
) -> dict[str, str]:
    for name in names:
        stored = pods(with_priority(confidential_pod(name), LOW, labels))
        assert stored["spec"]["schedulerName"] == SCHEDULER_NAME  # one profile, preempting or not
    current = wait_until_bound(kube, namespace, names)
    return {name: current[name] for name in names}


def fill_node(scene: Scene, capacity: int, app: str) -> str:
    """A new SGX node filled with three low-priority pods labelled ``app`` (``<app>-0`` …); its name."""
    node = scene.sgx_node(capacity)
    placed = fill(scene.pods, scene.kube, scene.namespace, [f"{app}-{i}" for i in range(3)], {"app": app})
    assert set(placed.values()) == {node}
    return node


def wait_until_bound(
    kube: Kube, namespace: str, names: list[str], timeout: float = TIMEOUT
) -> dict[str, str]:
    seen: dict[str, dict[str, str]] = {}

    def check() -> bool:
        seen["bound"] = bound(namespace_pods(kube, namespace))
        return all(name in seen["bound"] for name in names)

    wait_until(check, timeout=timeout, what=f"{names} bound", interval=0.5)
    return seen["bound"]


def test_critical_enclave_evicts_the_fewest_lower_priority_enclaves(
    preemption: PreemptionScene,
) -> None:
    installation, kube, namespace, pods, sgx_node = preemption.parts()
    capacity = preemption.capacity(3)
    nodes = [sgx_node(capacity), sgx_node(capacity)]
    sampler = Sampler(kube, installation, dict.fromkeys(nodes, capacity))
    sampler.start()
    try:
        low = fill(pods, kube, namespace, [f"low-{i}" for i in range(6)])
        assert sorted(low.values()) == sorted(nodes * 3)  # both nodes full: half a pod free on each
        before = set(namespace_pods(kube, namespace))
        critical = pods(with_priority(confidential_pod("critical"), HIGH))
        assert critical["spec"]["schedulerName"] == SCHEDULER_NAME
        placed = wait_until_bound(kube, namespace, ["critical"], timeout=2 * TIMEOUT)
        node = placed["critical"]
        # One victim (one freed pod plus the half pod free is enough), on the node the critical pod got.
        gone = before - set(namespace_pods(kube, namespace))
        assert len(gone) == 1, gone
        (victim,) = gone
        assert low[victim] == node
        assert installation.extender.metric("confidential_pods_extender_requests_total", verb="preempt") >= 1
    finally:
        sampler.stopping.set()
        sampler.join(5)
    assert sampler.error is None, f"the sampler stopped: {sampler.error!r}"
    assert not sampler.is_alive() and sampler.samples >= 2 and sampler.overcommitted == []


def test_a_pod_that_fits_nowhere_even_after_eviction_preempts_nothing(
    preemption: PreemptionScene,
) -> None:
    installation, kube, namespace, pods, sgx_node = preemption.parts()
    capacity = preemption.capacity(3)
    node = sgx_node(capacity)
    fill(pods, kube, namespace, [f"low-{i}" for i in range(3)])
    huge = POD_EPC * 5  # more than the node has in total
    pods(with_priority(confidential_pod("huge", epc_mib=huge), HIGH))
    time.sleep(15)  # several scheduling attempts with backoff
    current = namespace_pods(kube, namespace)
    assert "nodeName" not in current["huge"]["spec"]
    assert all(not p["metadata"].get("deletionTimestamp") for p in current.values())
    assert preemption.kubelet.removed == [] and set(current) == {"huge", "low-0", "low-1", "low-2"}
    assert bound(current) == dict.fromkeys(["low-0", "low-1", "low-2"], node)
    # What the user is told: kube-scheduler's own NodeResourcesFit message for the EPC resource (the extender
    # is asked only about nodes it lets through), and that preemption cannot help.
    events = pod_events(kube, namespace, "huge", "FailedScheduling")
    messages = " ".join(event.get("message", "") for event in events)
    assert f"Insufficient {installation.profile.epc_resource}" in messages, messages
    assert "preemption: " in messages and "Preemption is not helpful" in messages, messages


def test_a_pdb_protected_victim_is_avoided_when_another_candidate_exists(
    preemption: PreemptionScene,
) -> None:
    _, kube, namespace, pods, _ = preemption.parts()
    capacity = preemption.capacity(3)
    fill_node(preemption, capacity, "kms")
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "kms"},
        "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "kms"}}},
    }
    kube.create(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets", pdb)
    other_node = fill_node(preemption, capacity, "batch")
    # A pod without EPC and of low priority, bound there by hand (default-scheduler's kind of pod).
    plain = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain"},
        "spec": {
            "nodeName": other_node,
            "priorityClassName": LOW,
            "containers": [{"name": "c", "image": "busybox"}],
        },
    }
    pods(plain)
    critical = pods(with_priority(confidential_pod("critical"), HIGH))
    placed = wait_until_bound(kube, namespace, ["critical"], timeout=2 * TIMEOUT)
    assert placed["critical"] == other_node  # the candidate without PDB violations
    current = namespace_pods(kube, namespace)
    assert all(f"kms-{i}" in current for i in range(3))  # the protected pods stay
    assert "plain" in current  # a pod without EPC is never a victim of an EPC shortage
    assert sum(1 for i in range(3) if f"batch-{i}" not in current) == 1
    assert critical["spec"]["schedulerName"] == SCHEDULER_NAME
    assert SIDECAR_EPC  # (the arithmetic of test_scheduling applies: EFFECTIVE includes the sidecar)
