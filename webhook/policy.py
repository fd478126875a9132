"""The webhook's decision: what an opted-in pod gets, or why it is refused.

``mutate(pod, namespace_opted_in=..., settings=...)`` takes the raw Pod JSON and returns a
:class:`Mutation` (RFC 6902 operations plus warnings, or a denial). No IO, no flask, no logging.
It reads in three steps — the annotations (:mod:`webhook.annotations`), the pod's shape
(:mod:`webhook.podview`), the decisions (:mod:`webhook.plan`) — and then writes the patch.
The user contract is documented in docs/annotations.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from confidential_pods import qcnl
from confidential_pods.epc import effective_epc
from confidential_pods.errors import QuantityError
from confidential_pods.profiles import Profile
from confidential_pods.qcnl import QCNL_PATH
from confidential_pods.quantities import format_binary, format_bytes, parse_whole
from confidential_pods.settings import Settings
from webhook import contract
from webhook.contract import EPC_CONTAINER, QCNL, STATUS
from webhook.epclimits import changed_limits, limit_annotations
from webhook.mounts import AESM_SIDECAR, qcnl_mount, socket_mount
from webhook.mutation import Mutation
from webhook.patching import PatchBuilder
from webhook.plan import Plan, PodSecurityLevel, make_plan
from webhook.podview import ContainerRef, PodRefused, read_annotations, read_pod
from webhook.routing import DEFAULT_SCHEDULERS, scheduler_for

AESM_ENV = "SGX_AESM_ADDR"

__all__ = ["STATUS", "Mutation", "PodRefused", "mutate"]


def mutate(
    pod: Mapping[str, Any],
    *,
    namespace_opted_in: bool,
    settings: Settings,
    namespace_level: PodSecurityLevel | None = None,
) -> Mutation:
    """Decide what to inject into ``pod`` (raw Pod JSON as the apiserver sends it).

    ``namespace_level``: the Pod Security level the namespace enforces, when the caller knows it.
    """
    try:
        return _mutate(pod, namespace_opted_in, settings, namespace_level)
    except PodRefused as refusal:
        return Mutation("denied", message=str(refusal))


def _mutate(
    pod: Mapping[str, Any], namespace_opted_in: bool, settings: Settings, level: PodSecurityLevel | None
) -> Mutation:
    skip = contract.opt_in(read_annotations(pod), namespace_opted_in=namespace_opted_in)
    if skip is not None:
        return Mutation("skipped", message=skip)
    view = read_pod(pod)
    if STATUS in view.annotations:
        return _marked(pod, view.annotations, settings)
    plan = make_plan(view, contract.read(view.annotations, settings), settings, level)
    builder = PatchBuilder(pod)
    warnings = list(plan.warnings)
    epc = {ref.name: _inject_epc(builder, ref, plan, settings, warnings) for ref in plan.enclaves}
    provision = settings.profile.provision_resource
    if provision is not None:
        for ref in plan.quoting.quoters:
            _complete_or_set(builder, ref, provision, "1")
    _inject_mounts(builder, plan, settings)
    if plan.runtime.write:
        builder.set_key(["spec"], "runtimeClassName", plan.runtime.runtime_class)
    scheduler = scheduler_for(view.spec, settings)
    if scheduler and view.spec.get("schedulerName") in DEFAULT_SCHEDULERS:
        builder.set_key(["spec"], "schedulerName", scheduler)
    _inject_tolerations(builder, settings)
    if plan.add_sidecar:
        # After every container edit: inserting at the front of initContainers shifts their indexes.
        builder.insert(["spec", "initContainers"], 0, _aesm_sidecar(settings, qcnl=plan.sidecar_qcnl))
    total = _total_epc(builder, plan, epc, settings)
    _set_pod_epc_annotation(builder, view.annotations, total, settings, warnings)
    if settings.epc_limits == "nri":
        _set_epc_limits(builder, view.annotations, settings.profile, warnings)
    status = {
        "profile": settings.profile.name,
        "resource": settings.profile.epc_resource,
        "epc": format_bytes(total),
        "epcBytes": total,
        "containers": list(epc),
        "runtimeClass": plan.runtime.runtime_class,
        "aesm": plan.aesm,
        "quote": plan.quoting.mode,
    }
    builder.set_key(["metadata", "annotations"], STATUS, json.dumps(status, separators=(",", ":")))
    return Mutation("mutated", patch=tuple(builder.operations), warnings=tuple(warnings), aesm=plan.aesm)


def _marked(pod: Mapping[str, Any], annotations: Mapping[str, str], settings: Settings) -> Mutation:
    """A pod that carries the status marker is not mutated again, with one exception: under ``epcLimits: nri``
    its EPC limits are made to equal its containers' EPC. A marker the author wrote at creation, or a
    template injected before limits were configured, must not leave a container with EPC unlimited (or
    limited by the author's own number). A pod the webhook mutated already has them: unchanged."""
    unchanged = Mutation("unchanged", message=f"already injected ({STATUS} present)")
    if settings.epc_limits != "nri":
        return unchanged
    builder = PatchBuilder(pod)
    warnings: list[str] = []
    _set_epc_limits(builder, annotations, settings.profile, warnings)
    if not builder.operations:
        return unchanged
    return Mutation("mutated", patch=tuple(builder.operations), warnings=tuple(warnings))


def _set_epc_limits(
    builder: PatchBuilder, annotations: Mapping[str, str], profile: Profile, warnings: list[str]
) -> None:
    """The ``sgx-epc`` NRI plugin's limit of each container with EPC in the pod as mutated so far
    (:mod:`webhook.epclimits`); ``annotations``: the pod's own, as its author wrote them."""
    write, replaced = changed_limits(annotations, limit_annotations(builder.document, profile))
    warnings.extend(replaced)
    for key, value in write.items():
        builder.set_key(["metadata", "annotations"], key, value)


def _inject_epc(
    builder: PatchBuilder, ref: ContainerRef, plan: Plan, settings: Settings, warnings: list[str]
) -> int:
    """Put the EPC resource into requests and limits of one container; return its EPC in bytes."""
    profile = settings.profile
    resource = profile.epc_resource

    def amount(value: object) -> int:
        bytes_ = profile.parse_resource(value)
        if bytes_ <= 0:
            raise QuantityError(f"{value!r} must be positive for an enclave container")
        return bytes_

    present = _complete_pair(builder, ref, resource, amount)
    if present is not None:
        value, epc = present
        override = plan.overrides.get(ref.name)
        if override is not None and override != epc:
            warnings.append(
                f"container {ref.name} already sets {resource}={value}; {EPC_CONTAINER}{ref.name} ignored"
            )
    else:
        wanted = plan.wanted[ref.name]
        value, rounded = profile.resource_value(wanted)
        epc = profile.to_units(wanted)[0] * profile.unit
        if rounded:
            warnings.append(
                f"container {ref.name}: EPC {format_bytes(wanted)} rounded up to {format_bytes(epc)} "
                f"({resource} counts whole MiB)"
            )
        for side in ("requests", "limits"):
            builder.set_key([*ref.path, "resources", side], resource, value)
    if profile.enclave_resource:
        _complete_or_set(builder, ref, profile.enclave_resource, "1")
    return epc


def _complete_or_set(builder: PatchBuilder, ref: ContainerRef, resource: str, value: str) -> None:
    """An extended resource the container needs (``sgx.intel.com/enclave``, ``…/provision``): its own
    value when it sets one (request = limit), else ``value`` on both sides."""
    if _complete_pair(builder, ref, resource, parse_whole) is None:
        for side in ("requests", "limits"):
            builder.set_key([*ref.path, "resources", side], resource, value)


def _complete_pair(
    builder: PatchBuilder, ref: ContainerRef, resource: str, read: Callable[[object], int]
) -> tuple[object, int] | None:
    """A resource the container sets itself: request and limit must agree (Kubernetes requires it of
    extended resources); a missing side is completed from the other. Returns (value, amount) or None."""
    resources = builder.get([*ref.path, "resources"]) or {}
    sides = {side: (resources.get(side) or {}).get(resource) for side in ("requests", "limits")}
    given = {side: value for side, value in sides.items() if value is not None}
    if not given:
        return None
    amounts = {}
    for side, value in given.items():
        try:
            amounts[side] = read(value)
        except QuantityError as exc:
            raise PodRefused(f"container {ref.name}: {resource} {side[:-1]} {exc}") from None
    if len(set(amounts.values())) > 1:
        raise PodRefused(
            f"container {ref.name}: {resource} request {given['requests']} differs from limit "
            f"{given['limits']}; extended resources need request = limit"
        )
    value = given.get("limits", given.get("requests"))
    for side in ("requests", "limits"):
        if side not in given:
            builder.set_key([*ref.path, "resources", side], resource, value)
    return value, next(iter(amounts.values()))


def _total_epc(builder: PatchBuilder, plan: Plan, epc: Mapping[str, int], settings: Settings) -> int:
    """The mutated pod's effective EPC request, as the scheduler counts it; refused above maxEPCPerPod."""
    unreadable: list[str] = []
    total = effective_epc(builder.document, settings.profile, unreadable)
    if unreadable:
        raise PodRefused(f"unreadable SGX EPC request: {unreadable[0]}")
    if total > settings.max_epc_per_pod:
        detail = ", ".join(f"{name} {format_bytes(n)}" for name, n in epc.items())
        if plan.add_sidecar:
            detail += f", aesmd sidecar {format_bytes(settings.aesm_sidecar_epc)}"
        raise PodRefused(
            f"pod asks for {format_bytes(total)} of SGX EPC in total ({detail}); "
            f"the maximum per pod is {format_bytes(settings.max_epc_per_pod)} (maxEPCPerPod)"
        )
    return total


def _set_pod_epc_annotation(
    builder: PatchBuilder, existing: Mapping[str, str], total: int, settings: Settings, warnings: list[str]
) -> None:
    """The profile's pod-level EPC annotation (Kata sizes the VM's EPC from it): the webhook owns it."""
    key = settings.profile.epc_pod_annotation
    if key is None:
        return
    value = format_binary(total)  # Kata refuses anything but Ki, Mi, Gi … (pkg/oci/utils.go)
    if existing.get(key) == value:
        return
    if key in existing:
        warnings.append(f"annotation {key}={existing[key][:40]} replaced by {value}, the pod's total EPC")
    builder.set_key(["metadata", "annotations"], key, value)


def _inject_mounts(builder: PatchBuilder, plan: Plan, settings: Settings) -> None:
    """The QCNL file and the AESM socket, as planned (:mod:`webhook.mounts`), and ``SGX_AESM_ADDR``.

    The QCNL file's content is a pod annotation the webhook writes (it owns it); a downward-API volume makes
    it a file, and a ``subPath`` mount puts that file (a bind mount of the resolved file, not the volume's
    ``..data`` symlink) where each quoting container's library reads it. Nothing is created in the pod's
    namespace.
    """
    if plan.mounts.qcnl:
        text = qcnl.render(settings.dcap)
        if (builder.get(["metadata", "annotations"]) or {}).get(QCNL) != text:
            builder.set_key(["metadata", "annotations"], QCNL, text)
    for volume in plan.mounts.volumes:
        builder.append(["spec", "volumes"], volume)
    for ref, mount in plan.mounts.add:
        builder.append([*ref.path, "volumeMounts"], mount)
    if plan.aesm != "none":
        for ref in plan.enclaves:
            env = builder.get([*ref.path, "env"]) or []
            if not any(e.get("name") == AESM_ENV for e in env):
                builder.append([*ref.path, "env"], {"name": AESM_ENV, "value": "1"})


def _aesm_sidecar(settings: Settings, *, qcnl: bool) -> dict[str, Any]:
    """The injected aesmd: a native sidecar with its EPC, the devices it quotes with, and a securityContext
    that passes Pod Security "restricted" (unless ``aesmSidecarUser`` is 0)."""
    profile = settings.profile
    value, _ = profile.resource_value(settings.aesm_sidecar_epc)
    resources = {profile.epc_resource: value}
    for extra in (profile.enclave_resource, profile.provision_resource):
        if extra:
            resources[extra] = "1"
    mounts = [socket_mount(server=True)]
    if qcnl:
        mounts.append(qcnl_mount(QCNL_PATH))
    return {
        "name": AESM_SIDECAR,
        "image": settings.aesm_sidecar_image,
        "restartPolicy": "Always",
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "volumeMounts": mounts,
        "securityContext": _restricted_security_context(settings.aesm_sidecar_user),
    }


def _restricted_security_context(user: int) -> dict[str, Any]:
    """What Pod Security "restricted" asks of a container (pod-security-admission policy/check_*.go)."""
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsUser": user,
    }
    if user:
        context.update(runAsNonRoot=True, runAsGroup=user)
    return context


def _inject_tolerations(builder: PatchBuilder, settings: Settings) -> None:
    for toleration in settings.tolerations:
        present = builder.get(["spec", "tolerations"]) or []
        wanted = _normal_toleration(toleration)
        if not any(_normal_toleration(t) == wanted for t in present):
            builder.append(["spec", "tolerations"], dict(toleration))


def _normal_toleration(toleration: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        toleration.get("key") or "",
        toleration.get("operator") or "Equal",
        toleration.get("value") or "",
        toleration.get("effect") or "",
        toleration.get("tolerationSeconds"),
    )
