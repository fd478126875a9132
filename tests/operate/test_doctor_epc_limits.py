"""The doctor's ``epc-limits`` check (operate/epclimits.py): with ``epcLimits: nri``, the SGX nodes whose
node probe reports no ``sgx_epc`` misc cgroup resource (``SGXEPCCgroupAvailable``): limits not enforced."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from confidential_pods.settings import EpcLimits
from operate.doctor import diagnose, render
from operate.epclimits import epc_limits
from tests.operate.test_doctor import EPC, SETTINGS, healthy, node


def probed(name: str, status: str, reason: str) -> dict[str, Any]:
    """An SGX node whose probe published SGXEPCCgroupAvailable (beside its SGXAttestationReady)."""
    sgx = node(name, {EPC: "93"})
    sgx["status"]["conditions"] = [
        {"type": "SGXAttestationReady", "status": "True", "reason": "AllChecksPassed"},
        {"type": "SGXEPCCgroupAvailable", "status": status, "reason": reason, "message": "…"},
    ]
    return sgx


AVAILABLE = ("True", "SGXEPCCgroupAvailable")
MISSING = ("False", "SGXEPCCgroupMissing")


@pytest.mark.parametrize(
    ("limits", "nodes", "status", "says"),
    [
        ("none", [probed("sgx-a", *MISSING)], "ok", "epcLimits: none: the webhook writes no EPC limits"),
        ("nri", [probed("sgx-a", *AVAILABLE), probed("sgx-b", *AVAILABLE)], "ok", "all 2 SGX node(s) report"),
        (
            "nri",
            [probed("sgx-a", *AVAILABLE), probed("sgx-b", *MISSING), node("plain", {})],
            "warn",
            "1 of 2 SGX node(s) report no sgx_epc misc cgroup resource: limits are not enforced there, and "
            "where the sgx-epc NRI plugin runs, containers with a limit fail to start (the kernel refuses "
            "sgx_epc in misc.max): sgx-b (SGXEPCCgroupMissing)",
        ),
        (
            "nri",
            [probed("sgx-a", "False", "MiscCgroupMissing"), node("sgx-b", {EPC: "93"})],
            "warn",
            "2 of 2 SGX node(s) report no sgx_epc misc cgroup resource: limits are not enforced there, and "
            "where the sgx-epc NRI plugin runs, containers with a limit fail to start (the kernel refuses "
            "sgx_epc in misc.max): sgx-a (MiscCgroupMissing), sgx-b (no SGXEPCCgroupAvailable condition: no "
            "node probe)",
        ),
        ("nri", [probed("sgx-a", "Unknown", "ProbeIncomplete")], "warn", "sgx-a (ProbeIncomplete)"),
        ("nri", [probed("sgx-a", "False", "Evil\x1b[2J")], "warn", "sgx-a (Evil [2J)"),
        ("nri", [node("plain", {})], "ok", "no SGX node"),
    ],
    ids=["none", "all-available", "one-missing", "missing-and-unprobed", "unknown", "escapes", "no-sgx"],
)
def test_the_check(limits: EpcLimits, nodes: list[dict[str, Any]], status: str, says: str) -> None:
    finding = epc_limits(healthy(nodes=nodes, settings=replace(SETTINGS, epc_limits=limits)))
    assert (finding.check, finding.status) == ("epc-limits", status), finding
    assert says in finding.message, finding.message
    if status == "warn":
        assert "epcLimits: none" in finding.hint and "docs/attestation.md" in finding.hint


def test_it_runs_in_the_doctor_and_is_skipped_when_nodes_cannot_be_read() -> None:
    nri = replace(SETTINGS, epc_limits="nri")
    findings = diagnose(healthy(settings=nri, nodes=[probed("sgx-a", *MISSING)]))
    assert {f.check: f.status for f in findings}["epc-limits"] == "warn"
    assert any(line.split()[:2] == ["warn", "epc-limits"] for line in render(findings).splitlines())
    unreadable = healthy(settings=nri, unreadable={"nodes": "403 nodes is forbidden"})
    assert {f.check: f.status for f in diagnose(unreadable)}["epc-limits"] == "skipped"
