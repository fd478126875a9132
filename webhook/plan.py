"""What an opted-in pod gets, decided before any patch is written.

:func:`make_plan` takes the checked pod (:class:`~webhook.podview.PodView`) and its parsed annotations
and decides: which containers run enclaves and how much EPC each asks for, the RuntimeClass and
whether the pod ends up in a VM sandbox, how the pod quotes (``confidential-pods.io/quote``, or Intel's
``sgx.intel.com/quote-provider`` under the intel profile) and so which containers get the provisioning
device and the quote library's configuration, and where its AESM socket comes from. Everything that can
be refused from the annotations, the pod's shape and its namespace's Pod Security level is refused here,
with a message for the pod's author; what only a configuration key can lift is said to whoever sets it
(:meth:`~confidential_pods.settings.Settings.to_set`: the cluster operator, or the ``--config`` file of an
offline tool).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from confidential_pods.settings import AesmMode, QuoteMode, Settings
from webhook.contract import (
    AESM,
    CONTAINERS,
    EPC_CONTAINER,
    INTEL_QUOTE_PROVIDER,
    NO_RUNTIME_CLASS,
    QUOTE,
    RUNTIME_CLASS,
    Annotated,
)
from webhook.mounts import AESM_SIDECAR, Mounts, plan_mounts
from webhook.podview import ContainerRef, PodRefused, PodView

#: Pod Security levels (``pod-security.kubernetes.io/enforce``) that forbid hostPath volumes.
NO_HOST_PATH_LEVELS = frozenset({"baseline", "restricted"})

PodSecurityLevel = Literal["privileged", "baseline", "restricted"]


@dataclass(frozen=True)
class Runtime:
    """The pod's RuntimeClass after mutation, whether the webhook writes it, and whether it is a VM."""

    runtime_class: str | None
    write: bool
    sandboxed: bool


@dataclass(frozen=True)
class Quoting:
    """How the pod quotes: the mode, the containers that quote themselves (provisioning device and the
    quote library's configuration), and whether the webhook's QCNL file is given to them."""

    mode: QuoteMode
    quoters: tuple[ContainerRef, ...]
    qcnl: bool
    #: The mode came from Intel's ``sgx.intel.com/quote-provider`` (Intel's webhook's contract).
    intel: bool = False


@dataclass(frozen=True)
class Plan:
    """The decisions for one pod; :mod:`webhook.policy` turns them into patch operations."""

    enclaves: tuple[ContainerRef, ...]
    #: EPC (bytes) of each enclave container that does not set the resource itself.
    wanted: Mapping[str, int]
    #: ``epc.<container>`` overrides (to warn when a container's own value wins).
    overrides: Mapping[str, int]
    runtime: Runtime
    quoting: Quoting
    aesm: AesmMode
    add_sidecar: bool
    #: The injected sidecar quotes (quote: aesmd) and gets the webhook's QCNL file.
    sidecar_qcnl: bool
    #: The socket and QCNL mounts and volumes to add.
    mounts: Mounts
    warnings: tuple[str, ...]


def make_plan(
    view: PodView,
    annotated: Annotated,
    settings: Settings,
    namespace_level: PodSecurityLevel | None = None,
) -> Plan:
    """Decide what ``view``'s pod gets; raise :class:`PodRefused` when it cannot be granted.

    ``namespace_level``: the Pod Security level the pod's namespace enforces, when the webhook knows it.
    """
    warnings = [f"unknown annotation {key} ignored" for key in annotated.unknown]
    enclaves = _enclaves(view, annotated, settings)
    overrides = _overrides(view, annotated, enclaves)
    default = annotated.epc if annotated.epc is not None else settings.default_epc
    runtime = _runtime(view, annotated, settings, warnings)
    quoting = _quoting(view, annotated, settings, enclaves)
    aesm = _aesm(view, annotated, settings, runtime, quoting, enclaves)
    add_sidecar = aesm == "sidecar" and AESM_SIDECAR not in view.containers
    if add_sidecar and not settings.aesm_sidecar_image:
        why = (
            f"the pod is sandboxed by RuntimeClass {runtime.runtime_class}"
            if runtime.sandboxed
            else f"{AESM}=sidecar"
        )
        raise PodRefused(
            f"an aesmd sidecar is needed ({why}) but there is no aesmSidecarImage configured; "
            f"{settings.to_set('aesmSidecarImage')} (an aesmd image, docs/attestation.md), "
            f'or annotate {AESM}: "none"'
            + (f" or {RUNTIME_CLASS}: none" if runtime.sandboxed and runtime.write else "")
        )
    if aesm == "host" and namespace_level in NO_HOST_PATH_LEVELS:
        raise PodRefused(
            f"the host's AESM socket is a hostPath volume, which this namespace's Pod Security level "
            f'"{namespace_level}" forbids; annotate {AESM}: "sidecar" (an aesmd sidecar in the pod), '
            f'{QUOTE}: "in-process" (the app quotes itself) or {AESM}: "none"'
        )
    sidecar_qcnl = add_sidecar and quoting.mode == "aesmd" and settings.dcap.configured
    mounts = plan_mounts(
        view,
        socket=aesm,
        clients=enclaves if aesm != "none" else (),
        quoters=quoting.quoters if quoting.qcnl else (),
        sidecar=add_sidecar,
        sidecar_qcnl=sidecar_qcnl,
        host_path=settings.aesm_host_path,
    )
    return Plan(
        enclaves=enclaves,
        wanted={ref.name: overrides.get(ref.name, default) for ref in enclaves},
        overrides=overrides,
        runtime=runtime,
        quoting=quoting,
        aesm=aesm,
        add_sidecar=add_sidecar,
        sidecar_qcnl=sidecar_qcnl,
        mounts=mounts,
        warnings=(*warnings, *mounts.warnings),
    )


