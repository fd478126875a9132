"""The webhook's decision: what an opted-in pod gets, or why it is refused.

``mutate(pod, namespace_opted_in=..., settings=...)`` takes the raw Pod JSON and returns a
:class:`Mutation` (RFC 6902 operations plus warnings, or a denial). No IO, no flask, no logging.
The user contract (annotation names and values) is documented in docs/annotations.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from confidential_pods.quantities import QuantityError, format_bytes, parse_bytes
from confidential_pods.settings import AESM_MODES, AesmMode, Settings
from webhook.patching import PatchBuilder, PatchOperation, PathPart

PREFIX = "confidential-pods.io/"
CONFIDENTIAL = PREFIX + "confidential"
INJECTION_LABEL = PREFIX + "injection"
EPC = PREFIX + "epc"
EPC_CONTAINER = PREFIX + "epc."
CONTAINERS = PREFIX + "containers"
RUNTIME_CLASS = PREFIX + "runtime-class"
AESM = PREFIX + "aesm"
STATUS = PREFIX + "status"
KNOWN_ANNOTATIONS = frozenset({CONFIDENTIAL, EPC, CONTAINERS, RUNTIME_CLASS, AESM, STATUS})

AESM_VOLUME = "aesmd-socket"
AESM_MOUNT_PATH = "/var/run/aesmd"
AESM_ENV = "SGX_AESM_ADDR"
AESM_SIDECAR = "aesmd"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")

Outcome = Literal["mutated", "unchanged", "skipped", "denied"]
ContainerField = Literal["containers", "initContainers"]


class PodRefused(Exception):
    """The pod asks for something that cannot be granted; the message is shown to the user."""


@dataclass(frozen=True)
class Mutation:
    """The answer for one pod: patch operations and warnings, or a denial message."""

    outcome: Outcome
    patch: tuple[PatchOperation, ...] = ()
    warnings: tuple[str, ...] = ()
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.outcome != "denied"


@dataclass(frozen=True)
class ContainerRef:
    """Where a container sits in the pod spec."""

    field: ContainerField
    index: int
    name: str

    @property
    def path(self) -> list[PathPart]:
        return ["spec", self.field, self.index]


@dataclass(frozen=True)
class EnclaveRequest:
    """What the annotations ask for, validated against the pod."""

    containers: tuple[ContainerRef, ...]
    default_epc: int
    overrides: Mapping[str, int]
    runtime_class: str | None
    runtime_class_annotated: bool
    aesm: AesmMode | None
    warnings: tuple[str, ...] = field(default=())


def mutate(pod: Mapping[str, Any], *, namespace_opted_in: bool, settings: Settings) -> Mutation:
    """Decide what to inject into ``pod`` (raw Pod JSON as the apiserver sends it)."""
    try:
        return _mutate(pod, namespace_opted_in, settings)
    except PodRefused as refusal:
        return Mutation("denied", message=str(refusal))


def _mutate(pod: Mapping[str, Any], namespace_opted_in: bool, settings: Settings) -> Mutation:
    metadata = _mapping(pod.get("metadata"), "metadata")
    annotations = _annotations(metadata)
    choice = annotations.get(CONFIDENTIAL)
    if choice is not None and choice not in ("true", "false"):
        raise PodRefused(f'annotation {CONFIDENTIAL}={choice!r} is not valid: use "true" or "false"')
    if choice != "true" and not (namespace_opted_in and choice != "false"):
        reason = "opted out" if choice == "false" else "not opted in"
        return Mutation("skipped", message=f"pod is {reason}")
    if STATUS in annotations:
        return Mutation("unchanged", message=f"already injected ({STATUS} present)")

    spec = _mapping(pod.get("spec"), "spec")
    request = _read_request(annotations, spec, settings)
    builder = PatchBuilder(pod)
    warnings = list(request.warnings)
    profile = settings.profile
    resource = profile.epc_resource

    # Runtime: keep the user's RuntimeClass; otherwise set the chosen sandbox class.
    existing_class = spec.get("runtimeClassName") or None
    if existing_class is not None and not isinstance(existing_class, str):
        raise PodRefused("spec.runtimeClassName must be a string")
    runtime_class = existing_class or request.runtime_class
    if existing_class and request.runtime_class_annotated and request.runtime_class != existing_class:
        warnings.append(
            f"pod already names RuntimeClass {existing_class}; "
            f"{RUNTIME_CLASS}={request.runtime_class} not applied"
        )
    sandboxed = settings.is_sandbox(runtime_class) or (
        request.runtime_class_annotated
        and runtime_class is not None
        and runtime_class == request.runtime_class
    )
    if sandboxed:
        _check_sandboxable(spec, runtime_class)

    aesm = request.aesm
    if aesm is None:
        aesm = "sidecar" if sandboxed else settings.aesm
    elif aesm == "host" and sandboxed:
        raise PodRefused(
            f"{AESM}=host cannot work in the sandboxed RuntimeClass {runtime_class}: the host's AESM socket "
            f'does not reach into the pod\'s VM; use "sidecar" or "none"'
        )
    add_sidecar = aesm == "sidecar" and _find_container(spec, AESM_SIDECAR) is None
    if add_sidecar and not settings.aesm_sidecar_image:
        why = f"the pod is sandboxed by RuntimeClass {runtime_class}" if sandboxed else f"{AESM}=sidecar"
        raise PodRefused(
            f"an aesmd sidecar is needed ({why}) but the webhook has no aesmSidecarImage configured; "
            f'ask the cluster operator to set aesmSidecarImage, or annotate {AESM}: "none"'
        )

    # EPC of each enclave container: keep a value the container already sets.
    epc_by_container: dict[str, int] = {}
    for ref in request.containers:
        amount = _inject_epc(builder, ref, request, settings, warnings)
        epc_by_container[ref.name] = amount
    total = sum(epc_by_container.values())
    if add_sidecar:
        total += profile.to_units(settings.aesm_sidecar_epc)[0] * profile.unit
    if total > settings.max_epc_per_pod:
        detail = ", ".join(f"{name} {format_bytes(n)}" for name, n in epc_by_container.items())
        if add_sidecar:
            detail += f", aesmd sidecar {format_bytes(settings.aesm_sidecar_epc)}"
        raise PodRefused(
            f"pod asks for {format_bytes(total)} of SGX EPC in total ({detail}); "
            f"the maximum per pod is {format_bytes(settings.max_epc_per_pod)} (maxEPCPerPod)"
        )

    if aesm != "none":
        _inject_aesm_socket(builder, request.containers, aesm, settings)
    if existing_class is None and runtime_class is not None:
        builder.set_key(["spec"], "runtimeClassName", runtime_class)
    if settings.scheduler_name and spec.get("schedulerName") in (None, "", "default-scheduler"):
        builder.set_key(["spec"], "schedulerName", settings.scheduler_name)
    _inject_tolerations(builder, settings)
    if profile.epc_pod_annotation and profile.epc_pod_annotation not in annotations:
        builder.set_key(["metadata", "annotations"], profile.epc_pod_annotation, format_bytes(total))
    if add_sidecar:
        # Last: inserting at the front of initContainers shifts the indexes used above.
        builder.insert(["spec", "initContainers"], 0, _aesm_sidecar(settings))

    status = {
        "profile": profile.name,
        "resource": resource,
        "epc": format_bytes(total),
        "epcBytes": total,
        "containers": list(epc_by_container),
        "runtimeClass": runtime_class,
        "aesm": aesm,
    }
    builder.set_key(["metadata", "annotations"], STATUS, json.dumps(status, separators=(",", ":")))
    return Mutation("mutated", patch=tuple(builder.operations), warnings=tuple(warnings))


def _read_request(
    annotations: Mapping[str, str], spec: Mapping[str, Any], settings: Settings
) -> EnclaveRequest:
    refs = _container_refs(spec)
    warnings: list[str] = []

    if CONTAINERS in annotations:
        names = list(dict.fromkeys(n.strip() for n in annotations[CONTAINERS].split(",") if n.strip()))
        if not names:
            raise PodRefused(f"annotation {CONTAINERS} is empty: name at least one container")
        missing = [n for n in names if n not in refs]
        if missing:
            raise PodRefused(
                f"annotation {CONTAINERS} names {', '.join(missing)}, which the pod does not have "
                f"(containers: {_names(refs, 'containers')}; "
                f"init containers: {_names(refs, 'initContainers')})"
            )
        enclave = tuple(refs[n] for n in names)
    else:
        enclave = tuple(ref for ref in refs.values() if ref.field == "containers")

    default_epc = settings.default_epc
    if EPC in annotations:
        default_epc = _epc_amount(EPC, annotations[EPC], settings)
    overrides: dict[str, int] = {}
    enclave_names = {ref.name for ref in enclave}
    for key, value in annotations.items():
        if key.startswith(EPC_CONTAINER):
            name = key[len(EPC_CONTAINER) :]
            if name not in refs:
                raise PodRefused(f"annotation {key} names container {name!r}, which the pod does not have")
            if name not in enclave_names:
                raise PodRefused(
                    f"annotation {key} sets EPC for {name}, which is not an enclave container; "
                    f"list it in {CONTAINERS}"
                )
            overrides[name] = _epc_amount(key, value, settings)
        elif key.startswith(PREFIX) and key not in KNOWN_ANNOTATIONS:
            warnings.append(f"unknown annotation {key} ignored")

    runtime_class = settings.runtime_class
    annotated = RUNTIME_CLASS in annotations
    if annotated:
        value = annotations[RUNTIME_CLASS]
        if value == "none":
            runtime_class = None
        elif len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
            raise PodRefused(
                f"annotation {RUNTIME_CLASS}={value!r} is not a RuntimeClass name (a DNS subdomain) or none"
            )
        else:
            runtime_class = value

    aesm: AesmMode | None = None
    if AESM in annotations:
        value = annotations[AESM]
        if value not in AESM_MODES:
            raise PodRefused(f"annotation {AESM}={value!r} is not valid: use one of {', '.join(AESM_MODES)}")
        aesm = value
    return EnclaveRequest(
        containers=enclave,
        default_epc=default_epc,
        overrides=overrides,
        runtime_class=runtime_class,
        runtime_class_annotated=annotated,
        aesm=aesm,
        warnings=tuple(warnings),
    )


def _epc_amount(key: str, value: str, settings: Settings) -> int:
    limit = format_bytes(settings.max_epc_per_pod)
    try:
        amount = parse_bytes(value)
    except QuantityError:
        raise PodRefused(
            f"annotation {key}={value!r} is not a Kubernetes quantity: "
            f"use a size such as 64Mi (at most {limit} per pod)"
        ) from None
    if amount <= 0:
        raise PodRefused(
            f"annotation {key}={value!r} must be a positive size such as 64Mi (at most {limit} per pod)"
        )
    if amount > settings.max_epc_per_pod:
        raise PodRefused(f"annotation {key}={value!r} is more than the maximum of {limit} of SGX EPC per pod")
    return amount


def _inject_epc(
    builder: PatchBuilder,
    ref: ContainerRef,
    request: EnclaveRequest,
    settings: Settings,
    warnings: list[str],
) -> int:
    """Put the EPC resource into requests and limits of one container; return its EPC in bytes."""
    profile = settings.profile
    resource = profile.epc_resource
    container = builder.get(ref.path)
    resources = _mapping(container.get("resources"), f"container {ref.name}: resources")
    requests = _mapping(resources.get("requests"), f"container {ref.name}: resources.requests")
    limits = _mapping(resources.get("limits"), f"container {ref.name}: resources.limits")
    path = [*ref.path, "resources"]

    if resource in requests or resource in limits:
        amounts = {
            side: _container_amount(ref, resource, values[resource], settings)
            for side, values in (("request", requests), ("limit", limits))
            if resource in values
        }
        if len(set(amounts.values())) > 1:
            raise PodRefused(
                f"container {ref.name}: {resource} request {requests[resource]} differs from limit "
                f"{limits[resource]}; extended resources need request = limit"
            )
        value = limits.get(resource, requests.get(resource))
        amount = next(iter(amounts.values()))
        if ref.name in request.overrides and request.overrides[ref.name] != amount:
            warnings.append(
                f"container {ref.name} already sets {resource}={value}; {EPC_CONTAINER}{ref.name} ignored"
            )
        for side, values in (("requests", requests), ("limits", limits)):
            if resource not in values:
                builder.set_key([*path, side], resource, value)
    else:
        wanted = request.overrides.get(ref.name, request.default_epc)
        value, rounded = profile.resource_value(wanted)
        units, _ = profile.to_units(wanted)
        amount = units * profile.unit
        if rounded:
            warnings.append(
                f"container {ref.name}: EPC {format_bytes(wanted)} rounded up to {format_bytes(amount)} "
                f"({resource} counts whole MiB)"
            )
        for side in ("requests", "limits"):
            builder.set_key([*path, side], resource, value)

    if profile.enclave_resource:
        for side, values in (("requests", requests), ("limits", limits)):
            if profile.enclave_resource not in values:
                builder.set_key([*path, side], profile.enclave_resource, "1")
    return amount


def _container_amount(ref: ContainerRef, resource: str, value: object, settings: Settings) -> int:
    try:
        amount = settings.profile.parse_resource(value)
    except QuantityError:
        raise PodRefused(f"container {ref.name}: {resource}={value!r} is not a Kubernetes quantity") from None
    if amount <= 0:
        raise PodRefused(
            f"container {ref.name}: {resource}={value!r} must be positive for an enclave container"
        )
    return amount


def _inject_aesm_socket(
    builder: PatchBuilder, containers: tuple[ContainerRef, ...], mode: AesmMode, settings: Settings
) -> None:
    volumes = builder.get(["spec", "volumes"]) or []
    if not any(isinstance(v, Mapping) and v.get("name") == AESM_VOLUME for v in volumes):
        if mode == "host":
            volume: dict[str, Any] = {
                "name": AESM_VOLUME,
                "hostPath": {"path": settings.aesm_host_path, "type": "Directory"},
            }
        else:
            volume = {"name": AESM_VOLUME, "emptyDir": {"medium": "Memory"}}
        builder.append(["spec", "volumes"], volume)
    for ref in containers:
        _mount_socket(builder, ref)
        env = _list(builder.get([*ref.path, "env"]), f"container {ref.name}: env")
        if not any(isinstance(e, Mapping) and e.get("name") == AESM_ENV for e in env):
            builder.append([*ref.path, "env"], {"name": AESM_ENV, "value": "1"})


def _mount_socket(builder: PatchBuilder, ref: ContainerRef) -> None:
    mounts = _list(builder.get([*ref.path, "volumeMounts"]), f"container {ref.name}: volumeMounts")
    if not any(
        isinstance(m, Mapping) and (m.get("name") == AESM_VOLUME or m.get("mountPath") == AESM_MOUNT_PATH)
        for m in mounts
    ):
        builder.append([*ref.path, "volumeMounts"], {"name": AESM_VOLUME, "mountPath": AESM_MOUNT_PATH})


def _aesm_sidecar(settings: Settings) -> dict[str, Any]:
    profile = settings.profile
    value, _ = profile.resource_value(settings.aesm_sidecar_epc)
    resources = {profile.epc_resource: value}
    if profile.enclave_resource:
        resources[profile.enclave_resource] = "1"
    return {
        "name": AESM_SIDECAR,
        "image": settings.aesm_sidecar_image,
        "restartPolicy": "Always",
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "volumeMounts": [{"name": AESM_VOLUME, "mountPath": AESM_MOUNT_PATH}],
    }


def _inject_tolerations(builder: PatchBuilder, settings: Settings) -> None:
    for toleration in settings.tolerations:
        present = _list(builder.get(["spec", "tolerations"]), "spec.tolerations")
        wanted = _normal_toleration(toleration)
        if not any(isinstance(t, Mapping) and _normal_toleration(t) == wanted for t in present):
            builder.append(["spec", "tolerations"], dict(toleration))


def _normal_toleration(toleration: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        toleration.get("key") or "",
        toleration.get("operator") or "Equal",
        toleration.get("value") or "",
        toleration.get("effect") or "",
        toleration.get("tolerationSeconds"),
    )


def _check_sandboxable(spec: Mapping[str, Any], runtime_class: str | None) -> None:
    host = [name for name in _HOST_NAMESPACES if spec.get(name) is True]
    privileged = [
        str(c.get("name"))
        for key in ("initContainers", "containers")
        for c in _list(spec.get(key), f"spec.{key}")
        if isinstance(c, Mapping)
        and isinstance(c.get("securityContext"), Mapping)
        and c["securityContext"].get("privileged") is True
    ]
    problems = [f"{name}: true" for name in host] + [f"privileged container {name}" for name in privileged]
    if problems:
        raise PodRefused(
            f"pod would run in the sandboxed RuntimeClass {runtime_class}, which cannot run "
            f"{', '.join(problems)} (Kata and runV run the pod in a VM); remove them, or annotate "
            f"{RUNTIME_CLASS}: none to run without a sandbox"
        )


def _container_refs(spec: Mapping[str, Any]) -> dict[str, ContainerRef]:
    refs: dict[str, ContainerRef] = {}
    fields: tuple[ContainerField, ...] = ("initContainers", "containers")
    for key in fields:
        for index, container in enumerate(_list(spec.get(key), f"spec.{key}")):
            where = f"spec.{key}[{index}]"
            container = _mapping(container, where)
            name = container.get("name")
            if not isinstance(name, str) or not name:
                raise PodRefused(f"{where}.name must be a non-empty string")
            refs[name] = ContainerRef(key, index, name)
    if not any(ref.field == "containers" for ref in refs.values()):
        raise PodRefused("spec.containers must list at least one container")
    return refs


def _find_container(spec: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    for key in ("initContainers", "containers"):
        for container in _list(spec.get(key), f"spec.{key}"):
            if isinstance(container, Mapping) and container.get("name") == name:
                return container
    return None


def _names(refs: Mapping[str, ContainerRef], kind: ContainerField) -> str:
    return ", ".join(ref.name for ref in refs.values() if ref.field == kind) or "none"


def _annotations(metadata: Mapping[str, Any]) -> Mapping[str, str]:
    annotations = _mapping(metadata.get("annotations"), "metadata.annotations")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise PodRefused("metadata.annotations must map strings to strings")
    return annotations


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PodRefused(f"{where} must be an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PodRefused(f"{where} must be a list")
    return value
