"""The configuration file shared by the webhook and the extender.

One YAML mapping with camelCase keys (``--config FILE`` or ``$CONFIDENTIAL_PODS_CONFIG``). Every key is
optional. config.schema.json describes every key (confidential_pods/schema.py: the loader's validation and
messages, docs/configuration.md and the chart's ``values.schema.json`` derive from it); :data:`KEYS` says
how a value the schema accepted becomes a field of :class:`Settings`. A bad value fails at start with a
:class:`~confidential_pods.errors.ConfigError` naming the key; keys valid one by one that together leave a
key to set are :func:`problems` (the offline tools exit 2, the webhook stays unready).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, Literal

from confidential_pods.documents import load_document, read_text
from confidential_pods.errors import ConfigError, MalformedInput, QuantityError
from confidential_pods.profiles import PROFILES, Profile
from confidential_pods.qcnl import Dcap, read_dcap
from confidential_pods.quantities import parse_bytes
from confidential_pods.schema import SCHEMA, check

CONFIG_ENV = "CONFIDENTIAL_PODS_CONFIG"

AesmMode = Literal["host", "sidecar", "none"]
AESM_MODES: tuple[AesmMode, ...] = ("host", "sidecar", "none")
ScoringStrategy = Literal["LeastAllocated", "MostAllocated"]
SCORING_STRATEGIES: tuple[ScoringStrategy, ...] = ("LeastAllocated", "MostAllocated")
#: Who reads a refusal that a configuration key could lift (:meth:`Settings.to_set`): the webhook's
#: answers go to a pod's author, who asks the cluster operator; the offline tools' (``inject``,
#: ``simulate``) to the person running them, who owns the ``--config`` file.
Audience = Literal["webhook", "offline"]
#: How a confidential pod produces DCAP quotes: through the AESM socket, its own quote library, or not.
QuoteMode = Literal["aesmd", "in-process", "none"]
#: What the extender makes of a node without a known SGXAttestationReady condition (extender/readiness.py).
AttestationUnknown = Literal["allow", "refuse"]
ATTESTATION_UNKNOWN: tuple[AttestationUnknown, ...] = ("allow", "refuse")
#: Whether the webhook writes per-container EPC limits for the node to enforce: ``nri`` writes the
#: annotations of containers/nri-plugins' ``sgx-epc`` plugin (the ``sgx_epc`` misc cgroup enforces them).
EpcLimits = Literal["none", "nri"]
EPC_LIMITS: tuple[EpcLimits, ...] = ("none", "nri")
QUOTE_MODES: tuple[QuoteMode, ...] = ("aesmd", "in-process", "none")

_DOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+")
_QUALIFIED = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_TOLERATION_OPERATORS = {"Exists", "Equal"}
_TOLERATION_EFFECTS = {"", "NoSchedule", "PreferNoSchedule", "NoExecute"}


@dataclass(frozen=True)
class Settings:
    """Validated configuration. Amounts of EPC are integer bytes."""

    profile: Profile = PROFILES["alibaba"]
    default_epc: int = 64 * 1024 * 1024
    max_epc_per_pod: int = 16 * 1024**3
    #: RuntimeClass set on opted-in pods; None (the default) leaves the pod's runtime alone. A sandbox
    #: (Kata, runV) needs ``aesmSidecarImage`` for pods that quote through aesmd: the clouds that run one
    #: say so in their overlay (``runtimeClass: runv`` on ACK), the defaults run anywhere.
    runtime_class: str | None = None
    #: RuntimeClass names that run pods in a VM (a host AESM socket cannot reach in).
    sandbox_runtime_classes: frozenset[str] = frozenset(
        {"kata", "kata-qemu", "kata-clh", "kata-fc", "kata-qemu-tdx", "kata-qemu-sgx", "runv"}
    )
    aesm: AesmMode = "host"
    aesm_host_path: str = "/var/run/aesmd"
    aesm_sidecar_image: str | None = None
    aesm_sidecar_epc: int = 8 * 1024 * 1024
    scheduler_name: str | None = None
    #: Scheduler (profile) for opted-in pods that may preempt (priority above 0, preemptionPolicy not
    #: Never): a profile where kube-scheduler counts EPC itself, so that its preemption sees EPC.
    preempting_scheduler_name: str | None = None
    tolerations: tuple[Mapping[str, Any], ...] = ()
    own_namespace: str = "confidential-pods"
    scoring_strategy: ScoringStrategy = "LeastAllocated"
    #: Seconds a bind's EPC reservation waits for the watch to show the pod before it is dropped.
    reservation_ttl_seconds: int = 60
    #: Quoting of pods that do not say (``confidential-pods.io/quote``).
    quote: QuoteMode = "aesmd"
    #: The quote library's PCCS configuration (``sgx_default_qcnl.conf``) for containers that quote.
    dcap: Dcap = field(default_factory=Dcap)
    #: User the injected aesmd sidecar runs as (0: root, which Pod Security "restricted" refuses).
    aesm_sidecar_user: int = 1000
    #: ``epcResource`` / ``epcUnit``: the cluster's device plugin advertises EPC under another name or unit
    #: than the profile's (applied to ``profile`` when the settings are read; None: the profile's).
    epc_resource: str | None = None
    epc_unit: int | None = None
    #: ``/route`` sets the scheduler of pods that request EPC without opting in (the third webhook entry).
    route_epc_pods: bool = False
    attestation_unknown: AttestationUnknown = "allow"
    epc_limits: EpcLimits = "none"

    #: Not a configuration key: the shell that runs the core says who reads its refusals (webhook
    #: serving leaves "webhook"; webhook/offline.py sets "offline").
    audience: Audience = "webhook"

    def to_set(self, keys: str) -> str:
        """What the reader of a refusal does to have ``keys`` set: set them in the ``--config`` file they
        run with (offline), or ask the cluster operator, who owns the webhook's configuration."""
        if self.audience == "offline":
            return f"set {keys} in the --config file"
        return f"ask the cluster operator to set {keys}"

    def is_sandbox(self, runtime_class: str | None) -> bool:
        """Whether a pod with this RuntimeClass runs inside a VM sandbox (Kata, runV)."""
        if runtime_class is None:
            return False
        return runtime_class in self.sandbox_runtime_classes or runtime_class == self.runtime_class


