"""The doctor's ``epc-limits`` check: with ``epcLimits: nri`` the webhook writes EPC limits that only a kernel
with the ``sgx_epc`` misc cgroup enforces; which SGX nodes the node probe finds without one.

The node probe publishes ``SGXEPCCgroupAvailable`` (nodeprobe/checks.py ``check_epc_cgroup``: ``sgx_epc`` in
``misc.capacity``). Mainline Linux has no EPC cgroup (docs/attestation.md "EPC limits"). On such a node the
limits are not enforced, and where the ``sgx-epc`` NRI plugin runs it is worse: the kernel refuses
``sgx_epc`` in ``misc.max`` (EINVAL), so runc fails to create every container that carries a limit. A warning
(as the issue asks): the doctor cannot see which nodes run the plugin.

Pure, as every check: it reads :class:`~operate.facts.ClusterFacts`; :data:`operate.doctor.CHECKS` runs it.
"""

from __future__ import annotations

from confidential_pods.epc import node_capacity
from confidential_pods.wire import mapping
from nodeprobe.condition import EPC_CGROUP, conditions_by_type
from operate.facts import ClusterFacts, Finding, cannot_read, listed

CHECK = "epc-limits"
HINT = (
    "run a kernel with the SGX EPC cgroup on those nodes, or keep the sgx-epc NRI plugin off them "
    '(docs/attestation.md "EPC limits"); or set epcLimits: none'
)


def epc_limits(facts: ClusterFacts) -> Finding:
    """With ``epcLimits: nri``: warn for each SGX node whose probe does not report ``sgx_epc`` (its reason),
    or that publishes no ``SGXEPCCgroupAvailable`` at all; ok when every SGX node reports it."""
    if facts.settings.epc_limits != "nri":
        return Finding(CHECK, "ok", "epcLimits: none: the webhook writes no EPC limits")
    if (problem := cannot_read(CHECK, facts, "nodes")) is not None:
        return problem
    sgx = [n for n in facts.nodes if (node_capacity(n, facts.settings.profile, []) or 0) > 0]
    if not sgx:
        return Finding(CHECK, "ok", "no SGX node (reported by epc-resource)")
    missing: list[str] = []
    for node in sgx:
        name = str(mapping(node.get("metadata")).get("name"))
        condition = conditions_by_type(mapping(node.get("status")).get("conditions"), (EPC_CGROUP,))
        found = condition.get(EPC_CGROUP)
        if found is None:
            missing.append(f"{name} (no {EPC_CGROUP} condition: no node probe)")
        elif found.get("status") != "True":
            reason = str(found.get("reason") or found.get("status") or "Unknown")[:80]
            reason = "".join(c if c.isprintable() else " " for c in reason)  # the node's credentials wrote it
            missing.append(f"{name} ({reason})")
    if missing:
        return Finding(
            CHECK,
            "warn",
            f"epcLimits is nri but {len(missing)} of {len(sgx)} SGX node(s) report no sgx_epc misc cgroup "
            "resource: limits are not enforced there, and where the sgx-epc NRI plugin runs, containers with "
            f"a limit fail to start (the kernel refuses sgx_epc in misc.max): {listed(missing)}",
            HINT,
        )
    return Finding(CHECK, "ok", f"all {len(sgx)} SGX node(s) report the sgx_epc misc cgroup resource")
