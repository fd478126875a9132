"""When the probe writes its conditions: a table of single rounds, and properties of round sequences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeprobe.condition import (
    EPC_CGROUP,
    READY,
    NodeCondition,
    Verdict,
    conditions_by_type,
    decide,
    decide_all,
    parse_time,
    timestamp,
)

T0 = datetime(2026, 12, 5, 1, 0, 0, tzinfo=UTC)
HEARTBEAT = timedelta(minutes=5)
OK = Verdict("True", "AllChecksPassed", "all fine")
PCCS_DOWN = Verdict("False", "PCCSUnreachable", "PCCS https://p/ unreachable: Connection refused")


def _previous(verdict: Verdict, heartbeat: datetime, transition: datetime) -> NodeCondition:
    return NodeCondition(
        type=READY,
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message,
        lastHeartbeatTime=timestamp(heartbeat),
        lastTransitionTime=timestamp(transition),
    )


@pytest.mark.parametrize(
    ("previous", "found", "now", "write", "heartbeat", "transition"),
    [
        # no condition yet: written, both times now
        (None, OK, T0, True, T0, T0),
        # same within the heartbeat: nothing written, the previous condition stands
        (_previous(OK, T0, T0), OK, T0 + timedelta(minutes=4, seconds=59), False, T0, T0),
        # heartbeat due: written, the transition kept
        (
            _previous(OK, T0, T0 - timedelta(hours=1)),
            OK,
            T0 + HEARTBEAT,
            True,
            T0 + HEARTBEAT,
            T0 - timedelta(hours=1),
        ),
        # status changed: written, transition now
        (
            _previous(OK, T0, T0),
            PCCS_DOWN,
            T0 + timedelta(seconds=30),
            True,
            T0 + timedelta(seconds=30),
            T0 + timedelta(seconds=30),
        ),
        # message changed, status not: written, transition kept
        (
            _previous(PCCS_DOWN, T0, T0),
            Verdict("False", "PCCSUnreachable", "PCCS https://p/ unreachable: timed out"),
            T0 + timedelta(seconds=30),
            True,
            T0 + timedelta(seconds=30),
            T0,
        ),
        # reason changed, status not
        (
            _previous(PCCS_DOWN, T0, T0),
            Verdict("False", "AESMUnavailable", PCCS_DOWN.message),
            T0 + timedelta(seconds=1),
            True,
            T0 + timedelta(seconds=1),
            T0,
        ),
        # a heartbeat in the future (the clock went back): written now
        (_previous(OK, T0 + timedelta(hours=1), T0), OK, T0, True, T0, T0),
    ],
)
def test_decide(
    previous: NodeCondition | None,
    found: Verdict,
    now: datetime,
    write: bool,
    heartbeat: datetime,
    transition: datetime,
) -> None:
    decision = decide(READY, previous, found, now, HEARTBEAT)
    assert decision.write is write
    assert decision.condition == NodeCondition(
        type=READY,
        status=found.status,
        reason=found.reason,
        message=found.message,
        lastHeartbeatTime=timestamp(heartbeat),
        lastTransitionTime=timestamp(transition),
    )


@pytest.mark.parametrize(
    "broken",
    [{"lastHeartbeatTime": "yesterday"}, {"lastHeartbeatTime": None}, {"lastTransitionTime": "2026-13-01"}],
)
def test_unreadable_times_are_rewritten(broken: dict[str, object]) -> None:
    previous = dict(_previous(OK, T0, T0)) | broken
    decision = decide(READY, previous, OK, T0 + timedelta(seconds=1), HEARTBEAT)
    assert decision.write
    assert parse_time(decision.condition["lastHeartbeatTime"]) is not None
    assert parse_time(decision.condition["lastTransitionTime"]) is not None


def test_decide_all_aligns_heartbeats() -> None:
    """One condition changed: both are written, with one heartbeat; neither changed: nothing is written."""
    epc = Verdict("False", "SGXEPCCgroupMissing", "no sgx_epc")
    previous = {
        READY: _previous(OK, T0, T0),
        EPC_CGROUP: NodeCondition(**(_previous(epc, T0 - timedelta(minutes=2), T0) | {"type": EPC_CGROUP})),  # type: ignore[typeddict-item]
    }
    conditions, write = decide_all(
        previous, {READY: PCCS_DOWN, EPC_CGROUP: epc}, T0 + timedelta(minutes=1), HEARTBEAT
    )
    assert write
    assert {c["lastHeartbeatTime"] for c in conditions} == {timestamp(T0 + timedelta(minutes=1))}
    assert [c["lastTransitionTime"] for c in conditions] == [
        timestamp(T0 + timedelta(minutes=1)),
        timestamp(T0),
    ]
    _, write = decide_all(previous, {READY: OK, EPC_CGROUP: epc}, T0 + timedelta(minutes=1), HEARTBEAT)
    assert not write


def test_conditions_by_type_ignores_others_and_garbage() -> None:
    kubelet = {"type": "Ready", "status": "True"}
    ours = dict(_previous(OK, T0, T0))
    assert conditions_by_type([kubelet, "x", None, ours], [READY]) == {READY: ours}
    assert conditions_by_type(None, [READY]) == {}


# --- properties over sequences of rounds --------------------------------------------------------------

verdicts = st.sampled_from(
    [
        OK,
        PCCS_DOWN,
        Verdict("False", "PCCSUnreachable", "PCCS https://p/ unreachable: timed out"),
        Verdict("False", "AESMUnavailable", "AESM socket /var/run/aesmd/aesm.socket: Connection refused"),
        Verdict("Unknown", "ProbeIncomplete", "checks not run: pccs"),
    ]
)
#: Rounds: (seconds since the previous round, what it found). Whole seconds, as the condition keeps them.
rounds = st.lists(st.tuples(st.integers(min_value=0, max_value=900), verdicts), min_size=1, max_size=60)


def _replay(
    steps: list[tuple[int, Verdict]],
) -> list[tuple[datetime, Verdict, NodeCondition | None, bool, NodeCondition]]:
    """Each round as (now, verdict, condition before, written, condition after)."""
    published: NodeCondition | None = None
    now = T0
    history = []
    for gap, found in steps:
        now += timedelta(seconds=gap)
        decision = decide(READY, published, found, now, HEARTBEAT)
        history.append((now, found, published, decision.write, decision.condition))
        if decision.write:
            published = decision.condition
    return history


@settings(max_examples=300, deadline=None)
@given(rounds)
def test_no_write_without_news_within_the_heartbeat(steps: list[tuple[int, Verdict]]) -> None:
    for now, found, before, written, _ in _replay(steps):
        if before is None:
            assert written
            continue
        same = (before["status"], before["reason"], before["message"]) == (
            found.status,
            found.reason,
            found.message,
        )
        beat = parse_time(before["lastHeartbeatTime"])
        assert beat is not None
        assert written == (not same or now - beat >= HEARTBEAT)


@settings(max_examples=300, deadline=None)
@given(rounds)
def test_transition_time_moves_only_on_status_change_and_never_back(steps: list[tuple[int, Verdict]]) -> None:
    last_transition: datetime | None = None
    for now, found, before, written, after in _replay(steps):
        transition = parse_time(after["lastTransitionTime"])
        assert transition is not None and transition <= now
        if before is not None:
            if before["status"] == found.status:
                assert after["lastTransitionTime"] == before["lastTransitionTime"]
            else:
                assert written and transition == now
        if last_transition is not None:
            assert transition >= last_transition
        last_transition = transition


@settings(max_examples=200, deadline=None)
@given(rounds)
def test_what_is_published_is_what_was_found(steps: list[tuple[int, Verdict]]) -> None:
    """After every round the published condition says what that round found: no news is ever dropped."""
    for _, found, _, _, after in _replay(steps):
        assert (after["status"], after["reason"], after["message"]) == (
            found.status,
            found.reason,
            found.message,
        )


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=3000))
def test_a_steady_node_writes_once_per_heartbeat(minutes: int) -> None:
    """A round every 30 s for ``minutes``: the first write, then one per 5 minutes."""
    steps = [(0, OK)] + [(30, OK)] * (minutes * 2)
    writes = sum(written for _, _, _, written, _ in _replay(steps))
    assert writes == 1 + (minutes * 60) // int(HEARTBEAT.total_seconds())
