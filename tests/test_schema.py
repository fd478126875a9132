"""config.schema.json: the one description of the configuration, and everything derived from it."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confidential_pods.errors import ConfigError
from confidential_pods.schema import CHART_SCHEMA, DOCS, SCHEMA, chart_config_schema, main, rendered
from confidential_pods.settings import KEYS, Settings, settings_from_mapping

ROOT = Path(__file__).resolve().parents[1]
KEYS_DESCRIBED = SCHEMA["properties"]


def test_the_schema_is_a_draft_7_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.Draft7Validator.check_schema(chart_config_schema())
    assert not [key for key in json.dumps(chart_config_schema()).split('"') if key.startswith("x-")]


def test_every_field_has_one_key_and_every_key_a_field() -> None:
    configured = {f.name for f in fields(Settings)} - {"audience"}  # audience: set by the shell, not a key
    assert {key.field for key in KEYS} == configured
    assert {key.name for key in KEYS} == set(KEYS_DESCRIBED)


@pytest.mark.parametrize("name", [name for name, key in KEYS_DESCRIBED.items() if "default" in key])
def test_each_default_the_schema_states_is_the_settings_default(name: str) -> None:
    """The docs' default column is the truth: writing the stated default changes nothing."""
    assert settings_from_mapping({name: KEYS_DESCRIBED[name]["default"]}) == Settings()


def test_every_key_states_its_default_meaning_and_user() -> None:
    for name, key in KEYS_DESCRIBED.items():
        assert "default" in key or "x-default" in key, name
        assert key["description"] and key["x-used-by"], name


def test_the_derived_files_are_current() -> None:
    """docs/configuration.md's table and the chart's ``config`` schema: run
    ``python -m confidential_pods.schema --write`` after editing config.schema.json."""
    assert (ROOT / CHART_SCHEMA).exists()
    for path, text in rendered(ROOT).items():
        assert (ROOT / path).read_text(encoding="utf-8") == text, f"{path} is stale"
    assert main(["--root", str(ROOT), "--check"]) == 0


def test_check_names_a_stale_file_and_write_mends_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in (DOCS, CHART_SCHEMA):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((ROOT / path).read_text(encoding="utf-8"), encoding="utf-8")
    docs = tmp_path / DOCS
    docs.write_text(
        docs.read_text(encoding="utf-8").replace("| `defaultEPC` | `64Mi` |", "| `defaultEPC` | `1Mi` |")
    )
    chart = tmp_path / CHART_SCHEMA
    chart.write_text(json.dumps({**json.loads(chart.read_text()), "properties": {}}))
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert f"stale: {DOCS}, {CHART_SCHEMA}" in capsys.readouterr().err
    assert main(["--root", str(tmp_path), "--write"]) == 0
    assert main(["--root", str(tmp_path), "--check"]) == 0
    assert docs.read_text(encoding="utf-8") == (ROOT / DOCS).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"profile": "amd"}, "profile: 'amd' is not one of alibaba, azure, intel"),
        ({"defaultEPC": "lots"}, "defaultEPC: must be a positive quantity such as 64Mi, got 'lots'"),
        ({"defaultEPC": 0}, "defaultEPC: must be a positive quantity such as 64Mi, got 0"),
        ({"defaultEPC": "0Mi"}, "defaultEPC: must be a positive quantity such as 64Mi, got '0Mi'"),
        ({"defaultEPC": "1.5"}, "defaultEPC: '1.5' is not a whole number of bytes"),
        (
            {"tolerations": [{"key": "k", "effect": "Never"}]},
            "tolerations[0].effect: 'Never' is not one of \"\", ",
        ),
        ({"tolerations": [{"operator": "Exists", "value": "v"}]}, "tolerations[0].value: must be empty when"),
        (
            {"dcap": {"pccsURL": "https://p/"}},
            "dcap: unknown key(s) pccsURL; known: collateralService, extra",
        ),
        (
            {"epcResource": "kubernetes.io/epc"},
            "epcResource: 'kubernetes.io/epc' is in the kubernetes.io domain",
        ),
        ({"epcUnit": "KiB"}, "epcUnit: 'KiB' is not one of MiB, bytes"),
        ({"ownNamespace": "Ops_NS"}, "ownNamespace: must be a namespace name, got 'Ops_NS'"),
        (
            {"aesmSidecarUser": True},
            "aesmSidecarUser: must be a user id (a whole number, 0 for root), got True",
        ),
        ({"defaultEpc": "64Mi"}, "unknown configuration key(s) defaultEpc; known keys: aesm, aesmHostPath"),
    ],
)
def test_messages_come_from_the_schema_and_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping(data)
    assert str(raised.value).startswith(message)


def test_every_bad_key_is_named_at_once() -> None:
    """A first install fixes its file in one pass, not one key per start."""
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping({"aesm": "socket", "quote": "inproc", "reservationTTLSeconds": 0})
    assert str(raised.value) == (
        "aesm: 'socket' is not one of host, sidecar, none; "
        "quote: 'inproc' is not one of aesmd, in-process, none; "
        "reservationTTLSeconds: must be a positive whole number, got 0"
    )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(KEYS_DESCRIBED)), JSON_VALUES, max_size=4))
def test_any_value_is_read_or_refused_with_a_config_error(data: dict[str, Any]) -> None:
    """No value of any key gets past the schema to fail in a converter with anything else."""
    try:
        settings_from_mapping(data)
    except ConfigError as exc:
        assert str(exc).split(":")[0].split(".")[0].split("[")[0] in KEYS_DESCRIBED