def _enclaves(view: PodView, annotated: Annotated, settings: Settings) -> tuple[ContainerRef, ...]:
    """The enclave containers: those the annotation names, else every app container.

    Intel profile, as Intel's webhook does: when the pod does not name them and some app containers
    already request ``sgx.intel.com/epc``, those are the enclave containers (and only those).
    """
    if annotated.containers is None:
        apps = tuple(ref for ref in view.containers.values() if ref.field == "containers")
        if settings.profile.name == "intel":
            requesting = tuple(ref for ref in apps if settings.profile.epc_resource in ref.resources)
            return requesting or apps
        return apps
    missing = [name for name in annotated.containers if name not in view.containers]
    if missing:
        raise PodRefused(
            f"annotation {CONTAINERS} names {', '.join(missing)}, which the pod does not have "
            f"(containers: {view.names('containers')}; init containers: {view.names('initContainers')})"
        )
    return tuple(view.containers[name] for name in annotated.containers)


def _overrides(view: PodView, annotated: Annotated, enclaves: tuple[ContainerRef, ...]) -> dict[str, int]:
    names = {ref.name for ref in enclaves}
    for name in annotated.epc_by_container:
        key = EPC_CONTAINER + name
        if name not in view.containers:
            raise PodRefused(f"annotation {key} names container {name!r}, which the pod does not have")
        if name not in names:
            raise PodRefused(
                f"annotation {key} sets EPC for {name}, which is not an enclave container; "
                f"list it in {CONTAINERS}"
            )
    return dict(annotated.epc_by_container)


def _runtime(view: PodView, annotated: Annotated, settings: Settings, warnings: list[str]) -> Runtime:
    """Keep the user's RuntimeClass; otherwise set the annotated or configured one."""
    annotated_class = annotated.runtime_class
    wanted = settings.runtime_class
    if annotated_class is not None:
        wanted = None if annotated_class == NO_RUNTIME_CLASS else annotated_class
    existing = view.runtime_class
    if existing and annotated_class is not None and wanted != existing:
        warnings.append(f"pod already names RuntimeClass {existing}; {RUNTIME_CLASS}={wanted} not applied")
    runtime_class = existing or wanted
    sandboxed = settings.is_sandbox(runtime_class) or (
        annotated_class is not None and runtime_class is not None and runtime_class == wanted
    )
    if sandboxed:
        _check_sandboxable(view, runtime_class)
    write = existing is None and wanted is not None
    return Runtime(runtime_class=runtime_class, write=write, sandboxed=sandboxed)


def _check_sandboxable(view: PodView, runtime_class: str | None) -> None:
    privileged = [ref.name for ref in view.containers.values() if ref.privileged]
    problems = [f"{name}: true" for name in view.host_namespaces]
    problems += [f"privileged container {name}" for name in privileged]
    if problems:
        raise PodRefused(
            f"pod would run in the sandboxed RuntimeClass {runtime_class}, which cannot run "
            f"{', '.join(problems)} (Kata and runV run the pod in a VM); remove them, or annotate "
            f"{RUNTIME_CLASS}: none to run without a sandbox"
        )


def _quoting(
    view: PodView, annotated: Annotated, settings: Settings, enclaves: tuple[ContainerRef, ...]
) -> Quoting:
    """Our annotation, else Intel's (intel profile), else the configured ``quote``."""
    provider = view.annotations.get(INTEL_QUOTE_PROVIDER) if settings.profile.name == "intel" else None
    configured = settings.dcap.configured
    if annotated.quote is None and provider is not None:
        # Intel's contract: the named container quotes in-process; "aesmd": the aesmd container does.
        named = tuple(ref for ref in enclaves if ref.name == provider)
        mode: QuoteMode = "aesmd" if provider == AESM_SIDECAR else ("in-process" if named else "none")
        return Quoting(mode, named, qcnl=configured and bool(named), intel=True)
    mode = annotated.quote if annotated.quote is not None else settings.quote
    if mode == "in-process":
        if not configured:
            raise PodRefused(
                f"{QUOTE}=in-process needs the quote library's PCCS configuration (dcap.pccsUrl), which "
                f'is not configured; {settings.to_set("dcap.pccsUrl")}, or annotate {QUOTE}: "aesmd"'
            )
        return Quoting(mode, enclaves, qcnl=True)
    own_aesmd = tuple(ref for ref in enclaves if ref.name == AESM_SIDECAR) if mode == "aesmd" else ()
    return Quoting(mode, own_aesmd, qcnl=configured and bool(own_aesmd))


def _aesm(
    view: PodView,
    annotated: Annotated,
    settings: Settings,
    runtime: Runtime,
    quoting: Quoting,
    enclaves: tuple[ContainerRef, ...],
) -> AesmMode:
    if annotated.aesm is not None:
        if annotated.aesm == "host" and runtime.sandboxed:
            raise PodRefused(
                f"{AESM}=host cannot work in the sandboxed RuntimeClass {runtime.runtime_class}: the host's "
                f'AESM socket does not reach into the pod\'s VM; use "sidecar" or "none"'
            )
        return annotated.aesm
    if quoting.mode != "aesmd":
        return "none"
    if runtime.sandboxed:
        return "sidecar"
    if quoting.intel:  # Intel's webhook: an aesmd container with EPC next to other enclaves is a sidecar
        others = [ref for ref in enclaves if ref.name != AESM_SIDECAR]
        return "sidecar" if quoting.quoters and others else "host"
    return settings.aesm
