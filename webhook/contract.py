"""The annotation contract: every ``confidential-pods.io/`` pod annotation, its parser and what it sets.

:data:`ANNOTATIONS` is the table (key → parser → field of :class:`Annotated`); :data:`KNOWN_ANNOTATIONS`
and the reading loop derive from it, and docs/annotations.md documents the same rows. A parser takes
the value and the settings and returns the parsed value, or raises :class:`PodRefused` with a message
naming the key, the value and what would be valid.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from confidential_pods.errors import QuantityError, shown
from confidential_pods.quantities import format_bytes, parse_bytes
from confidential_pods.settings import AESM_MODES, QUOTE_MODES, AesmMode, QuoteMode, Settings
from webhook.podview import PodRefused

PREFIX: Final = "confidential-pods.io/"
CONFIDENTIAL: Final = PREFIX + "confidential"
INJECTION_LABEL: Final = PREFIX + "injection"
EPC: Final = PREFIX + "epc"
EPC_CONTAINER: Final = PREFIX + "epc."
CONTAINERS: Final = PREFIX + "containers"
RUNTIME_CLASS: Final = PREFIX + "runtime-class"
AESM: Final = PREFIX + "aesm"
QUOTE: Final = PREFIX + "quote"
STATUS: Final = PREFIX + "status"
#: Written by the webhook: the quote library's configuration, read by a downward-API volume.
QCNL: Final = PREFIX + "qcnl"
#: Intel's own annotation (intel profile): a container's name (it quotes in-process) or ``aesmd``.
INTEL_QUOTE_PROVIDER: Final = "sgx.intel.com/quote-provider"
#: The value of RUNTIME_CLASS that asks for no RuntimeClass at all.
NO_RUNTIME_CLASS: Final = "none"

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class Annotated:
    """What the pod's annotations ask for, each value parsed; None where the pod does not say."""

    epc: int | None = None
    containers: tuple[str, ...] | None = None
    runtime_class: str | None = None
    aesm: AesmMode | None = None
    quote: QuoteMode | None = None
    status: str | None = None
    qcnl: str | None = None
    #: ``epc.<container>`` overrides, by container name.
    epc_by_container: Mapping[str, int] = field(default_factory=dict)
    #: Keys under the prefix that the contract does not know (a warning each).
    unknown: tuple[str, ...] = ()


Parser = Callable[[str, str, Settings], Any]


@dataclass(frozen=True)
class Annotation:
    """One row of the contract: the key, the :class:`Annotated` field it sets and how its value is read."""

    key: str
    field: str
    parse: Parser


def epc_amount(key: str, value: str, settings: Settings) -> int:
    """An EPC size: a whole number of bytes, positive, at most ``maxEPCPerPod``."""
    limit = format_bytes(settings.max_epc_per_pod)
    try:
        amount = parse_bytes(value)
    except QuantityError as exc:
        raise PodRefused(
            f"annotation {key}={exc}; use a size such as 64Mi (at most {limit} per pod)"
        ) from None
    if amount <= 0:
        raise PodRefused(
            f"annotation {key}={shown(value)} must be a positive size such as 64Mi (at most {limit} per pod)"
        )
    if amount > settings.max_epc_per_pod:
        raise PodRefused(
            f"annotation {key}={shown(value)} is more than the maximum of {limit} of SGX EPC per pod"
        )
    return amount


def _container_names(key: str, value: str, _settings: Settings) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    if not names:
        raise PodRefused(f"annotation {key} is empty: name at least one container")
    return names


def _runtime_class(key: str, value: str, _settings: Settings) -> str:
    if value != NO_RUNTIME_CLASS and (len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value)):
        raise PodRefused(
            f"annotation {key}={shown(value)} is not a RuntimeClass name (a DNS subdomain) or none"
        )
    return value


def _one_of(choices: tuple[str, ...]) -> Parser:
    def parse(key: str, value: str, _settings: Settings) -> str:
        if value not in choices:
            raise PodRefused(f"annotation {key}={shown(value)} is not valid: use one of {', '.join(choices)}")
        return value

    return parse


def _marker(_key: str, value: str, _settings: Settings) -> str:
    return value


#: The contract, one row per annotation (``epc.<container>`` is :data:`PER_CONTAINER_EPC`).
ANNOTATIONS: Final = (
    Annotation(EPC, "epc", epc_amount),
    Annotation(CONTAINERS, "containers", _container_names),
    Annotation(RUNTIME_CLASS, "runtime_class", _runtime_class),
    Annotation(AESM, "aesm", _one_of(AESM_MODES)),
    Annotation(QUOTE, "quote", _one_of(QUOTE_MODES)),
    Annotation(STATUS, "status", _marker),
    Annotation(QCNL, "qcnl", _marker),
)
#: ``epc.<container>``: the EPC of one container, read like ``epc``.
PER_CONTAINER_EPC: Final = Annotation(EPC_CONTAINER, "epc_by_container", epc_amount)
#: Every key of the contract (``confidential`` decides the opt-in before the others are read).
KNOWN_ANNOTATIONS: Final = frozenset({CONFIDENTIAL, *(row.key for row in ANNOTATIONS)})

assert {row.field for row in (*ANNOTATIONS, PER_CONTAINER_EPC)} <= {f.name for f in fields(Annotated)}


def opt_in(annotations: Mapping[str, str], *, namespace_opted_in: bool) -> str | None:
    """None when the pod is to be mutated; otherwise why not. Refuses a value other than true/false."""
    choice = annotations.get(CONFIDENTIAL)
    if choice is not None and choice not in ("true", "false"):
        raise PodRefused(f'annotation {CONFIDENTIAL}={shown(choice)} is not valid: use "true" or "false"')
    if choice == "true" or (namespace_opted_in and choice != "false"):
        return None
    return "pod is opted out" if choice == "false" else "pod is not opted in"


def read(annotations: Mapping[str, str], settings: Settings) -> Annotated:
    """Parse every annotation of the contract; the first unusable value refuses the pod."""
    values: dict[str, Any] = {}
    for row in ANNOTATIONS:
        if row.key in annotations:
            values[row.field] = row.parse(row.key, annotations[row.key], settings)
    by_container: dict[str, int] = {}
    unknown: list[str] = []
    for key, value in annotations.items():
        if key.startswith(EPC_CONTAINER):
            by_container[key[len(EPC_CONTAINER) :]] = PER_CONTAINER_EPC.parse(key, value, settings)
        elif key.startswith(PREFIX) and key not in KNOWN_ANNOTATIONS:
            unknown.append(key)
    return Annotated(**values, epc_by_container=by_container, unknown=tuple(unknown))
