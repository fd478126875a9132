"""The bounded quantity parser: the grammar of resource.Quantity, int64-bounded, cost O(length)."""

from __future__ import annotations

import contextlib
import math
import re
import time
from fractions import Fraction

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from confidential_pods.quantities import (
    MAX_QUANTITY,
    QuantityError,
    format_bytes,
    parse_bytes,
    parse_decimal,
    parse_nanos,
    parse_whole,
)

#: What a hostile pod author writes (issue: "Hostile and careless input").
HOSTILE = [
    "1e99999999",
    "1e300000",
    "1e999999",
    "1e5000",
    "9223372036854775807Ei",
    "1e-999999",
    "\u0666\u0664Mi",  # Arabic-Indic digits: Decimal would read them
    "6_4Mi",  # int() and Decimal read underscores
    " 64Mi",
    "64Mi ",
    "\t64Mi",
    "1" * 65,
    "0" * 70 + "1",
    "1e" + "9" * 60,
    "9" * 19 + "e" + "9" * 40,
    "1e-" + "9" * 60,
    "1E99999999Ki",
    "1.5e3.5",
    "Infinity",
    "NaN",
    "1e",
    "e5",
    "+",
    ".",
    "--1",
    "1Kib",
    "0x10",
    "\uff11\uff12Mi",  # fullwidth digits
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_refused_naming_the_value(value: str) -> None:
    with pytest.raises(QuantityError) as refused:
        parse_bytes(value)
    message = str(refused.value)
    assert repr(value[:32])[:-1] in message  # named (long values are cut short)
    assert len(message) < 200


@pytest.mark.parametrize(
    "value",
    [*HOSTILE, 10**5000, -(10**5000), 1e308, float("inf"), float("nan")],
    ids=[*HOSTILE, "10**5000", "-10**5000", "1e308", "inf", "nan"],
)
def test_each_hostile_parse_is_quick(value: object) -> None:
    # A guard against a hang, not a benchmark: the unbounded parser took seconds to hours here.
    # 1e-999999 is a quantity (one nano-unit, rounded up), just not a whole number of bytes.
    for parse in (parse_bytes, parse_nanos, parse_whole, parse_decimal):
        started = time.perf_counter()
        with contextlib.suppress(QuantityError):
            parse(value)
        assert time.perf_counter() - started < 0.5, parse.__name__
    with pytest.raises(QuantityError):
        parse_bytes(value)


@pytest.mark.parametrize(
    ("value", "nanos"),
    [
        ("64Mi", 64 * 2**20 * 10**9),
        ("1.5Ki", 1536 * 10**9),
        ("100m", 10**8),
        ("1e3", 10**12),
        ("1E3", 10**12),
        ("1e+3", 10**12),
        ("1E", 10**27),  # E alone is exa
        ("-5", -5 * 10**9),
        ("+7", 7 * 10**9),
        (".5", 5 * 10**8),
        ("5.", 5 * 10**9),
        ("0", 0),
        ("0.0", 0),
        ("000064Mi", 64 * 2**20 * 10**9),
        ("1n", 1),
        ("0.1n", 1),  # rounded up to the nano scale, as ParseQuantity does
        ("1e-999999", 1),
        ("-1e-999999", -1),
        ("7Ei", 7 * 2**60 * 10**9),
        (str(MAX_QUANTITY), MAX_QUANTITY * 10**9),
        (MAX_QUANTITY, MAX_QUANTITY * 10**9),
        (-MAX_QUANTITY, -MAX_QUANTITY * 10**9),
        (64, 64 * 10**9),
        (1.5, 15 * 10**8),
    ],
)
def test_values(value: object, nanos: int) -> None:
    assert parse_nanos(value) == nanos


@pytest.mark.parametrize("value", ["8Ei", str(MAX_QUANTITY + 1), MAX_QUANTITY + 1, "9.3e18", "10E"])
def test_beyond_int64_is_refused(value: object) -> None:
    with pytest.raises(QuantityError, match="larger than a Kubernetes quantity can be"):
        parse_nanos(value)


@pytest.mark.parametrize("value", ["1.1", "100m", "1e-999999", "0.5Ki"])
def test_whole_numbers_only_for_bytes(value: str) -> None:
    # 0.5Ki is 512 bytes: whole; the others are fractions of a byte.
    if value == "0.5Ki":
        assert parse_bytes(value) == 512
        return
    with pytest.raises(QuantityError, match="not a whole number"):
        parse_bytes(value)


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}, b"64Mi"])
def test_non_quantity_types(value: object) -> None:
    with pytest.raises(QuantityError):
        parse_nanos(value)


