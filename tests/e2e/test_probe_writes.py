"""benchmarks/probe_writes.py works: a few seconds of it, its own control plane and the real probe process.

The figures of the real run (an hour at the probe's defaults) are in docs/performance.md; here only what the
counting must show whatever the machine's speed: the probe reads its Node once, writes once at start and once
per change, and nothing in between while its heartbeat (5m) is not due.
"""

from __future__ import annotations

import pytest

from benchmarks import probe_writes
from tests.e2e import gate

pytestmark = pytest.mark.e2e


def test_the_benchmark_counts_the_probes_requests_by_phase(request: pytest.FixtureRequest) -> None:
    gate.binaries(request.config)  # skips (or fails where e2e is required) without the control plane
    args = probe_writes.parse(["--duration", "2s", "--interval", "1s", "--heartbeat", "5m"])

    result = probe_writes.run(args)

    assert [phase["name"] for phase in result["phases"]] == ["start", "steady", "flip", "steady"]
    totals: dict[str, float] = {}
    for phase in result["phases"]:
        for request_, count in phase["requests"].items():
            totals[request_] = totals.get(request_, 0.0) + count
    # one read at start; a write at start, one when aesmd went (False) and one when it came back (True)
    assert totals == {"GET node": 1, "PATCH status": 3}
    assert result["phases"][2]["patch_body_bytes"] > 0
    lines: list[str] = []
    probe_writes.report(result, lines.append)
    assert lines[0].startswith("node-probe --interval 1s --heartbeat 5m")
    assert lines[-1].startswith(f"at {probe_writes.CLUSTER_NODES:,} nodes:")
