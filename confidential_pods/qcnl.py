"""The DCAP quote library's configuration: the ``dcap`` config key, rendered as ``sgx_default_qcnl.conf``.

Intel's quote provider library (QCNL, in intel/confidential-computing.tee.dcap ``QuoteGeneration/qcnl``) reads
a JSON file at ``/etc/sgx_default_qcnl.conf``, or at the path in ``$QCNL_CONF_PATH`` (DCAP 1.22 and newer).
The keys it knows and their defaults (``inc/qcnl_config.h``): ``pccs_url`` (``https://localhost:8081/…``:
never reachable from a container), ``use_secure_cert`` (true), ``collateral_service`` (= ``pccs_url``),
``retry_times`` and ``retry_delay`` (0), ``local_pck_url``, ``pck_cache_expire_hours`` (0; at most 2160),
plus others (``pccs_api_version``, ``custom_request_options``, ``verify_collateral_cache_expire_hours``,
``local_cache_only``, ``tcb_update_type``) that ``extra`` passes through.

:func:`read_dcap` checks the config key; :func:`render` writes the file's text (deterministic: the
webhook puts it in an annotation, and a second review must produce the same one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from confidential_pods.errors import ConfigError
from confidential_pods.schema import check

#: Where the quote library reads its configuration unless ``$QCNL_CONF_PATH`` says otherwise.
QCNL_PATH: Final = "/etc/sgx_default_qcnl.conf"
QCNL_PATH_ENV: Final = "QCNL_CONF_PATH"
#: ``<region>``, ``<your-pccs>``: text the user replaces (refused in dcap URLs; ``precheck`` finds it
#: anywhere).
PLACEHOLDER = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class Dcap:
    """The ``dcap`` config key: where quoting containers find their PCCS. ``pccs_url`` None: unset."""

    pccs_url: str | None = None
    use_secure_cert: bool = True
    collateral_service: str | None = None
    retry_times: int | None = None
    retry_delay: int | None = None
    local_pck_url: str | None = None
    pck_cache_expire_hours: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return self.pccs_url is not None


def read_dcap(key: str, value: object) -> Dcap:
    """The ``dcap`` mapping (``key``: its name in config.schema.json), checked by its schema; a ConfigError
    names the sub-key."""
    if value is None:
        return Dcap()
    check(value, key)
    assert isinstance(value, Mapping)  # the schema said so

    def url(name: str) -> str | None:
        return value.get(name) or None

    return Dcap(
        pccs_url=url("pccsUrl"),
        use_secure_cert=value.get("useSecureCert", True),
        collateral_service=url("collateralService"),
        retry_times=value.get("retryTimes"),
        retry_delay=value.get("retryDelay"),
        local_pck_url=url("localPckUrl"),
        pck_cache_expire_hours=value.get("pckCacheExpireHours"),
        extra=_extra(f"{key}.extra", value.get("extra")),
    )


def render(dcap: Dcap) -> str:
    """``sgx_default_qcnl.conf`` for ``dcap`` (JSON, keys in a fixed order, one line)."""
    values: dict[str, Any] = {
        "pccs_url": dcap.pccs_url,
        "use_secure_cert": dcap.use_secure_cert,
        "collateral_service": dcap.collateral_service,
        "retry_times": dcap.retry_times,
        "retry_delay": dcap.retry_delay,
        "local_pck_url": dcap.local_pck_url,
        "pck_cache_expire_hours": dcap.pck_cache_expire_hours,
    }
    document = {name: value for name, value in values.items() if value is not None}
    document.update(dcap.extra)
    return json.dumps(document, separators=(",", ":"), sort_keys=False)


def _extra(key: str, value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``extra`` as written (the schema refused the file keys that have their own camelCase key); YAML's
    own types (a date) are refused here, since the file is JSON."""
    if value is None:
        return {}
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: must hold JSON values only: {exc}") from None
    return dict(value)