# --- converters: a value the schema accepted → the field's value ----------------------------------------

Converter = Callable[[str, Any], Any]


def _optional_name(key: str, value: str | None) -> str | None:
    """A string where ``none``, ``""`` or null mean unset."""
    return None if value in (None, "", "none") else value


def _amount(key: str, value: str | int) -> int:
    """A positive quantity of bytes. The schema checks its form; whole, positive bytes are checked here."""
    try:
        amount = parse_bytes(value)
    except QuantityError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
    if amount <= 0:
        raise ConfigError(f"{key}: {SCHEMA['properties'][key]['x-error'].format(value=value)}")
    return amount


def _as_is(key: str, value: Any) -> Any:
    return value


#: ``epcUnit`` values: what one unit of the EPC resource is.
EPC_UNITS: Final = {"bytes": 1, "MiB": 1024 * 1024}


# --- the contract -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One configuration key: its camelCase name (described in config.schema.json), how a value the schema
    accepted becomes the field's, the Settings field it sets."""

    name: str
    convert: Converter
    field: str


KEYS: Final = (
    Key("profile", lambda key, value: PROFILES[value], "profile"),
    Key("defaultEPC", _amount, "default_epc"),
    Key("maxEPCPerPod", _amount, "max_epc_per_pod"),
    Key("runtimeClass", _optional_name, "runtime_class"),
    Key("sandboxRuntimeClasses", lambda key, value: frozenset(value), "sandbox_runtime_classes"),
    Key("aesm", _as_is, "aesm"),
    Key("aesmHostPath", _as_is, "aesm_host_path"),
    Key("aesmSidecarImage", _optional_name, "aesm_sidecar_image"),
    Key("aesmSidecarEPC", _amount, "aesm_sidecar_epc"),
    Key("schedulerName", _optional_name, "scheduler_name"),
    Key("preemptingSchedulerName", _optional_name, "preempting_scheduler_name"),
    Key("tolerations", lambda key, value: tuple(dict(item) for item in value), "tolerations"),
    Key("ownNamespace", _as_is, "own_namespace"),
    Key("scoringStrategy", _as_is, "scoring_strategy"),
    Key("reservationTTLSeconds", _as_is, "reservation_ttl_seconds"),
    Key("quote", _as_is, "quote"),
    Key("dcap", read_dcap, "dcap"),
    Key("aesmSidecarUser", _as_is, "aesm_sidecar_user"),
    Key("epcResource", _as_is, "epc_resource"),
    Key("epcUnit", lambda key, value: None if value is None else EPC_UNITS[value], "epc_unit"),
    Key("routeEPCPods", _as_is, "route_epc_pods"),
    Key("attestationUnknown", _as_is, "attestation_unknown"),
    Key("epcLimits", _as_is, "epc_limits"),
)
KNOWN_KEYS: Final = frozenset(key.name for key in KEYS)

