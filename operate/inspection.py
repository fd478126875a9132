"""The extender's ``/inspect`` answer as ``kubectl confidential-pods nodes --extender URL`` reads it.

The answer comes over the network from whatever the URL reaches (a port-forward, a proxy, another program
on that port), so nothing is computed from it before it is checked: the body is bounded in size
(:data:`MAX_INSPECT_BYTES`) and nesting (:func:`~confidential_pods.wire.decode_json`), and every field the
plugin uses is checked for its JSON type and range — amounts are whole bytes within int64, as the ledger
keeps them (a 400-digit number made the bar's float division overflow). The first field that is wrong is
named in one :class:`MalformedInspect` (one line, exit code 2), never a traceback. Fields the plugin does
not use are not read. The shape is what ``extender.app.node_json`` serves. Pure: bytes in, rows out.
"""

from __future__ import annotations

from typing import Any

from confidential_pods.errors import MalformedInput, shown
from confidential_pods.quantities import MAX_QUANTITY
from confidential_pods.wire import decode_json
from operate.views import NodeRow, attestation_text

#: Largest answer read: /inspect lists the pods holding EPC, about 170 bytes each; 150,000 pods (the
#: largest cluster Kubernetes supports) take about 25 MiB.
MAX_INSPECT_BYTES = 64 * 2**20
#: Longest node name (a DNS subdomain).
MAX_NAME = 253


class MalformedInspect(MalformedInput):
    """The answer is not the extender's ``/inspect``: the message names the first field that is wrong."""


def read_inspect(body: bytes, source: str = "/inspect") -> list[NodeRow]:
    """The SGX nodes of an ``/inspect`` answer (``body`` read with at most ``MAX_INSPECT_BYTES + 1``
    bytes), sorted by name; ``source`` is where it came from, for the message."""
    if len(body) > MAX_INSPECT_BYTES:
        raise MalformedInspect(f"{source}: the answer is larger than {MAX_INSPECT_BYTES // 2**20} MiB")
    try:
        answer = decode_json(body, "the answer")
    except MalformedInput as exc:
        raise MalformedInspect(f"{source}: {exc}") from None
    try:
        return rows_from_inspect(answer)
    except MalformedInspect as exc:
        raise MalformedInspect(f"{source}: {exc}") from None


def rows_from_inspect(answer: object) -> list[NodeRow]:
    """The decoded answer as rows, nodes without SGX (``capacity`` null) left out."""
    if not isinstance(answer, dict):
        raise MalformedInspect(f"the answer must be a JSON object, not {_kind(answer)}")
    nodes = answer.get("nodes")
    if not isinstance(nodes, list):
        raise MalformedInspect(f"nodes must be a list, not {_kind(nodes)}")
    rows = [_row(item, f"nodes[{index}]") for index, item in enumerate(nodes)]
    return sorted((row for row in rows if row is not None), key=lambda row: row.name)


def _row(node: object, where: str) -> NodeRow | None:
    if not isinstance(node, dict):
        raise MalformedInspect(f"{where} must be an object, not {_kind(node)}")
    name = node.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise MalformedInspect(f"{where}.name must be 1 to {MAX_NAME} characters, not {_kind(name)}")
    capacity = node.get("capacity")
    if capacity is not None:  # None: a node without SGX
        capacity = _amount(capacity, f"{where}.capacity")
    used = _amount(node.get("used"), f"{where}.used")
    reserved = _amount(node.get("reserved"), f"{where}.reserved")
    pods = _list(node.get("pods"), f"{where}.pods")
    nominated = _list(node.get("nominated"), f"{where}.nominated")
    held = 0
    for index, pod in enumerate(nominated):
        if not isinstance(pod, dict):
            raise MalformedInspect(f"{where}.nominated[{index}] must be an object, not {_kind(pod)}")
        held += _amount(pod.get("epc"), f"{where}.nominated[{index}].epc")
    attestation = _attestation(node.get("attestation", _ABSENT), f"{where}.attestation")
    if capacity is None:
        return None
    return NodeRow(
        name=name,
        capacity=capacity,
        used=used,
        reserved=reserved,
        nominated=held,
        pods=len(pods),
        attestation=attestation,
    )


_ABSENT = object()
#: Longest reason read from ``attestation`` (the extender keeps 300 characters).
MAX_REASON = 300


def _attestation(value: object, where: str) -> str:
    """The node's SGXAttestationReady as the table shows it: absent (an older extender) or null is ``-``."""
    if value is _ABSENT or value is None:
        return "-"
    if not isinstance(value, dict):
        raise MalformedInspect(f"{where} must be an object or null, not {_kind(value)}")
    status, reason, stale = value.get("status"), value.get("reason", ""), value.get("stale", False)
    if status not in ("True", "False", "Unknown"):
        raise MalformedInspect(f"{where}.status must be True, False or Unknown, not {_kind(status)}")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise MalformedInspect(f"{where}.reason must be a string of at most {MAX_REASON} characters")
    if not isinstance(stale, bool):
        raise MalformedInspect(f"{where}.stale must be true or false, not {_kind(stale)}")
    return attestation_text(status, reason, stale)


def _amount(value: object, where: str) -> int:
    """Bytes of EPC: a whole number from 0 to 2^63-1 (JSON ``1.0``, ``true`` and ``"5"`` are not)."""
    if type(value) is not int or not 0 <= value <= MAX_QUANTITY:
        raise MalformedInspect(f"{where} must be a whole number of bytes up to 2^63-1, not {_kind(value)}")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedInspect(f"{where} must be a list, not {_kind(value)}")
    return value


def _kind(value: object) -> str:
    """A value for a message: a scalar shown (cut short), a container by its JSON type only."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return shown(value)
