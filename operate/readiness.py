"""The doctor's ``attestation-readiness`` check: which SGX nodes the node probe finds not ready for
attestation (their ``SGXAttestationReady`` condition, extender/readiness.py), with the probe's reason for
each, and whether the configuration's ``attestationUnknown`` leaves quoting pods anywhere to go.

Pure, as every check: it reads :class:`~operate.facts.ClusterFacts`; :data:`operate.doctor.CHECKS` runs it.
"""

from __future__ import annotations

import time

from confidential_pods.epc import node_capacity
from confidential_pods.wire import mapping
from extender.readiness import CONDITION, node_readiness, refusal
from operate.facts import ClusterFacts, Finding, cannot_read, listed

CHECK = "attestation-readiness"


def attestation_readiness(facts: ClusterFacts) -> Finding:
    """The SGX nodes a quoting pod is refused on, and why; ok when none is."""
    if (problem := cannot_read(CHECK, facts, "nodes")) is not None:
        return problem
    unknown = facts.settings.attestation_unknown
    now = facts.now.timestamp() if facts.now is not None else time.time()
    sgx = [n for n in facts.nodes if (node_capacity(n, facts.settings.profile, []) or 0) > 0]
    if not sgx:
        return Finding(CHECK, "ok", "no SGX node (reported by epc-resource)")
    probed = refused = 0
    reasons: list[str] = []
    for node in sgx:
        name = str(mapping(node.get("metadata")).get("name"))
        readiness = node_readiness(node)
        probed += readiness is not None
        why = refusal(name, readiness, unknown, now)
        if why is not None:
            refused += 1
            reasons.append(f"{name} ({why})")
    if refused == len(sgx):
        return Finding(
            CHECK,
            "fail",
            f"pods that quote are refused on every SGX node ({len(sgx)}): {listed(reasons)}",
            'look at the node probe on those nodes (docs/attestation.md "Node probe")'
            + ("; or set attestationUnknown: allow" if unknown == "refuse" and probed < len(sgx) else ""),
        )
    if refused:
        return Finding(
            CHECK,
            "warn",
            f"{refused} of {len(sgx)} SGX node(s) refuse pods that quote: {listed(reasons)}",
            'look at the node probe on those nodes (docs/attestation.md "Node probe")',
        )
    if not probed:
        what = (
            f"no SGX node publishes {CONDITION} (no node probe: add components/node-probe, or the chart's "
            "nodeProbe.enabled): pods that quote go to any of them"
        )
        return Finding(CHECK, "ok", what)
    return Finding(CHECK, "ok", f"{probed} of {len(sgx)} SGX node(s) ready for attestation by the node probe")