assert {key.field for key in KEYS} <= {f.name for f in fields(Settings)}
assert set(SCHEMA["properties"]) == KNOWN_KEYS, "config.schema.json and KEYS name the same keys"


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read settings from ``path``, else ``$CONFIDENTIAL_PODS_CONFIG``, else the defaults."""
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    if path is None:
        return Settings()
    try:
        data = load_document(read_text(path, "configuration file"), f"configuration file {os.fspath(path)}")
    except MalformedInput as exc:
        raise ConfigError(str(exc)) from None
    if data is None:
        data = {}
    return settings_from_mapping(data)


def settings_from_mapping(data: object) -> Settings:
    """Validate a configuration mapping against config.schema.json, then convert it. Unknown keys are
    refused (a typo must not pass silently); the message names every bad key."""
    if not isinstance(data, Mapping):
        raise ConfigError("configuration must be a YAML mapping of camelCase keys")
    check(data)
    settings = replace(
        Settings(), **{key.field: key.convert(key.name, data[key.name]) for key in KEYS if key.name in data}
    )
    if settings.epc_resource is not None or settings.epc_unit is not None:
        profile = settings.profile
        settings = replace(
            settings,
            profile=replace(
                profile,
                epc_resource=settings.epc_resource or profile.epc_resource,
                unit=settings.epc_unit or profile.unit,
            ),
        )
    if settings.default_epc > settings.max_epc_per_pod:
        raise ConfigError("defaultEPC: must not be larger than maxEPCPerPod")
    return settings


# --- completeness: keys valid one by one that leave a key to set -----------------------------------


@dataclass(frozen=True)
class Problem:
    """A key the configuration must set for what its other keys chose (each key valid on its own)."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def problems(settings: Settings) -> tuple[Problem, ...]:
    """What keeps ``settings`` from admitting a plain opted-in pod: a key to set, with why.

    The rule: a value wrong on its own (a placeholder, a typo, a bad quantity) fails the loader
    (:class:`ConfigError`, nothing starts); keys valid one by one that together leave a key unset are
    returned here, and the shells decide: ``inject`` and ``simulate`` exit 2, ``webhook serve`` starts
    unready with one log line (so a rollout never replaces good replicas with ones that refuse every pod).
    """
    found: list[Problem] = []
    image = settings.aesm_sidecar_image
    if settings.quote == "aesmd" and not image and settings.is_sandbox(settings.runtime_class):
        found.append(
            Problem(
                "aesmSidecarImage",
                f"runtimeClass {settings.runtime_class} runs pods in a VM sandbox, which the host's AESM "
                "socket does not reach, and quote is aesmd: every opted-in pod needs an aesmd sidecar, "
                "whose image this key names (docs/attestation.md); set it, or set runtimeClass: none",
            )
        )
    elif settings.quote == "aesmd" and not image and settings.aesm == "sidecar":
        found.append(
            Problem(
                "aesmSidecarImage",
                "aesm is sidecar and quote is aesmd: every opted-in pod gets an aesmd sidecar, whose "
                "image this key names (docs/attestation.md); set it, or set aesm: host",
            )
        )
    if settings.quote == "in-process" and not settings.dcap.configured:
        found.append(
            Problem(
                "dcap.pccsUrl",
                "quote is in-process: every enclave container quotes with the PCCS this key names; set "
                "the PCCS of your cluster (docs/attestation.md), or set quote: aesmd",
            )
        )
    return tuple(found)


def incomplete(settings: Settings) -> str:
    """:func:`problems` as one line, each key to set first ("" when there are none): the webhook's
    ``/readyz`` reason and its log line."""
    found = problems(settings)
    return "configuration incomplete: " + "; ".join(map(str, found)) if found else ""