def test_format_bytes_stays_short_beyond_int64() -> None:
    assert format_bytes(64 * 2**20) == "64Mi"
    assert format_bytes(MAX_QUANTITY * 2**20) == ">8Ei"
    assert format_bytes(2**70) == "1024Ei"
    assert len(format_bytes(10**5000)) < 10
    assert format_bytes(-(10**5000)) == "<-8Ei"


# --- the reference reading of the grammar -------------------------------------------------------------

_REFERENCE = re.compile(
    r"(?P<sign>[+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?",
    re.ASCII,
)
_MULTIPLIERS = {
    **{s: Fraction(2) ** (10 * (i + 1)) for i, s in enumerate(["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])},
    **{s: Fraction(10) ** e for s, e in zip("numkMGTPE", [-9, -6, -3, 3, 6, 9, 12, 15, 18], strict=True)},
    "": Fraction(1),
}


def reference_bytes(text: str) -> int | None:
    """The quantity.go grammar by regular expression, exact fractions, nano rounding, int64 bound."""
    match = _REFERENCE.fullmatch(text)
    if match is None or not (match["int"] or match["frac"]) or len(text) > 64:
        return None
    suffix = match["suffix"] or ""
    multiplier = _MULTIPLIERS.get(suffix)
    if multiplier is None:
        # At most 44 digits: past 10^±80 every non-zero number is over the int64 bound or under a nano
        # (the same answer as the exact power), and 10 ** 4567890123456789 would never finish.
        multiplier = Fraction(10) ** max(-80, min(80, int(suffix[1:])))
    number = Fraction(
        int((match["int"] or "") + (match["frac"] or "") or "0"), 10 ** len(match["frac"] or "")
    )
    magnitude = number * multiplier
    nanos = math.ceil(magnitude * 10**9)  # away from zero, on the magnitude
    if nanos > MAX_QUANTITY * 10**9 or nanos % 10**9:
        return None
    return -(nanos // 10**9) if match["sign"] == "-" else nanos // 10**9


def quantity_texts() -> st.SearchStrategy[str]:
    digits = st.text("0123456789", max_size=22)
    suffixes = st.sampled_from(
        [
            "",
            "Ki",
            "Mi",
            "Gi",
            "Ti",
            "Pi",
            "Ei",
            "n",
            "u",
            "m",
            "k",
            "M",
            "G",
            "T",
            "P",
            "E",
            "e",
            "i",
            "K",
            "b",
        ]
    ) | st.builds(
        lambda e, sign, n: f"{e}{sign}{n}",
        st.sampled_from(["e", "E"]),
        st.sampled_from(["", "+", "-"]),
        st.integers(0, 40),
    )
    grammar_like = st.builds(
        lambda sign, whole, dot, frac, suffix: f"{sign}{whole}{dot}{frac}{suffix}",
        st.sampled_from(["", "", "+", "-"]),
        digits,
        st.sampled_from(["", "", "."]),
        digits,
        suffixes,
    )
    noise = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
    spliced = st.builds(
        lambda text, at, extra: text[:at] + extra + text[at:],
        grammar_like,
        st.integers(0, 30),
        st.sampled_from([" ", "_", "\u0666", "\uff11", "\n", ".", "e", "x", "\x00"]),
    )
    return grammar_like | noise | spliced


@settings(max_examples=3000, deadline=None)
@given(quantity_texts())
@example("1.0000000001")
@example("0.9999999999")  # rounds up to 1 on the nano scale, as ParseQuantity does
@example("9223372036854775807")
@example("9223372036854775807.0000000001")
@example("1e4567890123456789")  # huge exponents: the reference once computed the power itself
@example("0e4567890123456789")
@example("1e-4567890123456789")
@example("0.5e-81")
@example("1e81")
def test_parse_bytes_matches_the_reference_grammar(text: str) -> None:
    expected = reference_bytes(text)
    try:
        got: int | None = parse_bytes(text)
    except QuantityError:
        got = None
    assert got == expected, text
