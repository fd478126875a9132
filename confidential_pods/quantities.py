"""Kubernetes quantities in, integer amounts inside, binary-suffixed strings out.

A bounded parser, written here on purpose: the official client's ``kubernetes.utils.parse_quantity``
hands the text to ``Decimal`` and multiplies, so ``1e99999999`` builds a hundred-million-digit number
(hours of CPU in one admission review) and ``٦٤Mi`` or ``6_4Mi`` pass because ``Decimal`` reads
Unicode digits and underscores. Anyone who can create a pod can write such an annotation, so this
module reads the grammar of ``k8s.io/apimachinery/pkg/api/resource/quantity.go`` itself and bounds the
magnitude *before* any arithmetic, as that package bounds a quantity to the int64 range:

    <quantity>        ::= <signedNumber><suffix>
    <signedNumber>    ::= <number> | <sign><number>          <sign> ::= "+" | "-"
    <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <digits>          ::= ASCII 0-9, one or more
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
    <decimalExponent> ::= "e" <sign>? <digits> | "E" <sign>? <digits>

As Go's scanner reads it (``parseQuantityString``): the exponent is a whole number, no white space,
no Unicode digits, no ``_``. Stricter than that scanner in two places, both of which only refuse text
the API server never writes itself (it stores quantities in canonical form): a number needs at least
one digit (Go reads ``"+"`` and ``"."`` as 0), and the magnitude must fit in int64 (Go caps or wraps
some larger values instead of refusing them). Text longer than :data:`MAX_LENGTH` is refused unread.

Amounts are exact: a value is kept as an integer count of nano-units (10^-9), rounded away from zero
as ``ParseQuantity`` rounds to its nano scale. Every step costs O(length of the text).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from confidential_pods.errors import QuantityError, shown

MiB: Final = 1024 * 1024
#: Largest magnitude of a quantity (Go's int64; ``resource.Quantity`` caps or refuses beyond it).
MAX_QUANTITY: Final = 2**63 - 1
#: Longest quantity text read. The longest meaningful one (19 digits, 9 decimals, a sign and a suffix)
#: is under 40 characters; leading zeros are the only way to write a longer one.
MAX_LENGTH: Final = 64
#: Nano-units per unit: quantities are exact to 10^-9, like ``resource.Quantity``.
NANO: Final = 10**9

_DIGITS: Final = frozenset("0123456789")
_SUFFIX_LETTERS: Final = frozenset("eEinumkKMGTP")
#: suffix → (base, exponent)
_SUFFIXES: Final[dict[str, tuple[int, int]]] = {
    "": (10, 0),
    "n": (10, -9),
    "u": (10, -6),
    "m": (10, -3),
    "k": (10, 3),
    "M": (10, 6),
    "G": (10, 9),
    "T": (10, 12),
    "P": (10, 15),
    "E": (10, 18),
    "Ki": (2, 10),
    "Mi": (2, 20),
    "Gi": (2, 30),
    "Ti": (2, 40),
    "Pi": (2, 50),
    "Ei": (2, 60),
}
_FORMAT_SUFFIXES: Final = (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", MiB), ("Ki", 1024))


def parse_nanos(value: object) -> int:
    """A quantity (text, or a JSON/YAML number) → its value in nano-units, rounded away from zero.

    Raises :class:`QuantityError` naming the value when it is not a quantity or is beyond int64.
    """
    if isinstance(value, bool):
        raise QuantityError(f"{shown(value)} is not a Kubernetes quantity")
    if isinstance(value, int):
        if abs(value) > MAX_QUANTITY:
            raise QuantityError(f"{shown(value)} is larger than a Kubernetes quantity can be")
        return value * NANO
    text = repr(value) if isinstance(value, float) else value  # a JSON number: 1.5, 1e+300, inf
    if not isinstance(text, str):
        raise QuantityError(f"{shown(value)} is not a Kubernetes quantity")
    if len(text) > MAX_LENGTH:
        raise QuantityError(f"{shown(value)} is too long for a quantity (at most {MAX_LENGTH} characters)")
    parts = _scan(text)
    if parts is None:
        raise QuantityError(f"{shown(value)} is not a Kubernetes quantity (such as 64Mi, 128M or 1e6)")
    negative, digits, decimals, base, exponent = parts
    nanos = _nanos(digits, decimals, base, exponent)
    if nanos is None or nanos > MAX_QUANTITY * NANO:
        raise QuantityError(
            f"{shown(value)} is larger than a Kubernetes quantity can be (at most {MAX_QUANTITY})"
        )
    return -nanos if negative else nanos


def _scan(text: str) -> tuple[bool, str, str, int, int] | None:
    """(negative, integer digits, decimal digits, base, exponent), or None when not the grammar."""
    end = len(text)
    pos = 0
    negative = False
    if pos < end and text[pos] in "+-":
        negative = text[pos] == "-"
        pos += 1
    start = pos
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    digits = text[start:pos]
    decimals = ""
    if pos < end and text[pos] == ".":
        pos += 1
        start = pos
        while pos < end and text[pos] in _DIGITS:
            pos += 1
        decimals = text[start:pos]
    if not digits and not decimals:
        return None
    suffix = text[pos:]
    known = _SUFFIXES.get(suffix)
    if known is not None:
        return negative, digits, decimals, known[0], known[1]
    if len(suffix) < 2 or suffix[0] not in "eE":
        return None
    exponent_text = suffix[1:]
    body = exponent_text[1:] if exponent_text[0] in "+-" else exponent_text
    if not body or not all(c in _DIGITS for c in body):
        return None
    # Bounded by MAX_LENGTH, so int() is cheap; a huge exponent is refused by _nanos, not computed.
    return negative, digits, decimals, 10, int(exponent_text)


def _nanos(digits: str, decimals: str, base: int, exponent: int) -> int | None:
    """|value| in nano-units (rounded up), or None when beyond int64. Never builds a large number."""
    mantissa_text = (digits + decimals).lstrip("0")
    if not mantissa_text:
        return 0
    mantissa = int(mantissa_text)  # at most MAX_LENGTH digits
    if base == 2:
        numerator, shift = mantissa << exponent, len(decimals)  # exponent <= 60: bounded
        return _ceil_div(numerator * NANO, 10**shift)
    # value = mantissa * 10^power, with len(mantissa_text) significant digits
    power = exponent - len(decimals)
    order = len(mantissa_text) + power  # 10^(order-1) <= value < 10^order
    if order - 1 > 18:  # >= 10^19 > 2^63 - 1
        return None
    if order < -9:  # a nonzero value below one nano-unit rounds up to it
        return 1
    power += 9  # in nano-units; power >= -9 - len(mantissa_text) here, so 10**-power is bounded too
    if power >= 0:
        return mantissa * int(10**power)
    return _ceil_div(mantissa, int(10**-power))


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def parse_whole(value: object, what: str = "a whole number") -> int:
    """A quantity that must be a whole number (extended resources, bytes) → that number; ``what`` names
    it in the error."""
    whole, fraction = divmod(parse_nanos(value), NANO)
    if fraction:
        raise QuantityError(f"{shown(value)} is not {what}")
    return whole


def parse_bytes(value: object) -> int:
    """A quantity that means bytes (``64Mi``, ``1.5Gi``, ``134217728``) → whole bytes."""
    return parse_whole(value, "a whole number of bytes")


def parse_decimal(value: object) -> Decimal:
    """A quantity (``"100m"``, ``"1.5"``, ``7``) → its exact value (for CPU, memory and reports)."""
    return Decimal(parse_nanos(value)).scaleb(-9)


def format_binary(amount: int) -> str:
    """Bytes with a binary suffix always (``Ki`` at least), rounded up to whole KiB: for consumers that
    read nothing else, such as Kata's ``sgx.intel.com/epc`` annotation (EPC is page-granular anyway)."""
    kib = -(-amount // 1024)
    for suffix, size in (("Ti", 1024**3), ("Gi", 1024**2), ("Mi", 1024)):
        if kib % size == 0 and kib:
            return f"{kib // size}{suffix}"
    return f"{kib}Ki"


def format_bytes(amount: int) -> str:
    """Render bytes the way a user writes EPC: ``64Mi``, ``1Gi``, ``1536Ki``; plain bytes otherwise.

    Never more than 64 characters: an amount beyond int64 (a sum of pods, say) is written in ``Ei``
    when whole, else as ``>8Ei`` instead of a long digit string.
    """
    if amount == 0:
        return "0"
    if abs(amount) > MAX_QUANTITY:
        whole, rest = divmod(amount, 1024**6)
        if not rest and abs(whole) < 10**40:
            return f"{whole}Ei"
        return ">8Ei" if amount > 0 else "<-8Ei"
    for suffix, size in _FORMAT_SUFFIXES:
        if amount % size == 0:
            return f"{amount // size}{suffix}"
    return str(amount)
