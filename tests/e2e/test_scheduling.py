"""Scheduling through the real kube-scheduler and our extender: placement by free EPC, never overcommitted.

Every test runs once per overlay of manifests/ and scheduling mode (the ``installation`` fixture: alibaba,
intel, azure, each as shipped — native mode — and with its ledger-mode component): the
``confidential-scheduler`` kube-scheduler runs the build's KubeSchedulerConfiguration, whose extender is
``confidential-pods extender serve`` watching the apiserver (tests/e2e/product.py). In both modes
NodeResourcesFit counts EPC, so a pod that fits nowhere is told ``Insufficient <EPC resource>``; in native
mode kube-scheduler scores and binds, in ledger mode the extender does (its prioritize and bind verbs).

Pods are created as users create them: annotated confidential with an EPC size, mutated by the webhook (EPC
requests, schedulerName, tolerations and, on alibaba, RuntimeClass ``runv`` with an aesmd sidecar). Nodes are
API objects (no kubelet), so a bound pod (``spec.nodeName``) is the result. The tests assert only about their
own pods and nodes.

The arithmetic, in MiB, per overlay (``EFFECTIVE``): each pod asks for ``POD_EPC`` (64); on alibaba the
webhook adds the aesmd sidecar's 8, so a pod holds 72 there and 64 on intel. An SGX node has room for exactly
three pods and half a pod more (``3 * E + E // 2``: 252 on alibaba, 224 on intel); a "small" SGX node has
less than one pod (``E - 8``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pytest

from confidential_pods.profiles import Profile
from confidential_pods.quantities import MiB
from tests.e2e.kube import JSON, Kube, delete_pod, pod_events
from tests.e2e.processes import wait_until
from tests.e2e.product import SCHEDULER_NAME, Installation

pytestmark = pytest.mark.e2e

CONFIDENTIAL = "confidential-pods.io/confidential"
EPC_ANNOTATION = "confidential-pods.io/epc"

#: EPC each pod asks for, MiB.
POD_EPC = 64
#: EPC the webhook adds per pod for the aesmd sidecar, MiB: alibaba's overlay sets runtimeClass runv (a
#: sandbox) and aesmSidecarEPC 8Mi; intel's runs on the host (runtimeClass none) with no sidecar.
SIDECAR_EPC = {"alibaba": 8, "azure": 0, "intel": 0}
#: What one pod holds on its node, MiB, written out: 64 + 8 on alibaba, 64 on intel.
EFFECTIVE = {"alibaba": 72, "azure": 64, "intel": 64}
#: The label of runv's RuntimeClass scheduling.nodeSelector (manifests/runtimeclasses/runv.yaml): alibaba's
#: pods only go to such nodes. Every node here carries it, so EPC alone decides (intel ignores it).
SANDBOX_LABELS = {"alibabacloud.com/sandboxed-container": "Sandboxed-Container.runv"}
#: Intel's device plugin also advertises enclave slots (each enclave container requests 1); kube-scheduler
#: checks that resource itself (only the EPC resource is the extender's).
INTEL_ENCLAVES = {"sgx.intel.com/enclave": "20"}
#: Polling limits, seconds (two shared cores; kube-scheduler backs off up to 10 s between attempts).
TIMEOUT = 90.0


def slots_capacity(effective: int, pods: int) -> int:
    """An SGX node's EPC in MiB with room for exactly ``pods`` pods and half a pod more."""
    return pods * effective + effective // 2


def sgx_allocatable(profile: Profile, epc_mib: int | None) -> dict[str, str]:
    """What the profile's device plugin advertises for ``epc_mib`` MiB of EPC (None: not an SGX node)."""
    if epc_mib is None:
        return {}
    if profile.name == "intel":
        return {profile.epc_resource: f"{epc_mib}Mi", **INTEL_ENCLAVES}
    return {profile.epc_resource: str(epc_mib)}


