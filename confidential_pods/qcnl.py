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
from urllib.parse import urlsplit

from confidential_pods.errors import ConfigError

#: Where the quote library reads its configuration unless ``$QCNL_CONF_PATH`` says otherwise.
QCNL_PATH: Final = "/etc/sgx_default_qcnl.conf"
QCNL_PATH_ENV: Final = "QCNL_CONF_PATH"
#: The library caps both cache lifetimes at 90 days (``CACHE_MAX_EXPIRY_HOURS``).
MAX_CACHE_HOURS: Final = 2160

#: camelCase config key → the file's key, in the order they are written.
_KEYS: Final = {
    "pccsUrl": "pccs_url",
    "useSecureCert": "use_secure_cert",
    "collateralService": "collateral_service",
    "retryTimes": "retry_times",
    "retryDelay": "retry_delay",
    "localPckUrl": "local_pck_url",
    "pckCacheExpireHours": "pck_cache_expire_hours",
}
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
    """The ``dcap`` mapping, each entry checked; a ConfigError names the sub-key."""
    if value is None:
        return Dcap()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: must be a mapping (pccsUrl, useSecureCert, …)")
    unknown = sorted(str(k) for k in value if k not in (*_KEYS, "extra"))
    if unknown:
        known = ", ".join([*_KEYS, "extra"])
        raise ConfigError(f"{key}: unknown key(s) {', '.join(unknown)}; known: {known}")
    return Dcap(
        pccs_url=_url(f"{key}.pccsUrl", value.get("pccsUrl")),
        use_secure_cert=_boolean(f"{key}.useSecureCert", value.get("useSecureCert", True)),
        collateral_service=_url(f"{key}.collateralService", value.get("collateralService")),
        retry_times=_count(f"{key}.retryTimes", value.get("retryTimes"), 100),
        retry_delay=_count(f"{key}.retryDelay", value.get("retryDelay"), 3600),
        local_pck_url=_url(f"{key}.localPckUrl", value.get("localPckUrl")),
        pck_cache_expire_hours=_count(
            f"{key}.pckCacheExpireHours", value.get("pckCacheExpireHours"), MAX_CACHE_HOURS
        ),
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


def _url(key: str, value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key}: must be a URL, got {value!r}")
    placeholder = PLACEHOLDER.search(value)
    if placeholder:
        raise ConfigError(
            f"{key}: {value!r} still holds a placeholder ({placeholder.group(0)}): "
            "set it for your cluster (docs/attestation.md lists the PCCS of each cloud)"
        )
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or any(c.isspace() for c in value):
        raise ConfigError(f"{key}: {value!r} is not an http(s) URL")
    return value


def _boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    return value


def _count(key: str, value: object, maximum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ConfigError(f"{key}: must be a whole number from 0 to {maximum}, got {value!r}")
    return value


def _extra(key: str, value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{key}: must be a mapping of the file's own keys (snake_case)")
    named = sorted(k for k in value if k in _KEYS.values())
    if named:
        camel = {file_key: config_key for config_key, file_key in _KEYS.items()}
        raise ConfigError(f"{key}: set {', '.join(camel[k] for k in named)} with its own key, not in extra")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: must hold JSON values only: {exc}") from None
    return dict(value)
