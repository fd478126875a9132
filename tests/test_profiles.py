"""Resource profiles and EPC quantities."""

from __future__ import annotations

import pytest

from confidential_pods.profiles import PROFILES
from confidential_pods.quantities import QuantityError, format_bytes, parse_bytes

MiB = 2**20


@pytest.mark.parametrize(
    ("profile", "amount", "value", "rounded"),
    [
        ("alibaba", 64 * MiB, "64", False),
        ("alibaba", 64 * MiB + 1, "65", True),
        ("azure", 1536 * 1024, "2", True),
        ("azure", 2 * 2**30, "2048", False),
        ("intel", 64 * MiB, "64Mi", False),
        ("intel", 1000, "1000", False),
    ],
)
def test_resource_value(profile: str, amount: int, value: str, rounded: bool) -> None:
    assert PROFILES[profile].resource_value(amount) == (value, rounded)


@pytest.mark.parametrize(
    ("profile", "value", "amount"),
    [
        ("alibaba", "93", 93 * MiB),
        ("alibaba", 93, 93 * MiB),
        ("azure", "1k", 1000 * MiB),
        ("intel", "64Mi", 64 * MiB),
        ("intel", "67108864", 64 * MiB),
    ],
)
def test_parse_resource(profile: str, value: object, amount: int) -> None:
    assert PROFILES[profile].parse_resource(value) == amount


def test_quantities() -> None:
    assert parse_bytes("64Mi") == 64 * MiB
    assert parse_bytes("1.5Ki") == 1536
    assert format_bytes(64 * MiB) == "64Mi"
    assert format_bytes(2**30) == "1Gi"
    assert format_bytes(1536) == "1536"  # 1.5Ki has no whole binary suffix
    assert format_bytes(1000) == "1000"
    for bad in ("64MB", "", "lots", None, True, [1]):
        with pytest.raises(QuantityError):
            parse_bytes(bad)