def confidential_pod(name: str, epc_mib: int = POD_EPC) -> JSON:
    """A pod as a user writes it: annotated confidential with its EPC size; the webhook does the rest."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "annotations": {CONFIDENTIAL: "true", EPC_ANNOTATION: f"{epc_mib}Mi"},
        },
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/enclave-app:1"}]},
    }


def pod_epc(pod: JSON, profile: Profile) -> int:
    """The EPC a stored pod holds on its node, bytes: its containers and native sidecars, plus overhead.

    The pods here have no regular init containers (asserted), so the KEP-753 maximum is just this sum.
    """
    spec = pod["spec"]
    sidecars = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    assert len(sidecars) == len(spec.get("initContainers", [])), spec.get("initContainers")
    total = 0
    for each in [*spec["containers"], *sidecars]:
        requests = each.get("resources", {}).get("requests", {})
        if profile.epc_resource in requests:
            total += profile.parse_resource(requests[profile.epc_resource])
    overhead = spec.get("overhead", {})
    if profile.epc_resource in overhead:
        total += profile.parse_resource(overhead[profile.epc_resource])
    return total


def namespace_pods(kube: Kube, namespace: str) -> dict[str, JSON]:
    items: list[JSON] = kube.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    return {pod["metadata"]["name"]: pod for pod in items}


def node_of(pod: JSON) -> str | None:
    node: str | None = pod["spec"].get("nodeName")
    return node


def bound(pods: dict[str, JSON]) -> dict[str, str]:
    """``{pod name: node}`` of the bound pods."""
    return {name: node for name, pod in pods.items() if (node := node_of(pod)) is not None}


def unschedulable_message(pod: JSON) -> str | None:
    """The message of the pod's ``PodScheduled: False, Unschedulable`` condition, if it has one."""
    for condition in pod["status"].get("conditions", []):
        if (condition["type"], condition["status"], condition.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            message: str = condition.get("message", "")
            return message
    return None


def insufficient(profile: Profile) -> str:
    """What kube-scheduler's NodeResourcesFit says of a node without enough free EPC (both modes)."""
    return f"Insufficient {profile.epc_resource}"


def refused_by_us(kube: Kube, namespace: str, pod: JSON, text: str) -> bool:
    """Whether kube-scheduler recorded ``text`` for not placing the pod: in its ``PodScheduled`` condition and
    in a FailedScheduling event."""
    if text not in (unschedulable_message(pod) or ""):
        return False
    events = pod_events(kube, namespace, pod["metadata"]["name"], "FailedScheduling")
    return any(text in event.get("message", "") for event in events)


def assert_not_overcommitted(kube: Kube, profile: Profile, nodes: Iterable[str]) -> dict[str, int]:
    """Sum the EPC of every pod stored on each node (any namespace), assert it fits; MiB used per node."""
    used: dict[str, int] = {}
    for name in nodes:
        node = kube.get(f"/api/v1/nodes/{name}")
        allocatable = node["status"]["allocatable"].get(profile.epc_resource)
        on_node: list[JSON] = kube.get("/api/v1/pods", params={"fieldSelector": f"spec.nodeName={name}"})[
            "items"
        ]
        total = sum(pod_epc(pod, profile) for pod in on_node)
        capacity = profile.parse_resource(allocatable) if allocatable is not None else 0
        assert total <= capacity, (
            f"node {name} overcommitted: {total // MiB} MiB of EPC bound, {capacity // MiB} MiB allocatable: "
            f"{[p['metadata']['name'] for p in on_node]}"
        )
        used[name] = total // MiB
    return used


def ledger(installation: Installation, node: str) -> tuple[int, set[str]]:
    """Our extender's view of ``node`` (``GET /inspect/<node>``): free EPC in MiB, and the pods it counts
    there (running or reserved by a bind the watch has not shown yet)."""
    view = json.loads(installation.extender.get(f"/inspect/{node}")[1])
    held = {entry["name"] for entry in [*view["pods"], *view["reservations"]]}
    return int(view["free"]) // MiB, held


def binds(installation: Installation) -> float:
    """Binds our extender has done (in ledger mode kube-scheduler delegates binding to its bind verb)."""
    return installation.extender.requests(verb="bind", outcome="ok")


def extender_binds(installation: Installation, placed: int) -> int:
    """How many of ``placed`` binds the extender does in the installation's mode: all or none."""
    return placed if installation.overlay.mode == "ledger" else 0


def wait_pods(
    kube: Kube,
    namespace: str,
    condition: Callable[[dict[str, JSON]], bool],
    what: str,
    timeout: float = TIMEOUT,
) -> dict[str, JSON]:
    """Poll the namespace's pods until ``condition`` holds; return them as last seen."""
    seen: dict[str, dict[str, JSON]] = {}

    def check() -> bool:
        seen["pods"] = namespace_pods(kube, namespace)
        return condition(seen["pods"])

    wait_until(check, timeout=timeout, what=what, interval=0.5)
    return seen["pods"]


def settled(
    kube: Kube, namespace: str, names: Sequence[str], placed: int, reason: str
) -> Callable[[dict[str, JSON]], bool]:
    """A :func:`wait_pods` condition: at least ``placed`` of ``names`` bound, each other one refused with
    ``reason``."""

    def condition(current: dict[str, JSON]) -> bool:
        on_nodes = bound(current)
        return len(on_nodes) >= placed and all(
            refused_by_us(kube, namespace, current[name], reason) for name in names if name not in on_nodes
        )

    return condition


@pytest.fixture
def sgx_node(installation: Installation, make_node: Callable[..., JSON]) -> Callable[[int | None], str]:
    """Factory: a Ready node with ``epc_mib`` MiB of the overlay's EPC (None: no SGX at all); its name."""

    def make(epc_mib: int | None) -> str:
        node = make_node(
            sgx_allocatable(installation.profile, epc_mib),
            name=f"e2e-sgx-{uuid.uuid4().hex[:8]}",
            labels=SANDBOX_LABELS,
        )
        name: str = node["metadata"]["name"]
        return name

    return make


@dataclass(frozen=True)
class Scene:
    """What a scheduling test works with: one overlay's installation, its fresh namespace, the pod
    factory and SGX nodes on demand."""

    installation: Installation
    kube: Kube
    namespace: str
    pods: Callable[..., JSON]
    sgx_node: Callable[[int | None], str]

    def parts(self) -> tuple[Installation, Kube, str, Callable[..., JSON], Callable[[int | None], str]]:
        return self.installation, self.kube, self.namespace, self.pods, self.sgx_node

    def capacity(self, slots: int) -> int:
        """An SGX node's EPC (MiB) with room for ``slots`` of this overlay's pods and half a pod more."""
        return slots_capacity(EFFECTIVE[self.installation.profile.name], slots)

    def settle(self, names: list[str], fitting: int) -> tuple[dict[str, JSON], dict[str, str]]:
        """Create confidential pods ``names``; once ``fitting`` are bound and the rest refused for EPC, the
        namespace's pods and the bound ones' nodes."""
        create_batch(self.installation, self.pods, names)
        refused = len(names) - fitting
        current = wait_pods(
            self.kube,
            self.namespace,
            settled(self.kube, self.namespace, names, fitting, insufficient(self.installation.profile)),
            f"{fitting} pods bound and the other {refused} refused for EPC",
        )
        return current, bound(current)


@pytest.fixture
def scene(
    installation: Installation,
    kube: Kube,
    namespace: str,
    pods: Callable[..., JSON],
    sgx_node: Callable[[int | None], str],
) -> Scene:
    return Scene(installation, kube, namespace, pods, sgx_node)


def create_batch(
    installation: Installation, pods: Callable[..., JSON], names: Iterable[str], epc_mib: int = POD_EPC
) -> list[JSON]:
    """Create confidential pods; check each was mutated for our scheduler with the expected effective EPC."""
    profile = installation.profile
    effective = (epc_mib + SIDECAR_EPC[profile.name]) * MiB
    created: list[JSON] = []
    for name in names:
        stored = pods(confidential_pod(name, epc_mib))
        assert stored["spec"]["schedulerName"] == SCHEDULER_NAME
        assert pod_epc(stored, profile) == effective, stored["spec"]
        created.append(stored)
    return created


def test_batch_lands_only_where_epc_is_free(
    scene: Scene,
) -> None:
    """8 pods, room for 6 on two SGX nodes: 3 each (bound by our extender in ledger mode, by kube-scheduler in
    native mode); the rest Pending, told why.

    A small SGX node (less than one pod) and a node without SGX get none.
    """
    installation, kube, _, _, sgx_node = scene.parts()
    profile = installation.profile
    effective = EFFECTIVE[profile.name]
    assert effective == POD_EPC + SIDECAR_EPC[profile.name]
    big = [sgx_node(slots_capacity(effective, 3)) for _ in range(2)]
    small = sgx_node(effective - 8)
    plain = sgx_node(None)
    before = binds(installation)

    names = [f"batch-{i}" for i in range(8)]
    current, placed = scene.settle(names, 6)
    assert len(placed) == 6, placed
    assert sorted(placed.values()) == sorted(big * 3), placed
    # Why each node was refused, as kube-scheduler tells the user (one line per reason, with a node count):
    # NodeResourcesFit finds too little EPC on all four (the node without SGX has none); on intel the node
    # without SGX has no sgx.intel.com/enclave to give either. `kubectl confidential-pods why` has numbers.
    reasons = [f"4 {insufficient(profile)}"]
    if profile.name == "intel":
        reasons.append("1 Insufficient sgx.intel.com/enclave")
    for name in set(names) - set(placed):
        assert current[name]["status"]["phase"] == "Pending"
        message = unschedulable_message(current[name]) or ""
        for reason in reasons:
            assert reason in message, message

    used = assert_not_overcommitted(kube, profile, [*big, small, plain])
    assert used == {big[0]: 3 * effective, big[1]: 3 * effective, small: 0, plain: 0}
    # Ledger mode: every bind went through our extender's bind verb; native mode: none did.
    assert binds(installation) - before == extender_binds(installation, len(placed))


def test_pod_too_large_for_every_node_stays_pending_told_why(
    scene: Scene,
) -> None:
    installation, kube, namespace, pods, sgx_node = scene.parts()
    profile = installation.profile
    effective = EFFECTIVE[profile.name]
    capacity = slots_capacity(effective, 3)
    nodes = [sgx_node(capacity) for _ in range(2)]
    before = binds(installation)
    # 1Gi asked (alibaba adds the sidecar's 8Mi): far above the nodes' 252Mi / 224Mi.
    create_batch(installation, pods, ["huge"], epc_mib=1024)

    expected = f"0/{len(nodes)} nodes are available: {len(nodes)} {insufficient(profile)}"
    current = wait_pods(
        kube,
        namespace,
        lambda c: refused_by_us(kube, namespace, c["huge"], expected),
        f"pod huge refused with {expected!r}",
    )
    assert node_of(current["huge"]) is None
    assert current["huge"]["status"]["phase"] == "Pending"
    assert assert_not_overcommitted(kube, profile, nodes) == dict.fromkeys(nodes, 0)
    assert binds(installation) == before


def test_deleting_pods_frees_epc_for_the_pending_pod(
    scene: Scene,
) -> None:
    """One node with room for 3 pods: the 4th waits for EPC; deleting bound pods lets it in.

    The first delete must free the pod's EPC in the extender's ledger (``GET /inspect/<node>``).
    The pending pod is then scheduled at its next attempt. kube-scheduler retries a pod an extender refused
    on *any* cluster event (kubernetes/kubernetes#122022), and the delete is one, but its retry can reach
    the extender before the extender's own watch has delivered that delete: the extender then refuses once
    more from a ledger a few milliseconds stale, and with no further event the pod waits in the
    unschedulable pool for up to 5 minutes (``--pod-max-in-unschedulable-pods-duration``). On a cluster
    other events come soon; here the test makes the next one itself: a second delete, once the ledger has
    freed the first pod's EPC, so the retry it causes is certain to see that EPC free.
    """
    installation, kube, namespace, _, sgx_node = scene.parts()
    profile = installation.profile
    effective = EFFECTIVE[profile.name]
    capacity = slots_capacity(effective, 3)
    node = sgx_node(capacity)
    before = binds(installation)
    names = [f"fill-{i}" for i in range(4)]
    current, placed = scene.settle(names, 3)
    assert sorted(placed.values()) == [node] * 3, placed
    (waiting,) = set(names) - set(placed)
    # What the 4th pod was told: the node has too little EPC left (the half pod left over).
    messages = [e["message"] for e in pod_events(kube, namespace, waiting, "FailedScheduling")]
    assert any(insufficient(profile) in m for m in messages), messages
    assert assert_not_overcommitted(kube, profile, [node]) == {node: 3 * effective}
    # The extender's ledger agrees once its watch has shown the binds (at once in ledger mode: it reserved
    # them when it bound them).
    wait_until(
        lambda: ledger(installation, node) == (capacity - 3 * effective, set(placed)),
        timeout=TIMEOUT,
        what=f"the extender's ledger to count {sorted(placed)} on {node}",
        interval=0.2,
    )

    first, second = sorted(placed)[:2]
    delete_pod(kube, namespace, first)
    wait_until(
        lambda: first not in ledger(installation, node)[1],
        timeout=TIMEOUT,
        what=f"the extender to free the EPC of {first} on {node}",
        interval=0.2,
    )
    # Freed: the ledger counts what it holds, no more (the waiting pod may have taken the EPC already).
    free_mib, held = ledger(installation, node)
    assert held <= (set(placed) - {first}) | {waiting}, held
    assert free_mib == capacity - len(held) * effective, (free_mib, held)
    delete_pod(kube, namespace, second)
    current = wait_pods(
        kube,
        namespace,
        lambda c: first not in c and second not in c and node_of(c[waiting]) is not None,
        f"pod {waiting} to be bound after {first} and {second} were deleted",
    )
    assert node_of(current[waiting]) == node
    assert assert_not_overcommitted(kube, profile, [node]) == {node: 2 * effective}
    assert binds(installation) - before == extender_binds(installation, 4)


def test_extender_restart_mid_batch_loses_nothing_and_overcommits_nothing(
    scene: Scene,
) -> None:
    """Room for exactly 6 pods on two nodes, 6 pods; the extender is restarted once the first is bound.

    Pods 0-2 are created and the extender stopped as soon as one is bound; pods 3-4 are created while it is
    down (nothing may be bound then: the extender is not ignorable); pod 5 after it is back. The new process
    rebuilds its ledger from the apiserver: every pod ends up bound, exactly once, by one of the two
    processes, 3 per node (a bind lost, or EPC forgotten across the restart, would leave a pod Pending or
    overcommit a node).
    """
    installation, kube, namespace, pods, sgx_node = scene.parts()
    profile = installation.profile
    effective = EFFECTIVE[profile.name]
    nodes = [sgx_node(slots_capacity(effective, 3)) for _ in range(2)]
    names = [f"restart-{i}" for i in range(6)]
    create_batch(installation, pods, names[:3])
    wait_pods(kube, namespace, lambda c: len(bound(c)) >= 1, "a first pod bound before the restart")

    # Stopped, then started again: the pods bound in between are read while it is down.
    installation.extender.stop()
    bound_by_old = bound(namespace_pods(kube, namespace))
    create_batch(installation, pods, names[3:5])
    assert bound(namespace_pods(kube, namespace)) == bound_by_old  # nothing is bound without the extender
    installation.extender.start()
    create_batch(installation, pods, names[5:])

    current = wait_pods(
        kube, namespace, lambda c: len(bound(c)) == len(names), "every pod bound after the restart"
    )
    placed = bound(current)
    assert {name: placed[name] for name in bound_by_old} == bound_by_old
    assert sorted(placed.values()) == sorted(nodes * 3), placed
    assert assert_not_overcommitted(kube, profile, nodes) == dict.fromkeys(nodes, 3 * effective)
    # The new process (its counters start at 0) bound exactly the pods the old one had not (ledger mode).
    assert binds(installation) == extender_binds(installation, len(names) - len(bound_by_old))


def test_a_pod_goes_where_most_epc_is_free_scored_as_the_mode_scores(scene: Scene) -> None:
    """Two SGX nodes alike but for their EPC: the pod goes to the one with more free (LeastAllocated), scored
    by kube-scheduler's NodeResourcesFit in native mode (the extender is never asked to prioritize or bind)
    and by the extender's prioritize verb in ledger mode (which binds it too); a pod too large is told why."""
    installation, kube, namespace, _, sgx_node = scene.parts()
    profile = installation.profile
    effective = EFFECTIVE[profile.name]
    roomy, tight = sgx_node(slots_capacity(effective, 3)), sgx_node(slots_capacity(effective, 1))
    prioritized, bound_before = installation.extender.requests(verb="prioritize"), binds(installation)
    filtered = installation.extender.requests(verb="filter")

    _, placed = scene.settle(["first"], 1)

    assert placed == {"first": roomy}, placed
    asked = installation.extender.requests(verb="prioritize") - prioritized
    assert (asked >= 1) if installation.overlay.mode == "ledger" else (asked == 0), asked
    assert installation.extender.requests(verb="filter") > filtered  # asked to filter in both modes
    assert binds(installation) == bound_before + extender_binds(installation, 1)
    create_batch(installation, scene.pods, ["huge"], epc_mib=1024)
    reason = insufficient(profile)
    wait_pods(kube, namespace, lambda c: refused_by_us(kube, namespace, c["huge"], reason), "huge refused")
    assert assert_not_overcommitted(kube, profile, [roomy, tight]) == {roomy: effective, tight: 0}
