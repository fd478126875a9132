"""When the probe writes its Node conditions, and what it writes (pure).

A Node condition is ``{type, status, reason, message, lastHeartbeatTime, lastTransitionTime}``. The probe
writes one only when it says something new — ``status``, ``reason`` or ``message`` changed — or when the
heartbeat (default 5 minutes) has passed since ``lastHeartbeatTime``, so that a reader can tell a live
probe from a dead one. ``lastTransitionTime`` moves only when ``status`` changes. A steady node thus costs
the apiserver one write per heartbeat, whatever the probe's interval: 5,000 nodes at 5 minutes, about 17
writes a second (their kubelets' Lease renewals alone are 500 a second).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, TypedDict

#: The condition the extender honours (extender/readiness.py reads it by this name).
READY: Final = "SGXAttestationReady"
#: Whether the kernel exposes the ``sgx_epc`` misc cgroup resource (for ``epcLimits: nri``).
EPC_CGROUP: Final = "SGXEPCCgroupAvailable"
DEFAULT_HEARTBEAT: Final = timedelta(minutes=5)

Status = Literal["True", "False", "Unknown"]


class NodeCondition(TypedDict):
    """``v1.NodeCondition`` as JSON."""

    type: str
    status: Status
    reason: str
    message: str
    lastHeartbeatTime: str
    lastTransitionTime: str


@dataclass(frozen=True)
class Verdict:
    """What a probe round found for one condition type."""

    status: Status
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    """The condition to publish and whether it must be written now (False: ``condition`` is the previous)."""

    condition: NodeCondition
    write: bool


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as ``metav1.Time`` is written."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> datetime | None:
    """A ``metav1.Time`` string, or None when absent or not one."""
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def decide(
    kind: str,
    previous: Mapping[str, object] | None,
    verdict: Verdict,
    now: datetime,
    heartbeat: timedelta = DEFAULT_HEARTBEAT,
    *,
    force: bool = False,
) -> Decision:
    """The ``kind`` condition after a round that found ``verdict`` at ``now``, given the node's ``previous``
    condition of that type (None: it has none). ``force``: write even without news (heartbeats aligned)."""
    now_text = timestamp(now)
    if previous is None or previous.get("status") != verdict.status:
        return Decision(_condition(kind, verdict, now_text, now_text), True)
    transition = previous.get("lastTransitionTime")
    transition_text = transition if parse_time(transition) is not None else now_text
    assert isinstance(transition_text, str)
    news = previous.get("reason") != verdict.reason or previous.get("message") != verdict.message
    beat = parse_time(previous.get("lastHeartbeatTime"))
    # A heartbeat in the future (the clock went back) is due now: waiting for it could take forever.
    due = beat is None or beat > now or now - beat >= heartbeat
    condition = _condition(kind, verdict, now_text, transition_text)
    if news or due or force or transition_text != transition:
        return Decision(condition, True)
    return Decision(_condition(kind, verdict, str(previous["lastHeartbeatTime"]), transition_text), False)


def decide_all(
    previous: Mapping[str, Mapping[str, object]],
    verdicts: Mapping[str, Verdict],
    now: datetime,
    heartbeat: timedelta = DEFAULT_HEARTBEAT,
) -> tuple[list[NodeCondition], bool]:
    """Every condition of ``verdicts`` (type → verdict), and whether to write. When one must be written they
    all are, with one heartbeat: one write per heartbeat, not one per condition."""
    decisions = [decide(kind, previous.get(kind), v, now, heartbeat) for kind, v in verdicts.items()]
    if not any(d.write for d in decisions):
        return [d.condition for d in decisions], False
    forced = [decide(kind, previous.get(kind), v, now, heartbeat, force=True) for kind, v in verdicts.items()]
    return [d.condition for d in forced], True


def conditions_by_type(conditions: object, kinds: Sequence[str]) -> dict[str, Mapping[str, object]]:
    """The node's ``status.conditions`` of the given types (malformed entries ignored)."""
    found: dict[str, Mapping[str, object]] = {}
    if isinstance(conditions, list):
        for condition in conditions:
            if isinstance(condition, dict) and condition.get("type") in kinds:
                found[str(condition["type"])] = condition
    return found


def _condition(kind: str, verdict: Verdict, heartbeat: str, transition: str) -> NodeCondition:
    return NodeCondition(
        type=kind,
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message,
        lastHeartbeatTime=heartbeat,
        lastTransitionTime=transition,
    )
