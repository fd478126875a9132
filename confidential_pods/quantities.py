"""EPC amounts: Kubernetes quantities in, integer bytes inside, binary-suffixed strings out."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

from kubernetes.utils import parse_quantity

MiB = 1024 * 1024

_SUFFIXES = (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024))


class QuantityError(ValueError):
    """A string is not a Kubernetes quantity, or not a usable amount of EPC."""


def parse_decimal(value: object) -> Decimal:
    """Parse a Kubernetes quantity (``"64Mi"``, ``"1.5"``, ``"100m"``, ``7``) into a Decimal."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise QuantityError(f"{value!r} is not a Kubernetes quantity")
    try:
        result: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, InvalidOperation) as exc:
        raise QuantityError(f"{value!r} is not a Kubernetes quantity") from exc
    if not result.is_finite():
        raise QuantityError(f"{value!r} is not a finite quantity")
    return result


def parse_bytes(value: object) -> int:
    """Parse a quantity that means bytes; fractions of a byte round up (as Kubernetes' Value() does)."""
    return math.ceil(parse_decimal(value))


def format_bytes(amount: int) -> str:
    """Render bytes the way a user writes EPC: ``64Mi``, ``1Gi``, ``1536Ki``; plain bytes otherwise."""
    if amount == 0:
        return "0"
    for suffix, size in _SUFFIXES:
        if amount % size == 0:
            return f"{amount // size}{suffix}"
    return str(amount)
