"""The configuration file shared by the webhook and the extender.

One YAML mapping with camelCase keys (``--config FILE`` or ``$CONFIDENTIAL_PODS_CONFIG``).
Every key is optional; docs/configuration.md lists them with their defaults. A bad value
fails at start with a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from confidential_pods.errors import ConfigError, QuantityError
from confidential_pods.profiles import PROFILES, Profile
from confidential_pods.quantities import parse_bytes

CONFIG_ENV = "CONFIDENTIAL_PODS_CONFIG"

AesmMode = Literal["host", "sidecar", "none"]
AESM_MODES: tuple[AesmMode, ...] = ("host", "sidecar", "none")
ScoringStrategy = Literal["LeastAllocated", "MostAllocated"]
SCORING_STRATEGIES: tuple[ScoringStrategy, ...] = ("LeastAllocated", "MostAllocated")

_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_TOLERATION_OPERATORS = {"Exists", "Equal"}
_TOLERATION_EFFECTS = {"", "NoSchedule", "PreferNoSchedule", "NoExecute"}


@dataclass(frozen=True)
class Settings:
    """Validated configuration. Amounts of EPC are integer bytes."""

    profile: Profile = PROFILES["alibaba"]
    default_epc: int = 64 * 1024 * 1024
    max_epc_per_pod: int = 16 * 1024**3
    #: RuntimeClass set on opted-in pods; None means leave the pod's runtime alone.
    runtime_class: str | None = "kata"
    #: RuntimeClass names that run pods in a VM (a host AESM socket cannot reach in).
    sandbox_runtime_classes: frozenset[str] = frozenset(
        {"kata", "kata-qemu", "kata-clh", "kata-fc", "kata-qemu-tdx", "kata-qemu-sgx", "runv"}
    )
    aesm: AesmMode = "host"
    aesm_host_path: str = "/var/run/aesmd"
    aesm_sidecar_image: str | None = None
    aesm_sidecar_epc: int = 8 * 1024 * 1024
    scheduler_name: str | None = None
    tolerations: tuple[Mapping[str, Any], ...] = ()
    own_namespace: str = "confidential-pods"
    scoring_strategy: ScoringStrategy = "LeastAllocated"
    #: Seconds a bind's EPC reservation waits for the watch to show the pod before it is dropped.
    reservation_ttl_seconds: int = 60

    def is_sandbox(self, runtime_class: str | None) -> bool:
        """Whether a pod with this RuntimeClass runs inside a VM sandbox (Kata, runV)."""
        if runtime_class is None:
            return False
        return runtime_class in self.sandbox_runtime_classes or runtime_class == self.runtime_class


KNOWN_KEYS = {
    "profile",
    "defaultEPC",
    "maxEPCPerPod",
    "runtimeClass",
    "sandboxRuntimeClasses",
    "aesm",
    "aesmHostPath",
    "aesmSidecarImage",
    "aesmSidecarEPC",
    "schedulerName",
    "tolerations",
    "ownNamespace",
    "scoringStrategy",
    "reservationTTLSeconds",
}


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read settings from ``path``, else ``$CONFIDENTIAL_PODS_CONFIG``, else the defaults."""
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    if path is None:
        return Settings()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {os.fspath(path)}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {os.fspath(path)} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    return settings_from_mapping(data)


