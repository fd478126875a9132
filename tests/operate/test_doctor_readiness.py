"""The doctor's ``attestation-readiness`` check (operate/readiness.py): the SGX nodes the node probe finds not
ready, with its reason, and whether pods that quote have anywhere left to go."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from operate.doctor import diagnose
from operate.readiness import attestation_readiness
from tests.operate.test_doctor import EPC, NOW, SETTINGS, healthy, node


def probed(name: str, status: str, reason: str = "", age: timedelta = timedelta(minutes=1)) -> dict[str, Any]:
    sgx = node(name, {EPC: "93"})
    beat = (NOW - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {"type": "SGXAttestationReady", "status": status, "reason": reason, "lastHeartbeatTime": beat}
    sgx["status"]["conditions"] = [condition]
    return sgx


@pytest.mark.parametrize(
    ("nodes", "unknown", "status", "says"),
    [
        (
            [node("sgx-a", {EPC: "93"}), node("plain", {})],
            "allow",
            "ok",
            "no SGX node publishes SGXAttestationReady "
            "(no node probe: add components/node-probe, or the chart's nodeProbe.enabled)",
        ),
        ([probed("sgx-a", "True"), probed("sgx-b", "True")], "allow", "ok", "2 of 2 SGX node(s) ready"),
        (
            [probed("sgx-a", "True"), probed("sgx-b", "False", "PCCSUnreachable")],
            "allow",
            "warn",
            "1 of 2 SGX node(s) refuse pods that quote: sgx-b (SGX attestation not ready: PCCSUnreachable)",
        ),
        ([probed("sgx-a", "False", "AESMUnavailable")], "allow", "fail", "refused on every SGX node (1)"),
        ([node("sgx-a", {EPC: "93"})], "refuse", "fail", "refused on every SGX node (1)"),
        ([probed("sgx-a", "True", age=timedelta(minutes=20))], "refuse", "fail", "not renewed for 20 min"),
        ([probed("sgx-a", "True", age=timedelta(minutes=20))], "allow", "ok", "1 of 1 SGX node(s) ready"),
        ([node("plain", {})], "allow", "ok", "no SGX node"),
    ],
    ids=[
        "no-probe",
        "all-ready",
        "one-unready",
        "all-unready",
        "unknown-refused",
        "stale-refused",
        "stale-allowed",
        "no-sgx",
    ],
)
def test_the_check(nodes: list[dict[str, Any]], unknown: str, status: str, says: str) -> None:
    facts = healthy(nodes=nodes, settings=replace(SETTINGS, attestation_unknown=unknown))
    finding = attestation_readiness(facts)
    assert finding.status == status, finding
    assert says in finding.message, finding.message
    if status != "ok":
        assert "node probe" in finding.hint


def test_it_runs_in_the_doctor_and_is_skipped_when_nodes_cannot_be_read() -> None:
    assert {f.check: f.status for f in diagnose(healthy())}["attestation-readiness"] == "ok"
    unreadable = healthy(unreadable={"nodes": "403 nodes is forbidden"})
    assert {f.check: f.status for f in diagnose(unreadable)}["attestation-readiness"] == "skipped"
