"""Attestation readiness: the Node condition ``SGXAttestationReady`` and which pods must honour it (pure).

``confidential-pods node-probe`` publishes the condition on each SGX node (docs/attestation.md "Node probe"):
``True`` when the SGX devices, the AESM socket and the PCCS of the node's QCNL configuration all answer,
``False`` with the failing check's reason and message otherwise. The extender keeps each node's condition
from its Node watch and refuses a pod that quotes on a node whose condition is ``False``
(:func:`refusal`), as unresolvable: no eviction makes such a node usable, so preemption never considers it.

A node without the condition, with ``Unknown``, or with ``True`` whose ``lastHeartbeatTime`` has not
changed for :data:`STALE_AFTER_SECONDS` (the probe rewrites it every 5 minutes while it runs: a dead probe
must not pin a node ready) is allowed unless the configuration key ``attestationUnknown`` is ``refuse``:
clusters without the probe schedule as before. A ``False`` refuses however old it is. The extender times a
heartbeat by its own clock from when its watch first saw it (``Readiness.seen``, set by the ledger), never
by the node's clock; a one-shot reader (``doctor``) has only the timestamp the node wrote.

Which pods quote: those the webhook injected with ``quote`` other than ``none`` (its status annotation says
so), and every EPC pod the webhook did not inject (it may quote; the safe side).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from confidential_pods.settings import ATTESTATION_UNKNOWN, AttestationUnknown
from confidential_pods.wire import mapping

CONDITION: Final = "SGXAttestationReady"
#: The webhook's status annotation (webhook/contract.py STATUS), read here without importing the webhook.
STATUS_ANNOTATION: Final = "confidential-pods.io/status"
UnknownPolicy = AttestationUnknown
UNKNOWN_POLICIES = ATTESTATION_UNKNOWN
#: Longest reason or message kept per node (a condition is written by the node's own credentials).
MAX_TEXT = 300
#: A condition not rewritten for this long is as good as unknown: three of the probe's default heartbeats.
STALE_AFTER_SECONDS = 15 * 60


@dataclass(frozen=True, slots=True)
class Readiness:
    """A node's ``SGXAttestationReady`` condition: ``status`` is ``True``, ``False`` or ``Unknown``."""

    status: str
    reason: str = ""
    message: str = ""
    #: ``lastHeartbeatTime`` in seconds since the epoch; None when absent or unreadable (never stale).
    heartbeat: float | None = None
    #: When the reader first saw this heartbeat, by its own clock (the ledger sets it; None: judge by
    #: ``heartbeat``, the node's clock). Not part of the condition's value.
    seen: float | None = field(default=None, compare=False)


def node_readiness(node: Mapping[str, Any]) -> Readiness | None:
    """The node's ``SGXAttestationReady`` condition, or None when it has none (no probe there)."""
    conditions = mapping(node.get("status")).get("conditions")
    if not isinstance(conditions, list):
        return None
    for condition in conditions:
        condition = mapping(condition)
        if condition.get("type") == CONDITION:
            status = condition.get("status")
            return Readiness(
                status if status in ("True", "False") else "Unknown",
                _text(condition.get("reason")),
                _text(condition.get("message")),
                _timestamp(condition.get("lastHeartbeatTime")),
            )
    return None


def pod_quotes(pod: Mapping[str, Any]) -> bool:
    """Whether the pod may need the node's attestation: not when the webhook's status says ``quote: none``."""
    annotations = mapping(mapping(pod.get("metadata")).get("annotations"))
    status = annotations.get(STATUS_ANNOTATION)
    if not isinstance(status, str) or len(status) > 4096:
        return True
    try:
        injected = json.loads(status)
    except ValueError:
        return True
    return not (isinstance(injected, dict) and injected.get("quote") == "none")


def refusal(
    node: str, readiness: Readiness | None, unknown: UnknownPolicy, now: float | None = None
) -> str | None:
    """Why a quoting pod may not go to ``node``, or None when it may (``now``: seconds since the epoch, for a
    stale condition; None: never stale). Stale or not, ``False`` refuses (a probe gone with its aesmd pod
    leaves ``False`` behind only if it saw aesmd go); a stale ``True`` is unknown.

    The text names no node: kube-scheduler keys each refusal by node already and counts identical reasons
    ("0/40 nodes are available: 40 SGX attestation not ready: …"), so 5,000 unready nodes make one line."""
    if readiness is not None and readiness.status == "False":  # stale or not: the probe's last word stands
        why = readiness.message or readiness.reason or "no reason given"
        return f"SGX attestation not ready: {why}"
    renewed = _renewed(readiness)
    stale = is_stale(readiness, now)
    if readiness is not None and readiness.status == "True" and not stale:
        return None
    if unknown == "allow":
        return None
    if stale and readiness is not None:
        minutes = int((now or 0.0) - (renewed or 0.0)) // 60
        return (
            f"SGX attestation readiness unknown (the probe's {CONDITION} not renewed for {minutes} min; "
            "attestationUnknown: refuse)"
        )
    why = f"no {CONDITION} condition" if readiness is None else readiness.reason or "Unknown"
    return f"SGX attestation readiness unknown ({why}; attestationUnknown: refuse)"


def is_stale(readiness: Readiness | None, now: float | None) -> bool:
    """Whether the condition was not renewed for :data:`STALE_AFTER_SECONDS` at ``now`` (None: never)."""
    renewed = _renewed(readiness)
    return renewed is not None and now is not None and now - renewed > STALE_AFTER_SECONDS


def _renewed(readiness: Readiness | None) -> float | None:
    """When the condition was last renewed, by the reader's clock where it has one (None: never stale)."""
    if readiness is None or readiness.heartbeat is None:
        return None
    return readiness.seen if readiness.seen is not None else readiness.heartbeat


def _timestamp(value: object) -> float | None:
    """An RFC 3339 time as the API server writes it (``2026-12-05T01:02:03Z``), in epoch seconds."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def _text(value: object) -> str:
    text = value if isinstance(value, str) else ""
    text = "".join(c if c.isprintable() else " " for c in text[:MAX_TEXT])
    return text
