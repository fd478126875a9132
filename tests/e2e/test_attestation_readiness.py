"""Attestation-ready nodes on the real kube-scheduler (issue 22, items 2 and 3), per overlay and mode.

The Node condition ``SGXAttestationReady`` is written through ``nodes/status`` as the node probe writes it
(a strategic merge of that one condition). A pod that quotes (the webhook's default, ``quote: aesmd``) is not
placed on a node whose condition is ``False``: its FailedScheduling event carries the probe's message; a
``quote: none`` pod still goes there; once the condition turns ``True`` the quoting pod binds there (the
node's update is the cluster event that retries it). Preemption never evicts for such a node.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.kube import JSON, Kube, pod_events
from tests.e2e.processes import wait_until
from tests.e2e.product import Installation
from tests.e2e.test_preemption import HIGH, LOW, priority_classes, with_priority
from tests.e2e.test_scheduling import (
    EFFECTIVE,
    TIMEOUT,
    Scene,
    confidential_pod,
    namespace_pods,
    node_of,
    scene,
    sgx_node,
    slots_capacity,
)

__all__ = ["priority_classes", "scene", "sgx_node"]  # the fixtures

pytestmark = pytest.mark.e2e

CONDITION = "SGXAttestationReady"
STRATEGIC = "application/strategic-merge-patch+json"
PCCS_DOWN = "PCCS https://pccs.e2e.invalid:8081/sgx/certification/v4/ unreachable: connection refused"


def set_readiness(kube: Kube, node: str, status: str, reason: str, message: str) -> None:
    condition = {"type": CONDITION, "status": status, "reason": reason, "message": message}
    kube.patch(
        f"/api/v1/nodes/{node}/status", {"status": {"conditions": [condition]}}, content_type=STRATEGIC
    )
    stored = kube.get(f"/api/v1/nodes/{node}")["status"]["conditions"]
    assert {c["type"] for c in stored} >= {"Ready", CONDITION}, stored  # merged, not replaced


def with_quote(pod: JSON, quote: str) -> JSON:
    pod["metadata"]["annotations"]["confidential-pods.io/quote"] = quote
    return pod


def refused_for_readiness(kube: Kube, namespace: str, name: str) -> bool:
    events = pod_events(kube, namespace, name, "FailedScheduling")
    return any(f"SGX attestation not ready: {PCCS_DOWN}" in str(e.get("message", "")) for e in events)


def test_a_quoting_pod_avoids_an_unready_node_until_it_is_ready(scene: Scene) -> None:
    installation, kube, namespace, pods, sgx_node = scene.parts()
    effective = EFFECTIVE[installation.profile.name]
    node = sgx_node(slots_capacity(effective, 3))
    set_readiness(kube, node, "False", "PCCSUnreachable", PCCS_DOWN)
    wait_until(
        lambda: ledger_readiness(installation, node) == "False", timeout=TIMEOUT, what="the extender saw it"
    )

    pods(confidential_pod("quoting"))
    wait_until(
        lambda: refused_for_readiness(kube, namespace, "quoting"),
        timeout=TIMEOUT,
        what="the quoting pod refused with the probe's message",
    )
    assert node_of(namespace_pods(kube, namespace)["quoting"]) is None
    pods(with_quote(confidential_pod("not-quoting"), "none"))
    wait_until(
        lambda: node_of(namespace_pods(kube, namespace)["not-quoting"]) == node,
        timeout=TIMEOUT,
        what="the quote: none pod bound to the unready node",
    )
    assert node_of(namespace_pods(kube, namespace)["quoting"]) is None

    set_readiness(kube, node, "True", "AttestationReady", "SGX devices, AESM and PCCS answer")
    wait_until(
        lambda: node_of(namespace_pods(kube, namespace)["quoting"]) == node,
        timeout=TIMEOUT,
        what="the quoting pod bound once the node is ready",
    )


# One overlay in each mode: the rule is alike for every profile, and the last step waits for kube-scheduler's
# unschedulable flush (NodeResourcesFit's rejection waits for no node-condition event): about 90 s a build.
@pytest.mark.parametrize("installation", ["alibaba", "alibaba+ledger"], indirect=True)
def test_no_victim_is_evicted_for_a_node_the_preemptor_cannot_use(
    scene: Scene, priority_classes: None
) -> None:
    """A node full of a low-priority pod, unready: kube-scheduler's dry run proposes evicting it for a
    high-priority quoting pod, the extender's ``/preempt`` drops the node (it could not use it), and nothing
    is evicted. Once the node is ready again, the same pod preempts there."""
    installation, kube, namespace, pods, sgx_node = scene.parts()
    effective = EFFECTIVE[installation.profile.name]
    node = sgx_node(slots_capacity(effective, 1))
    pods(with_priority(confidential_pod("low"), LOW))
    wait_until(
        lambda: node_of(namespace_pods(kube, namespace)["low"]) == node,
        timeout=TIMEOUT,
        what="the low-priority pod bound",
    )
    set_readiness(kube, node, "False", "PCCSUnreachable", PCCS_DOWN)
    wait_until(
        lambda: ledger_readiness(installation, node) == "False", timeout=TIMEOUT, what="the extender saw it"
    )
    dropped = installation.extender.metric(
        "confidential_pods_extender_preemption_nodes_total", decision="dropped"
    )

    pods(with_priority(confidential_pod("critical"), HIGH))
    wait_until(
        lambda: (
            installation.extender.metric(
                "confidential_pods_extender_preemption_nodes_total", decision="dropped"
            )
            > dropped
        ),
        timeout=TIMEOUT,
        what="the extender to drop the unready node from preemption",
    )
    current = namespace_pods(kube, namespace)
    assert not current["low"]["metadata"].get("deletionTimestamp"), "a victim was evicted for an unready node"
    assert node_of(current["critical"]) is None

    set_readiness(kube, node, "True", "AttestationReady", "SGX devices, AESM and PCCS answer")
    wait_until(
        lambda: (
            "low" not in (c := namespace_pods(kube, namespace))
            or bool(c["low"]["metadata"].get("deletionTimestamp"))
        ),
        timeout=2 * TIMEOUT,
        what="the low-priority pod evicted once the node is ready",
    )


def ledger_readiness(installation: Installation, node: str) -> str | None:
    """The node's SGXAttestationReady status as the extender's ledger holds it (``/inspect/<node>``)."""
    try:
        status, body = installation.extender.get(f"/inspect/{node}")
    except OSError:  # 404 until the watch shows the node
        return None
    if status != 200:
        return None
    attestation = json.loads(body).get("attestation")
    return None if attestation is None else str(attestation["status"])
