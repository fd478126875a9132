"""The dcap configuration key, sgx_default_qcnl.conf, the quote key and `confidential-pods qcnl`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from confidential_pods.cli import main
from confidential_pods.errors import ConfigError
from confidential_pods.qcnl import Dcap, read_dcap, render
from confidential_pods.settings import Settings, problems, settings_from_mapping

PCCS = "https://sgx-dcap-server.cn-hangzhou.aliyuncs.com/sgx/certification/v4/"


SOURCE: dict[str, Any] = {
    "pccsUrl": PCCS,
    "useSecureCert": False,
    "collateralService": "https://api.trustedservices.intel.com/sgx/certification/v4/",
    "retryTimes": 6,
    "retryDelay": 10,
    "localPckUrl": "http://169.254.169.254/metadata/THIM/sgx/certification/v4/",
    "pckCacheExpireHours": 168,
    "extra": {
        "pccs_api_version": "3.1",
        "custom_request_options": {"get_cert": {"headers": {"metadata": "true"}}},
    },
}


def test_every_key_rendered_in_the_librarys_names() -> None:
    text = render(read_dcap("dcap", SOURCE))
    assert json.loads(text) == {
        "pccs_url": PCCS,
        "use_secure_cert": False,
        "collateral_service": "https://api.trustedservices.intel.com/sgx/certification/v4/",
        "retry_times": 6,
        "retry_delay": 10,
        "local_pck_url": "http://169.254.169.254/metadata/THIM/sgx/certification/v4/",
        "pck_cache_expire_hours": 168,
        "pccs_api_version": "3.1",
        "custom_request_options": {"get_cert": {"headers": {"metadata": "true"}}},
    }
    # deterministic: the webhook compares it with what a pod already carries
    assert render(read_dcap("dcap", dict(SOURCE))) == text


def test_defaults() -> None:
    assert Settings().dcap == Dcap() and not Dcap().configured
    assert json.loads(render(read_dcap("dcap", {"pccsUrl": PCCS}))) == {
        "pccs_url": PCCS,
        "use_secure_cert": True,
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://x", "must be a mapping"),
        ({"pccsURL": PCCS}, "unknown key(s) pccsURL"),
        (
            {"pccsUrl": "https://sgx-dcap-server.<region>.aliyuncs.com/sgx/certification/v4/"},
            "still holds a placeholder (<region>)",
        ),
        ({"pccsUrl": "localhost:8081"}, "is not an http(s) URL"),
        ({"pccsUrl": "ftp://pccs/"}, "is not an http(s) URL"),
        ({"pccsUrl": 5}, "dcap.pccsUrl: 5 is not an http(s) URL"),
        ({"pccsUrl": PCCS, "useSecureCert": "yes"}, "dcap.useSecureCert: must be true or false"),
        ({"pccsUrl": PCCS, "retryTimes": -1}, "dcap.retryTimes"),
        ({"pccsUrl": PCCS, "pckCacheExpireHours": 5000}, "from 0 to 2160"),
        ({"pccsUrl": PCCS, "extra": {"pccs_url": "https://other/"}}, "pccs_url has its own camelCase key"),
        ({"pccsUrl": PCCS, "extra": [1]}, "dcap.extra: must be a mapping"),
    ],
)
def test_bad_values_name_the_key(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_dcap("dcap", value)


def test_quote_key_and_its_need_for_a_pccs() -> None:
    assert settings_from_mapping({}).quote == "aesmd"
    assert settings_from_mapping({"quote": "none"}).quote == "none"
    with pytest.raises(ConfigError, match="quote: 'inproc' is not one of"):
        settings_from_mapping({"quote": "inproc"})
    # valid key by key, incomplete together: named by problems() (the offline tools exit 2, the webhook is
    # unready), not refused by the loader
    (problem,) = problems(settings_from_mapping({"quote": "in-process"}))
    assert problem.key == "dcap.pccsUrl" and problem.message.startswith("quote is in-process")
    configured = settings_from_mapping({"quote": "in-process", "dcap": {"pccsUrl": PCCS}})
    assert configured.dcap.pccs_url == PCCS and problems(configured) == ()
    with pytest.raises(ConfigError, match="aesmSidecarUser"):
        settings_from_mapping({"aesmSidecarUser": -1})


def test_qcnl_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"dcap:\n  pccsUrl: {PCCS}\n  retryTimes: 3\n")
    out = tmp_path / "sgx_default_qcnl.conf"
    assert main(["qcnl", "--config", str(config), "-o", str(out)]) == 0
    assert json.loads(out.read_text()) == {"pccs_url": PCCS, "use_secure_cert": True, "retry_times": 3}
    config.write_text("profile: intel\n")
    assert main(["qcnl", "--config", str(config)]) == 2
    assert "dcap.pccsUrl is not set" in capsys.readouterr().err
