"""Attestation readiness in the extender (issue 22, items 2 and 3): the Node condition
``SGXAttestationReady`` read from Node objects (watch, list, snapshot), a quoting pod refused on a node whose
condition is False — with the probe's message, as unresolvable so that preemption never evicts for it — and
the configuration's choice for nodes without a known condition."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from confidential_pods.quantities import MiB
from confidential_pods.settings import Settings
from extender.binding import MemoryBinder
from extender.ledger import EpcLedger
from extender.podepc import PodEpc
from extender.preemption import Victims
from extender.readiness import CONDITION, Readiness, node_readiness, pod_quotes, refusal
from extender.snapshot import fill_ledger_from_facts, snapshot_facts
from extender.verbs import Verbs
from extender.watchevents import Listing, apply_event
from extender.wire import Candidates, PreemptionRequest
from tests.extender import scheduler_json as sj
from tests.extender.ledgers import ledger_of

PCCS_DOWN = "PCCS https://pccs.example:8081/sgx/certification/v4/ unreachable: connection refused"


def condition(status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": CONDITION, "status": status, "reason": reason, "message": message}


def node_with(name: str, *conditions: dict[str, str], epc_mib: int = 93) -> dict[str, Any]:
    node = {"apiVersion": "v1", "kind": "Node", **sj.node(name, epc_mib)}
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}, *conditions]
    return node


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], None),
        ([condition("True", "Ready", "all checks pass")], Readiness("True", "Ready", "all checks pass")),
        (
            [condition("False", "PCCSUnreachable", PCCS_DOWN)],
            Readiness("False", "PCCSUnreachable", PCCS_DOWN),
        ),
        ([condition("Unknown")], Readiness("Unknown")),
        ([condition("maybe", "X")], Readiness("Unknown", "X")),
        ([{"type": CONDITION, "status": "False", "message": "a\nb\x1b[31m" + "x" * 1000}], None),
    ],
    ids=["none", "true", "false", "unknown", "not-a-status", "control-characters"],
)
def test_the_condition_is_read_from_the_node(
    conditions: list[dict[str, str]], expected: Readiness | None
) -> None:
    node = node_with("n1", *conditions)
    readiness = node_readiness(node)
    if conditions and conditions[0].get("message", "").startswith("a\n"):
        assert readiness is not None and readiness.status == "False"
        assert readiness.message.startswith("a b ") and len(readiness.message) == 300
        assert readiness.message.isprintable()
    else:
        assert readiness == expected


@pytest.mark.parametrize(
    ("status", "quotes"),
    [
        (None, True),  # not injected by the webhook: it may quote
        ({"quote": "aesmd"}, True),
        ({"quote": "in-process"}, True),
        ({"quote": "none"}, False),
        ("not json", True),
        ([1, 2], True),
    ],
)
def test_which_pods_quote(status: object, quotes: bool) -> None:
    pod = sj.pod()
    if status is not None:
        text = status if isinstance(status, str) else json.dumps(status)
        pod["metadata"].setdefault("annotations", {})["confidential-pods.io/status"] = text
    assert pod_quotes(pod) is quotes


@pytest.mark.parametrize(
    ("readiness", "unknown", "expected"),
    [
        (Readiness("True"), "refuse", None),
        (
            Readiness("False", "PCCSUnreachable", PCCS_DOWN),
            "allow",
            f"SGX attestation not ready: {PCCS_DOWN}",
        ),
        (
            Readiness("False", "AESMUnavailable"),
            "allow",
            "SGX attestation not ready: AESMUnavailable",
        ),
        (None, "allow", None),
        (Readiness("Unknown"), "allow", None),
        (
            None,
            "refuse",
            f"SGX attestation readiness unknown (no {CONDITION} condition; attestationUnknown: refuse)",
        ),
        (
            Readiness("Unknown", "ProbeStale"),
            "refuse",
            "SGX attestation readiness unknown (ProbeStale; attestationUnknown: refuse)",
        ),
    ],
)
def test_refusal(readiness: Readiness | None, unknown: str, expected: str | None) -> None:
    assert refusal("n7", readiness, unknown) == expected  # type: ignore[arg-type]


def quoting_pod(quote: str = "aesmd", epc_mib: int = 64) -> dict[str, Any]:
    pod = sj.pod(epc_mib=epc_mib)
    pod["metadata"].setdefault("annotations", {})["confidential-pods.io/status"] = json.dumps(
        {"quote": quote}
    )
    return pod


def ledger_with_readiness() -> EpcLedger:
    ledger = ledger_of({"ready": 93 * MiB, "broken": 93 * MiB, "unprobed": 93 * MiB})
    ledger.set_readiness("ready", Readiness("True"))
    ledger.set_readiness("broken", Readiness("False", "PCCSUnreachable", PCCS_DOWN))
    return ledger


@pytest.mark.parametrize("counts_epc", [False, True], ids=["native", "ledger"])
@pytest.mark.parametrize(
    ("quote", "unknown", "passed"),
    [
        ("aesmd", "allow", ["ready", "unprobed"]),
        ("in-process", "refuse", ["ready"]),
        ("none", "refuse", ["ready", "broken", "unprobed"]),  # a pod that does not quote goes anywhere
    ],
)
def test_the_filter_refuses_a_quoting_pod_on_an_unready_node(
    counts_epc: bool, quote: str, unknown: str, passed: list[str]
) -> None:
    settings = Settings(attestation_unknown=unknown)  # type: ignore[arg-type]
    verbs = Verbs(ledger_with_readiness(), settings, MemoryBinder(), clock=lambda: 0.0, counts_epc=counts_epc)
    answer = verbs.filter(Candidates(pod=quoting_pod(quote), names=("ready", "broken", "unprobed"))).body
    assert answer["NodeNames"] == passed
    assert answer["FailedNodes"] == {}  # never resolvable by preemption
    refused = answer["FailedAndUnresolvableNodes"]
    assert set(refused) == {"ready", "broken", "unprobed"} - set(passed)
    if "broken" in refused:
        # No node name: kube-scheduler counts identical reasons, so 5,000 unready nodes make one line.
        assert refused["broken"] == f"SGX attestation not ready: {PCCS_DOWN}"


def test_a_pod_without_epc_is_not_the_extenders_business() -> None:
    verbs = Verbs(ledger_with_readiness(), Settings(), MemoryBinder(), clock=lambda: 0.0)
    answer = verbs.filter(Candidates(pod=quoting_pod(epc_mib=0), names=("ready", "broken"))).body
    assert answer["NodeNames"] == ["ready", "broken"]


def test_preemption_never_evicts_for_a_node_the_preemptor_cannot_use() -> None:
    """Both nodes are full of low-priority pods; evicting on either would make room, but one is not ready:
    only the ready one is kept, the other is dropped with the readiness reason."""
    ledger = ledger_of(
        {"ready": 93 * MiB, "broken": 93 * MiB},
        [
            PodEpc("v1", "ns", "low-1", "ready", 64 * MiB, priority=1),
            PodEpc("v2", "ns", "low-2", "broken", 64 * MiB, priority=1),
        ],
    )
    ledger.set_readiness("ready", Readiness("True"))
    ledger.set_readiness(
        "broken",
        Readiness("False", "AESMUnavailable", "AESM socket /var/run/aesmd/aesm.socket: connection refused"),
    )
    preemptor = quoting_pod()
    preemptor["spec"]["priority"] = 1000
    request = PreemptionRequest(
        pod=preemptor, candidates={"ready": Victims(("v1",)), "broken": Victims(("v2",))}
    )
    verbs = Verbs(ledger, Settings(), MemoryBinder(), clock=lambda: 0.0, counts_epc=False)
    kept = verbs.preempt(request).body["NodeNameToMetaVictims"]
    assert set(kept) == {"ready"}


def test_a_preemptor_that_does_not_quote_may_use_either() -> None:
    ledger = ledger_of(
        {"ready": 93 * MiB, "broken": 93 * MiB},
        [
            PodEpc("v1", "ns", "low-1", "ready", 64 * MiB, priority=1),
            PodEpc("v2", "ns", "low-2", "broken", 64 * MiB, priority=1),
        ],
    )
    ledger.set_readiness("broken", Readiness("False", "AESMUnavailable"))
    preemptor = quoting_pod("none")
    preemptor["spec"]["priority"] = 1000
    request = PreemptionRequest(
        pod=preemptor, candidates={"ready": Victims(("v1",)), "broken": Victims(("v2",))}
    )
    verbs = Verbs(ledger, Settings(), MemoryBinder(), clock=lambda: 0.0)
    assert set(verbs.preempt(request).body["NodeNameToMetaVictims"]) == {"ready", "broken"}


def test_the_watch_and_a_relist_keep_each_nodes_condition() -> None:
    ledger = EpcLedger()
    profile = Settings().profile
    broken = node_with("n1", condition("False", "PCCSUnreachable", PCCS_DOWN))
    apply_event(ledger, "Node", {"type": "ADDED", "object": broken}, profile)
    assert ledger.readiness("n1") == Readiness("False", "PCCSUnreachable", PCCS_DOWN)
    repaired = node_with("n1", condition("True", "Ready"))
    apply_event(ledger, "Node", {"type": "MODIFIED", "object": repaired}, profile)
    assert ledger.readiness("n1") == Readiness("True", "Ready")
    # The probe's condition removed (e.g. the node re-registered): unknown again.
    apply_event(ledger, "Node", {"type": "MODIFIED", "object": node_with("n1")}, profile)
    assert ledger.readiness("n1") is None
    # A relist of the nodes replaces every condition; pods relisted keep them.
    listing = Listing("Node", ledger, profile)
    listing.add(node_with("n1", condition("False", "AESMUnavailable")))
    listing.add(node_with("n2", condition("True")))
    listing.apply()
    assert ledger.readiness_of(["n1", "n2"]) == {
        "n1": Readiness("False", "AESMUnavailable"),
        "n2": Readiness("True"),
    }
    pods = Listing("Pod", ledger, profile)
    pods.apply()
    assert ledger.readiness("n2") == Readiness("True")
    apply_event(ledger, "Node", {"type": "DELETED", "object": node_with("n2")}, profile)
    assert ledger.readiness("n2") is None


def test_a_snapshot_carries_the_condition_for_why_and_simulate() -> None:
    text = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [node_with("n1", condition("False", "SGXDevicesMissing", "no /dev/sgx_enclave"))],
        }
    )
    facts = snapshot_facts(text, Settings().profile, "test")
    ledger = EpcLedger()
    fill_ledger_from_facts(ledger, facts)
    assert ledger.readiness("n1") == Readiness("False", "SGXDevicesMissing", "no /dev/sgx_enclave")


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "age", "unknown", "refused"),
    [
        ("True", 60, "refuse", None),  # renewed a minute ago
        ("True", 16 * 60, "allow", None),  # stale: unknown, allowed by default
        ("True", 16 * 60, "refuse", "not renewed for 16 min"),  # a dead probe does not pin the node ready
        ("False", 16 * 60, "allow", "SGX attestation not ready"),  # the probe's last word stands
        ("False", 60, "allow", "SGX attestation not ready"),
    ],
)
def test_a_condition_the_probe_stopped_renewing_is_unknown(
    status: str, age: int, unknown: str, refused: str | None
) -> None:
    beat = datetime.fromtimestamp(NOW - age, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    node = node_with("n7", {**condition(status, "R", "m"), "lastHeartbeatTime": beat})
    readiness = node_readiness(node)
    assert readiness is not None and readiness.heartbeat == NOW - age
    why = refusal("n7", readiness, unknown, NOW)  # type: ignore[arg-type]
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why, why


def test_the_filter_judges_staleness_by_the_wall_clock() -> None:
    ledger = ledger_of({"n1": 93 * MiB})
    ledger._wall_clock = lambda: NOW - 20 * 60  # the watch saw this heartbeat 20 minutes before NOW
    ledger.set_readiness("n1", Readiness("True", heartbeat=NOW - 20 * 60))
    settings = Settings(attestation_unknown="refuse")
    fresh = Verbs(ledger, settings, MemoryBinder(), clock=lambda: 0.0, wall_clock=lambda: NOW - 19 * 60)
    late = Verbs(ledger, settings, MemoryBinder(), clock=lambda: 0.0, wall_clock=lambda: NOW)
    args = Candidates(pod=quoting_pod(), names=("n1",))
    assert fresh.filter(args).body["NodeNames"] == ["n1"]
    assert late.filter(args).body["NodeNames"] == []


def _beat(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("skew", [-3600, 0, 3600], ids=["node-an-hour-behind", "in-step", "an-hour-ahead"])
def test_staleness_is_timed_by_the_extenders_clock_not_the_nodes(skew: int) -> None:
    """A heartbeat counts from when the watch saw it change, as the node lifecycle controller counts the
    kubelet's: a node whose clock is an hour behind is not stale while its probe renews, one an hour ahead
    goes stale 15 minutes after its probe stops, like any other."""
    clock = [NOW]
    ledger = EpcLedger(wall_clock=lambda: clock[0])
    ledger.set_node("n1", 93 * MiB)

    def probe_writes(at: float) -> None:  # the node's clock is ``skew`` off the extender's
        ready = {**condition("True", "AllChecksPassed"), "lastHeartbeatTime": _beat(at + skew)}
        node = node_with("n1", ready)
        apply_event(ledger, "Node", {"type": "MODIFIED", "object": node}, Settings().profile)

    def refused() -> str | None:
        return refusal("n1", ledger.readiness("n1"), "refuse", clock[0])

    for _ in range(6):  # the probe renews every 5 minutes for half an hour
        probe_writes(clock[0])
        assert refused() is None
        clock[0] += 5 * 60
    probe_writes(clock[0] - 5 * 60)  # the same heartbeat again (a relist): it keeps its first sighting
    assert refused() is None
    clock[0] += 11 * 60  # the probe stopped: its last heartbeat was seen 16 minutes ago
    assert refused() is not None and "not renewed for 16 min" in refused()  # type: ignore[operator]


def test_a_heartbeat_first_seen_is_timed_from_then() -> None:
    """At start-up (or for a node first listed) the extender cannot know when an old heartbeat was written:
    it gives it STALE_AFTER_SECONDS from its own first sighting, as the node lifecycle controller does."""
    clock = [NOW]
    ledger = EpcLedger(wall_clock=lambda: clock[0])
    ledger.set_node("n1", 93 * MiB)
    ledger.set_readiness("n1", Readiness("True", heartbeat=NOW - 86400))  # a day old by the node's clock
    assert refusal("n1", ledger.readiness("n1"), "refuse", NOW) is None
    clock[0] += 16 * 60
    assert refusal("n1", ledger.readiness("n1"), "refuse", clock[0]) is not None
    # doctor reads once, without a watch: it has only the node's timestamp
    assert refusal("n1", Readiness("True", heartbeat=NOW - 86400), "refuse", NOW) is not None


@pytest.mark.parametrize("value", ["not a time", "2026-12-05T01:02:03", 7, "9" * 50])
def test_an_unreadable_heartbeat_is_never_stale(value: object) -> None:
    node = node_with("n7", {**condition("True"), "lastHeartbeatTime": value})  # type: ignore[dict-item]
    readiness = node_readiness(node)
    assert readiness is not None and readiness.heartbeat is None
    assert refusal("n7", readiness, "refuse", NOW) is None


def test_simulate_judges_a_snapshot_as_it_was_taken() -> None:
    """An old snapshot's conditions never go stale in simulate: its verdicts do not depend on when it runs."""
    from extender.simulate import simulate

    old = datetime.fromtimestamp(time.time() - 86400, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # a day old
    ready = {**condition("True", "AllChecksPassed"), "lastHeartbeatTime": old}
    pod = {"apiVersion": "v1", "kind": "Pod", **quoting_pod()}
    pod["spec"].pop("nodeName", None)
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": [node_with("n1", ready), pod]})
    facts = snapshot_facts(text, Settings().profile, "test", keep_pending=True)
    result = simulate(facts, Settings(attestation_unknown="refuse"))
    assert [p.node for p in result.placements] == ["n1"]
