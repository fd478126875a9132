"""EPC-aware preemption: the decision as a table, and /preempt with kube-scheduler's own payloads.

Wire shapes from k8s.io/kube-scheduler/extender/v1/types.go (no json tags: Go field names) and
pkg/scheduler/extender.go ProcessPreemption (v1.37.2): with nodeCacheCapable the scheduler sends
``NodeNameToVictims: null`` and ``NodeNameToMetaVictims: {node: {Pods: [{UID}], NumPDBViolations}}``;
without it, whole Pods in ``NodeNameToVictims``; the answer is always ``NodeNameToMetaVictims``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confidential_pods.quantities import MiB
from confidential_pods.settings import Settings
from extender.app import create_app
from extender.binding import MemoryBinder
from extender.ledger import EpcLedger
from extender.podepc import PodEpc
from extender.preemption import Preemptor, Victims, refine
from tests import fuzzing
from tests.extender import scheduler_json as sj

LOW, HIGH = 100, 1000


def ledger_of(nodes: dict[str, int | None], pods: list[PodEpc]) -> EpcLedger:
    ledger = EpcLedger()
    for name, capacity in nodes.items():
        ledger.set_node(name, None if capacity is None else capacity * MiB)
    for pod in pods:
        ledger.set_pod(pod)
    return ledger


def pod(uid: str, node: str, mib: int, priority: int = LOW) -> PodEpc:
    return PodEpc(uid, "ns", uid, node, mib * MiB, priority)


def decide(ledger: EpcLedger, preemptor: Preemptor, candidates: dict[str, Victims]) -> Any:
    return refine(preemptor, candidates, {name: ledger.node(name) for name in candidates})


FULL = {"a": 100, "b": 100, "plain": None, "small": 40}
RUNNING = [
    pod("a1", "a", 30),
    pod("a2", "a", 30),
    pod("a3", "a", 40),
    pod("b1", "b", 60, HIGH),
    pod("b2", "b", 40),
]


def test_enough_as_proposed_is_kept_as_proposed() -> None:
    ledger = ledger_of(FULL, RUNNING)
    out = decide(ledger, Preemptor("p", 50 * MiB, HIGH), {"a": Victims(("a3", "a1"), 0)})
    assert out.kept == {"a": Victims(("a3", "a1"), 0)} and out.added == 0 and out.dropped == {}


def test_lower_priority_pods_added_largest_first_when_the_ledger_knows_more() -> None:
    # The scheduler proposed a1 (30Mi) only; the ledger also holds a reservation-free 40Mi pod a3.
    ledger = ledger_of(FULL, RUNNING)
    out = decide(ledger, Preemptor("p", 70 * MiB, HIGH), {"a": Victims(("a1",), 0)})
    assert out.kept == {"a": Victims(("a1", "a3"), 0)} and out.added == 1


def test_never_equal_or_higher_priority() -> None:
    ledger = ledger_of(FULL, RUNNING)
    # b1 has priority HIGH: a preemptor of priority HIGH may not evict it, and b2 alone frees 40 of 100.
    out = decide(ledger, Preemptor("p", 90 * MiB, HIGH), {"b": Victims(("b2",), 0)})
    assert out.kept == {} and "would not free enough" in out.dropped["b"]
    # a higher preemptor may (but the scheduler must propose b1: the extender adds only lower than it)
    out = decide(ledger, Preemptor("p", 90 * MiB, HIGH + 1), {"b": Victims(("b2",), 0)})
    assert out.kept == {"b": Victims(("b2", "b1"), 0)}


@pytest.mark.parametrize(
    ("victims", "epc", "dropped"),
    [
        # b1 (priority HIGH) proposed beside b2: enough EPC, but b1 may not be evicted for HIGH or lower
        (("b1", "b2"), 90, "victim 'b1' has priority 1000, not lower than the pod's 1000"),
        (("b2", "b1"), 10, "victim 'b1' has priority 1000, not lower than the pod's 1000"),
        # no EPC asked: not an EPC matter, yet a victim of higher priority still drops the node
        (("b1",), 0, "victim 'b1' has priority 1000, not lower than the pod's 1000"),
        (("b2",), 10, ""),  # b2 (LOW) alone: kept
    ],
)
def test_a_proposed_victim_of_equal_or_higher_priority_drops_the_node(
    victims: tuple[str, ...], epc: int, dropped: str
) -> None:
    ledger = ledger_of(FULL, RUNNING)
    out = decide(ledger, Preemptor("p", epc * MiB, HIGH), {"b": Victims(victims, 0)})
    assert out.dropped == ({"b": dropped} if dropped else {})
    assert out.kept == ({} if dropped else {"b": Victims(victims, 0)})


def test_whole_pods_give_the_priority_of_victims_the_ledger_does_not_hold() -> None:
    # "x" holds no EPC (unknown to the ledger): its priority comes from the Pod kube-scheduler sent
    ledger = ledger_of(FULL, RUNNING)
    higher = Victims(("a3", "x"), 0, priorities={"a3": LOW, "x": HIGH})
    out = decide(ledger, Preemptor("p", 50 * MiB, HIGH), {"a": higher})
    assert out.kept == {} and "victim 'x' has priority 1000" in out.dropped["a"]
    lower = Victims(("a3", "x"), 0, priorities={"a3": LOW, "x": LOW})
    assert decide(ledger, Preemptor("p", 40 * MiB, HIGH), {"a": lower}).kept == {"a": lower}


@pytest.mark.parametrize(
    ("node", "why"),
    [
        ("plain", "no SGX EPC"),
        ("small", "less SGX EPC in total"),
        ("ghost", "not in the extender's EPC ledger"),
    ],
)
def test_nodes_where_no_eviction_can_help_are_dropped(node: str, why: str) -> None:
    ledger = ledger_of(FULL, RUNNING)
    out = decide(
        ledger, Preemptor("p", 50 * MiB, HIGH), {node: Victims(("x",), 0), "a": Victims(("a3", "a1"), 0)}
    )
    assert set(out.kept) == {"a"} and why in out.dropped[node]


def test_candidates_needing_no_additions_are_preferred() -> None:
    ledger = ledger_of(FULL, RUNNING)
    out = decide(ledger, Preemptor("p", 40 * MiB, HIGH), {"a": Victims(("a1",), 1), "b": Victims(("b2",), 0)})
    assert out.kept == {"b": Victims(("b2",), 0)}
    assert "another candidate needs no victims" in out.dropped["a"] and out.added == 0


def test_epc_held_for_a_nominated_pod_of_equal_priority_is_not_free() -> None:
    ledger = ledger_of(FULL, [pod("a1", "a", 50)])
    ledger.nominate(pod("other", "a", 40, HIGH))
    # 50 free, 40 held for "other": evicting a1 frees 50 -> 60 available, enough for 60 but not 61
    assert decide(ledger, Preemptor("p", 60 * MiB, HIGH), {"a": Victims(("a1",), 0)}).kept
    assert not decide(ledger, Preemptor("p", 61 * MiB, HIGH), {"a": Victims(("a1",), 0)}).kept
    # the nominated pod itself does not count against itself
    assert decide(ledger, Preemptor("other", 100 * MiB, HIGH), {"a": Victims(("a1",), 0)}).kept


def test_a_pod_without_epc_is_no_business_of_ours() -> None:
    ledger = ledger_of(FULL, RUNNING)
    candidates = {"plain": Victims(("x",), 2)}
    assert decide(ledger, Preemptor("p", 0, HIGH), candidates).kept == candidates


def test_nomination_holds_against_lower_priority_filter_and_bind() -> None:
    ledger = ledger_of({"a": 100}, [])
    ledger.nominate(pod("vip", "a", 80, HIGH))
    app = create_app(ledger, Settings(), MemoryBinder(final=False), lambda: True).test_client()
    low = sj.pod("low", epc_mib=30, uid="low-uid")
    low["spec"]["priority"] = LOW
    result = app.post("/filter", json=sj.args_with_names(low, ["a"])).get_json()
    assert result["FailedNodes"] == {
        "a": "insufficient SGX EPC: pod requests 30Mi, node has 20Mi free of 100Mi"
    }
    vip = sj.pod("vip", epc_mib=80, uid="vip")
    vip["spec"]["priority"] = HIGH
    assert app.post("/filter", json=sj.args_with_names(vip, ["a"])).get_json()["NodeNames"] == ["a"]
    assert (
        app.post("/bind", json=sj.binding_args(low, "a"))
        .get_json()["Error"]
        .startswith("node a: insufficient")
    )
    ledger.set_pod(pod("vip", "a", 80, HIGH))  # bound: the nomination ends, the pod counts as used
    assert ledger.nomination_count() == 0 and ledger.usage("a").used == 80 * MiB  # type: ignore[union-attr]


# --- /preempt over HTTP, payloads as kube-scheduler marshals them -------------------------------------


@pytest.fixture
def client() -> FlaskClient:
    ledger = ledger_of(FULL, RUNNING)
    return create_app(ledger, Settings(), MemoryBinder(final=False), lambda: True).test_client()


def preemptor_pod(mib: int, priority: int) -> dict[str, Any]:
    the_pod = sj.pod("critical", epc_mib=mib, uid="critical-uid")
    the_pod["spec"]["priority"] = priority
    the_pod["spec"]["priorityClassName"] = "high"
    return the_pod


def test_preempt_node_cache_capable(client: FlaskClient) -> None:
    args = {
        "Pod": preemptor_pod(70, HIGH),
        "NodeNameToVictims": None,
        "NodeNameToMetaVictims": {
            "a": {"Pods": [{"UID": "a1"}], "NumPDBViolations": 0},
            "plain": {"Pods": [{"UID": "x"}], "NumPDBViolations": 0},
        },
    }
    answer = client.post("/preempt", json=args)
    assert answer.status_code == 200
    assert answer.get_json() == {
        "NodeNameToMetaVictims": {"a": {"Pods": [{"UID": "a1"}, {"UID": "a3"}], "NumPDBViolations": 0}}
    }
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'confidential_pods_extender_preemption_nodes_total{decision="kept"} 1.0' in metrics
    assert 'confidential_pods_extender_preemption_nodes_total{decision="dropped"} 1.0' in metrics
    assert "confidential_pods_extender_preemption_victims_added_total 1.0" in metrics
    assert 'confidential_pods_extender_requests_total{outcome="ok",verb="preempt"} 1.0' in metrics


def test_preempt_drops_a_node_whose_proposed_victim_outranks_the_preemptor() -> None:
    """Issue 20, defect 6: a caller proposes a priority-1000 victim beside a priority-1 one for a
    priority-100 preemptor; the free EPC would be enough, but the node must not be in the answer."""
    running = [pod("u-high", "n", 50, 1000), pod("u-low", "n", 40, 1), pod("u-mid", "n", 5, 100)]
    ledger = ledger_of({"n": 100}, running)
    app = create_app(ledger, Settings(), MemoryBinder(final=False), lambda: True).test_client()
    body = sj.preemption_args(preemptor_pod(20, 100), {"n": ["u-high", "u-low"]})
    answer = app.post("/preempt", json=body)
    assert answer.status_code == 200 and answer.get_json() == {"NodeNameToMetaVictims": {}}
    # equal priority (u-mid: 100) is refused as well; the lower victim alone is answered
    body = sj.preemption_args(preemptor_pod(20, 100), {"n": ["u-mid", "u-low"]})
    assert app.post("/preempt", json=body).get_json() == {"NodeNameToMetaVictims": {}}
    body = sj.preemption_args(preemptor_pod(20, 100), {"n": ["u-low"]})
    assert app.post("/preempt", json=body).get_json() == {
        "NodeNameToMetaVictims": {"n": {"Pods": [{"UID": "u-low"}], "NumPDBViolations": 0}}
    }
    metrics = app.get("/metrics").get_data(as_text=True)
    assert 'confidential_pods_extender_preemption_nodes_total{decision="dropped"} 2.0' in metrics


def test_preempt_with_whole_pods_reads_the_victims_priority(client: FlaskClient) -> None:
    # "plain-pod" holds no EPC, so only the Pod sent tells its priority
    vip = sj.pod("plain-pod", epc_mib=0, uid="plain-pod", node_name="a", phase="Running")
    vip["spec"]["priority"] = HIGH
    a3 = sj.pod("a3", epc_mib=40, uid="a3", node_name="a", phase="Running")
    body = sj.preemption_args_with_pods(preemptor_pod(40, HIGH), {"a": [a3, vip]})
    assert client.post("/preempt", json=body).get_json() == {"NodeNameToMetaVictims": {}}
    vip["spec"]["priority"] = LOW
    body = sj.preemption_args_with_pods(preemptor_pod(40, HIGH), {"a": [a3, vip]})
    assert client.post("/preempt", json=body).get_json()["NodeNameToMetaVictims"]["a"]["Pods"] == [
        {"UID": "a3"},
        {"UID": "plain-pod"},
    ]


def test_preempt_with_whole_pods(client: FlaskClient) -> None:
    victim = sj.pod("a3", epc_mib=40, uid="a3", node_name="a", phase="Running")
    args = {
        "Pod": preemptor_pod(40, HIGH),
        "NodeNameToVictims": {"a": {"Pods": [victim], "NumPDBViolations": 1}},
        "NodeNameToMetaVictims": None,
    }
    assert client.post("/preempt", json=args).get_json() == {
        "NodeNameToMetaVictims": {"a": {"Pods": [{"UID": "a3"}], "NumPDBViolations": 1}}
    }


def test_preempt_go_field_names_in_any_case(client: FlaskClient) -> None:
    args = {
        "pod": preemptor_pod(40, HIGH),
        "nodenametometavictims": {"a": {"pods": [{"uid": "a3"}], "numpdbviolations": 0}},
    }
    assert client.post("/preempt", json=args).get_json()["NodeNameToMetaVictims"]["a"]["Pods"] == [
        {"UID": "a3"}
    ]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"NodeNameToMetaVictims": {}}, "Pod must be a Pod object"),
        ({"Pod": {}}, "needs NodeNameToMetaVictims or NodeNameToVictims"),
        ({"Pod": {}, "NodeNameToMetaVictims": []}, "must map node names"),
        ({"Pod": {}, "NodeNameToMetaVictims": {"a": {"Pods": [{}]}}}, "UID must be a non-empty string"),
        ({"Pod": {}, "NodeNameToVictims": {"a": {"Pods": [{"metadata": {}}]}}}, "has no metadata.uid"),
        ({"Pod": {}, "NodeNameToMetaVictims": {"a": {"Pods": False}}}, "['a'].Pods must be a list"),
        ({"Pod": {}, "NodeNameToMetaVictims": {"a": {"Pods": {}}}}, "['a'].Pods must be a list"),
    ],
)
def test_malformed_preemption_args_are_400(client: FlaskClient, body: Any, fragment: str) -> None:
    answer = client.post("/preempt", json=body)
    assert answer.status_code == 400 and fragment in answer.get_json()["Error"]


#: ``NumPDBViolations`` as JSON text → what Go's encoding/json leaves in kube-scheduler's int64 field, or
#: None where it refuses the text (checked with go1.26 json.Unmarshal into extenderv1.MetaVictims).
PDB_VIOLATIONS_AS_GO_READS_THEM = [
    ("0", 0),
    ("-0", 0),
    ("3", 3),
    ("-5", -5),
    ("null", 0),
    ("9223372036854775807", 2**63 - 1),
    ("-9223372036854775808", -(2**63)),
    ("9223372036854775808", None),
    ("-9223372036854775809", None),
    ("99999999999999999999", None),
    ("1.5", None),
    ("1.0", None),
    ("1e3", None),
    ("1E3", None),
    ("-0.0", None),
    ("0.0e0", None),
    ("true", None),
    ("false", None),
    ('"5"', None),
    ("[]", None),
    ("{}", None),
]


@pytest.mark.parametrize("mode", ["meta", "whole"])
@pytest.mark.parametrize(("text", "read"), PDB_VIOLATIONS_AS_GO_READS_THEM)
def test_num_pdb_violations_is_read_as_go_reads_an_int64(
    client: FlaskClient, mode: str, text: str, read: int | None
) -> None:
    """Issue 20, defect 7: what Go cannot decode into int64 is a 400 naming the field, never echoed
    (kube-scheduler would fail to decode the whole answer)."""
    if mode == "meta":
        args = sj.preemption_args(preemptor_pod(40, HIGH), {"a": ["a3"]}, pdb_violations="@N@")
        where = "ExtenderPreemptionArgs.NodeNameToMetaVictims['a'].NumPDBViolations"
    else:
        victim = sj.pod("a3", epc_mib=40, uid="a3", node_name="a", phase="Running")
        args = sj.preemption_args_with_pods(preemptor_pod(40, HIGH), {"a": [victim]})
        args["NodeNameToVictims"]["a"]["NumPDBViolations"] = "@N@"
        where = "ExtenderPreemptionArgs.NodeNameToVictims['a'].NumPDBViolations"
    body = json.dumps(args).replace('"@N@"', text)
    answer = client.post("/preempt", data=body, content_type="application/json")
    if read is None:
        assert answer.status_code == 400
        message = answer.get_json()["Error"]
        assert message.startswith(f"{where} must be an integer within int64, not ") and "\n" not in message
    else:
        assert answer.status_code == 200
        assert answer.get_json()["NodeNameToMetaVictims"]["a"]["NumPDBViolations"] == read


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(violations=st.integers() | st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**4000]))
def test_num_pdb_violations_echoed_only_within_int64(client: FlaskClient, violations: int) -> None:
    args = sj.preemption_args(preemptor_pod(40, HIGH), {"a": ["a3"]}, pdb_violations=violations)
    answer = client.post("/preempt", data=json.dumps(args), content_type="application/json")
    if -(2**63) <= violations < 2**63:
        assert answer.get_json()["NodeNameToMetaVictims"]["a"]["NumPDBViolations"] == violations
    else:
        assert answer.status_code == 400 and "NumPDBViolations" in answer.get_json()["Error"]


meta_victims = st.dictionaries(
    st.sampled_from(["a", "b", "plain", "small", "ghost"]) | st.text(max_size=5),
    st.fixed_dictionaries(
        {
            "Pods": st.lists(
                st.fixed_dictionaries({"UID": st.sampled_from(["a1", "a2", "a3", "b1", "b2", "x"])}),
                max_size=4,
            )
        },
        optional={"NumPDBViolations": st.integers(0, 3)},
    )
    | fuzzing.json_values,
    max_size=5,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    victims=meta_victims | fuzzing.json_values,
    epc=fuzzing.hostile_quantities | st.integers(0, 200).map(str),
    priority=st.integers(-10, 2000) | fuzzing.json_values,
)
def test_preempt_fuzz_never_5xx(client: FlaskClient, victims: Any, epc: Any, priority: Any) -> None:
    the_pod = sj.pod("p", epc_mib=8, uid="p")
    the_pod["spec"]["containers"][0]["resources"]["limits"][sj.RESOURCE] = epc
    the_pod["spec"]["priority"] = priority
    answer = client.post(
        "/preempt",
        data=json.dumps({"Pod": the_pod, "NodeNameToMetaVictims": victims}),
        content_type="application/json",
    )
    assert answer.status_code in (200, 400)
    body = answer.get_json()
    if answer.status_code == 200:
        kept = body["NodeNameToMetaVictims"]
        assert set(kept) <= set(victims) and all(entry["Pods"] for entry in kept.values())