def settings_from_mapping(data: object) -> Settings:
    """Validate a configuration mapping. Unknown keys are refused (a typo must not pass silently)."""
    if not isinstance(data, Mapping):
        raise ConfigError("configuration must be a YAML mapping of camelCase keys")
    unknown = sorted(str(k) for k in data if k not in KNOWN_KEYS)
    if unknown:
        known = ", ".join(sorted(KNOWN_KEYS))
        raise ConfigError(f"unknown configuration key(s) {', '.join(unknown)}; known keys: {known}")
    defaults = Settings()

    profile_name = _string(data, "profile", defaults.profile.name)
    if profile_name not in PROFILES:
        raise ConfigError(f"profile: {profile_name!r} is not one of {', '.join(sorted(PROFILES))}")

    runtime_class = _optional_name(data, "runtimeClass", defaults.runtime_class)
    sandbox = data.get("sandboxRuntimeClasses", sorted(defaults.sandbox_runtime_classes))
    if not isinstance(sandbox, list) or not all(isinstance(s, str) and s for s in sandbox):
        raise ConfigError("sandboxRuntimeClasses: must be a list of RuntimeClass names")

    aesm = _string(data, "aesm", defaults.aesm)
    if aesm not in AESM_MODES:
        raise ConfigError(f"aesm: {aesm!r} is not one of {', '.join(AESM_MODES)}")
    strategy = _string(data, "scoringStrategy", defaults.scoring_strategy)
    if strategy not in SCORING_STRATEGIES:
        raise ConfigError(f"scoringStrategy: {strategy!r} is not one of {', '.join(SCORING_STRATEGIES)}")

    aesm_host_path = _string(data, "aesmHostPath", defaults.aesm_host_path)
    if not aesm_host_path.startswith("/"):
        raise ConfigError(f"aesmHostPath: {aesm_host_path!r} must be an absolute path")

    default_epc = _amount(data, "defaultEPC", defaults.default_epc)
    max_epc = _amount(data, "maxEPCPerPod", defaults.max_epc_per_pod)
    if default_epc > max_epc:
        raise ConfigError("defaultEPC: must not be larger than maxEPCPerPod")

    return Settings(
        profile=PROFILES[profile_name],
        default_epc=default_epc,
        max_epc_per_pod=max_epc,
        runtime_class=runtime_class,
        sandbox_runtime_classes=frozenset(sandbox),
        aesm=aesm,
        aesm_host_path=aesm_host_path,
        aesm_sidecar_image=_optional_name(data, "aesmSidecarImage", None),
        aesm_sidecar_epc=_amount(data, "aesmSidecarEPC", defaults.aesm_sidecar_epc),
        scheduler_name=_optional_name(data, "schedulerName", None),
        tolerations=_tolerations(data.get("tolerations", [])),
        own_namespace=_string(data, "ownNamespace", defaults.own_namespace),
        scoring_strategy=strategy,
        reservation_ttl_seconds=_positive_int(
            data, "reservationTTLSeconds", defaults.reservation_ttl_seconds
        ),
    )


def _string(data: Mapping[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: must be a non-empty string, got {value!r}")
    return value


def _positive_int(data: Mapping[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}: must be a positive whole number, got {value!r}")
    return value


def _optional_name(data: Mapping[str, Any], key: str, default: str | None) -> str | None:
    """A string where ``none``, ``""`` or null mean unset."""
    value = data.get(key, default)
    if value is None or value in ("", "none"):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key}: must be a string, got {value!r}")
    return value


def _amount(data: Mapping[str, Any], key: str, default: int) -> int:
    if key not in data:
        return default
    try:
        amount = parse_bytes(data[key])
    except QuantityError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
    if amount <= 0:
        raise ConfigError(f"{key}: must be a positive quantity such as 64Mi, got {data[key]!r}")
    return amount


def _tolerations(value: object) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list):
        raise ConfigError("tolerations: must be a list of Kubernetes tolerations")
    result = []
    for index, item in enumerate(value):
        where = f"tolerations[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: must be a mapping")
        unknown = set(item) - _TOLERATION_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        operator = item.get("operator", "Equal")
        if operator not in _TOLERATION_OPERATORS:
            raise ConfigError(f"{where}.operator: {operator!r} is not Exists or Equal")
        if item.get("effect", "") not in _TOLERATION_EFFECTS:
            raise ConfigError(f"{where}.effect: {item.get('effect')!r} is not a taint effect")
        if operator == "Exists" and item.get("value"):
            raise ConfigError(f"{where}.value: must be empty when operator is Exists")
        if "tolerationSeconds" in item and not isinstance(item["tolerationSeconds"], int):
            raise ConfigError(f"{where}.tolerationSeconds: must be an integer")
        for text_key in ("key", "value"):
            if text_key in item and not isinstance(item[text_key], str):
                raise ConfigError(f"{where}.{text_key}: must be a string")
        result.append(dict(item))
    return tuple(result)
