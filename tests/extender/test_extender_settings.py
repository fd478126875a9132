"""Configuration keys the extender reads: scoringStrategy, reservationTTLSeconds."""

from __future__ import annotations

import pytest

from confidential_pods.settings import ConfigError, Settings, settings_from_mapping


def test_defaults() -> None:
    settings = Settings()
    assert settings.scoring_strategy == "LeastAllocated"
    assert settings.reservation_ttl_seconds == 60


def test_reservation_ttl_and_strategy_parsed() -> None:
    settings = settings_from_mapping({"reservationTTLSeconds": 15, "scoringStrategy": "MostAllocated"})
    assert settings.reservation_ttl_seconds == 15
    assert settings.scoring_strategy == "MostAllocated"


@pytest.mark.parametrize("value", [0, -5, "30", 1.5, True, None])
def test_reservation_ttl_rejects(value: object) -> None:
    with pytest.raises(ConfigError, match="reservationTTLSeconds"):
        settings_from_mapping({"reservationTTLSeconds": value})


def test_unknown_strategy_rejected() -> None:
    with pytest.raises(ConfigError, match="scoringStrategy"):
        settings_from_mapping({"scoringStrategy": "Balanced"})
