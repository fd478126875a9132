"""What an opted-in pod gets, decided before any patch is written.

:func:`make_plan` takes the checked pod (:class:`~webhook.podview.PodView`) and its parsed annotations
and decides: which containers run enclaves and how much EPC each asks for, the RuntimeClass and
whether the pod ends up in a VM sandbox, and where its AESM socket comes from. Everything that can be
refused from the annotations and the pod's shape is refused here, with a message for the pod's author.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from confidential_pods.settings import AesmMode, Settings
from webhook.contract import AESM, CONTAINERS, EPC_CONTAINER, NO_RUNTIME_CLASS, RUNTIME_CLASS, Annotated
from webhook.podview import ContainerRef, PodRefused, PodView

#: Name of the injected AESM sidecar (and of a user's own, which is then kept).
AESM_SIDECAR = "aesmd"


@dataclass(frozen=True)
class Runtime:
    """The pod's RuntimeClass after mutation, whether the webhook writes it, and whether it is a VM."""

    runtime_class: str | None
    write: bool
    sandboxed: bool


@dataclass(frozen=True)
class Plan:
    """The decisions for one pod; :mod:`webhook.policy` turns them into patch operations."""

    enclaves: tuple[ContainerRef, ...]
    #: EPC (bytes) of each enclave container that does not set the resource itself.
    wanted: Mapping[str, int]
    #: ``epc.<container>`` overrides (to warn when a container's own value wins).
    overrides: Mapping[str, int]
    runtime: Runtime
    aesm: AesmMode
    add_sidecar: bool
    warnings: tuple[str, ...]


def make_plan(view: PodView, annotated: Annotated, settings: Settings) -> Plan:
    """Decide what ``view``'s pod gets; raise :class:`PodRefused` when it cannot be granted."""
    warnings = [f"unknown annotation {key} ignored" for key in annotated.unknown]
    enclaves = _enclaves(view, annotated)
    overrides = _overrides(view, annotated, enclaves)
    default = annotated.epc if annotated.epc is not None else settings.default_epc
    runtime = _runtime(view, annotated, settings, warnings)
    aesm = _aesm(annotated, settings, runtime)
    add_sidecar = aesm == "sidecar" and AESM_SIDECAR not in view.containers
    if add_sidecar and not settings.aesm_sidecar_image:
        why = (
            f"the pod is sandboxed by RuntimeClass {runtime.runtime_class}"
            if runtime.sandboxed
            else f"{AESM}=sidecar"
        )
        raise PodRefused(
            f"an aesmd sidecar is needed ({why}) but the webhook has no aesmSidecarImage configured; "
            f'ask the cluster operator to set aesmSidecarImage, or annotate {AESM}: "none"'
        )
    return Plan(
        enclaves=enclaves,
        wanted={ref.name: overrides.get(ref.name, default) for ref in enclaves},
        overrides=overrides,
        runtime=runtime,
        aesm=aesm,
        add_sidecar=add_sidecar,
        warnings=tuple(warnings),
    )


def _enclaves(view: PodView, annotated: Annotated) -> tuple[ContainerRef, ...]:
    """The enclave containers: those the annotation names, else every app container."""
    if annotated.containers is None:
        return tuple(ref for ref in view.containers.values() if ref.field == "containers")
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
    return Runtime(
        runtime_class=runtime_class, write=existing is None and wanted is not None, sandboxed=sandboxed
    )


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


def _aesm(annotated: Annotated, settings: Settings, runtime: Runtime) -> AesmMode:
    if annotated.aesm is None:
        return "sidecar" if runtime.sandboxed else settings.aesm
    if annotated.aesm == "host" and runtime.sandboxed:
        raise PodRefused(
            f"{AESM}=host cannot work in the sandboxed RuntimeClass {runtime.runtime_class}: the host's AESM "
            f'socket does not reach into the pod\'s VM; use "sidecar" or "none"'
        )
    return annotated.aesm
