"""Reading a pod before deciding anything: every field the webhook reads, checked for its JSON type.

The API server only sends well-formed pods, but anyone who can reach the webhook's port can send
anything, and the webhook must answer every request with a decision (never a 500 from a ``TypeError``
three calls down). :func:`read_pod` checks, in one place, the JSON type of each field the policy will
read — and of the items of each array it will append to — and refuses the pod naming the first field
that is wrong. After it, the policy reads plain, well-typed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from confidential_pods.errors import Refused

ContainerField = Literal["initContainers", "containers"]
CONTAINER_FIELDS: tuple[ContainerField, ...] = ("initContainers", "containers")
HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")


class PodRefused(Refused):
    """The pod asks for something that cannot be granted; the message is shown to the user."""


@dataclass(frozen=True)
class ContainerRef:
    """Where a container sits in the pod spec, and the few fields the policy decides on."""

    field: ContainerField
    index: int
    name: str
    #: ``restartPolicy: Always`` on an init container: a native sidecar.
    sidecar: bool = False
    privileged: bool = False
    #: Resource names in the container's requests or limits.
    resources: frozenset[str] = frozenset()

    @property
    def path(self) -> list[str | int]:
        return ["spec", self.field, self.index]

    @property
    def where(self) -> str:
        return f"spec.{self.field}[{self.index}]"


@dataclass(frozen=True)
class PodView:
    """The pod's fields the policy reads, type-checked; ``pod`` is the raw object (patches go against it)."""

    pod: Mapping[str, Any]
    annotations: Mapping[str, str]
    spec: Mapping[str, Any]
    #: Every container by name, init containers first, in spec order.
    containers: Mapping[str, ContainerRef]
    runtime_class: str | None
    host_namespaces: tuple[str, ...]
    #: ``spec.volumes``, each with a string ``name``.
    volumes: tuple[Mapping[str, Any], ...] = ()

    def names(self, field: ContainerField) -> str:
        return ", ".join(ref.name for ref in self.containers.values() if ref.field == field) or "none"

    def mounts(self, ref: ContainerRef) -> list[Mapping[str, Any]]:
        """The container's ``volumeMounts``, each with a string ``name`` and ``mountPath``."""
        mounts: list[Mapping[str, Any]] = self.spec[ref.field][ref.index].get("volumeMounts") or []
        return mounts

    def env(self, ref: ContainerRef) -> list[Mapping[str, Any]]:
        """The container's ``env`` (a list of objects)."""
        env: list[Mapping[str, Any]] = self.spec[ref.field][ref.index].get("env") or []
        return env


#: JSON type names used in messages.
_TYPES: dict[type, str] = {dict: "an object", list: "a list", str: "a string", bool: "true or false"}
#: Arrays of the pod spec the policy appends to or searches: each item must be an object.
_SPEC_ARRAYS = ("volumes", "tolerations")
_CONTAINER_ARRAYS = ("env", "volumeMounts")
_SPEC_STRINGS = ("runtimeClassName", "schedulerName")


def read_annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    """The pod's annotations, checked to map strings to strings (read first: they decide the opt-in)."""
    metadata = _get(pod, "metadata", dict, "metadata") or {}
    annotations = _get(metadata, "annotations", dict, "metadata.annotations") or {}
    for key, value in annotations.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise PodRefused(f"metadata.annotations must map strings to strings (see {_shown(key)})")
    return annotations


def read_pod(pod: Mapping[str, Any]) -> PodView:
    """Check the shape of everything the policy reads; raise :class:`PodRefused` naming a wrong field.

    Called only for pods that opted in: a refusal never reaches anyone else's pods.
    """
    annotations = read_annotations(pod)
    spec = _get(pod, "spec", dict, "spec") or {}
    for name in _SPEC_STRINGS:
        _get(spec, name, str, f"spec.{name}")
    for name in HOST_NAMESPACES:
        _get(spec, name, bool, f"spec.{name}")
    _get(spec, "overhead", dict, "spec.overhead")
    for name in _SPEC_ARRAYS:
        _objects(spec, name, f"spec.{name}")
    volumes = _objects(spec, "volumes", "spec.volumes")
    for index, volume in enumerate(volumes):
        _name(volume, "name", f"spec.volumes[{index}].name")
    containers = _containers(spec)
    return PodView(
        pod=pod,
        annotations=annotations,
        spec=spec,
        containers=containers,
        runtime_class=spec.get("runtimeClassName") or None,
        host_namespaces=tuple(name for name in HOST_NAMESPACES if spec.get(name) is True),
        volumes=tuple(volumes),
    )


def _containers(spec: Mapping[str, Any]) -> dict[str, ContainerRef]:
    refs: dict[str, ContainerRef] = {}
    for field in CONTAINER_FIELDS:
        for index, container in enumerate(_objects(spec, field, f"spec.{field}")):
            ref = _container(field, index, container)
            if ref.name in refs:
                raise PodRefused(f"{ref.where}.name: {ref.name!r} is used by two containers")
            refs[ref.name] = ref
    if not any(ref.field == "containers" for ref in refs.values()):
        raise PodRefused("spec.containers must list at least one container")
    return refs


def _container(field: ContainerField, index: int, container: Mapping[str, Any]) -> ContainerRef:
    where = f"spec.{field}[{index}]"
    name = container.get("name")
    if not isinstance(name, str) or not name:
        raise PodRefused(f"{where}.name must be a non-empty string")
    resources = _get(container, "resources", dict, f"{where}.resources") or {}
    names: set[str] = set()
    for side in ("requests", "limits"):
        names.update(_get(resources, side, dict, f"{where}.resources.{side}") or {})
    for array in _CONTAINER_ARRAYS:
        _objects(container, array, f"{where}.{array}")
    for position, mount in enumerate(_objects(container, "volumeMounts", f"{where}.volumeMounts")):
        for key in ("name", "mountPath"):
            _name(mount, key, f"{where}.volumeMounts[{position}].{key}")
    _get(container, "restartPolicy", str, f"{where}.restartPolicy")
    security = _get(container, "securityContext", dict, f"{where}.securityContext") or {}
    privileged = _get(security, "privileged", bool, f"{where}.securityContext.privileged")
    return ContainerRef(
        field=field,
        index=index,
        name=name,
        sidecar=field == "initContainers" and container.get("restartPolicy") == "Always",
        privileged=privileged is True,
        resources=frozenset(names),
    )


def _get(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    """``obj[key]`` when absent, null or of JSON type ``kind``; otherwise refuse naming ``where``."""
    value = obj.get(key)
    if value is None or type(value) is kind:
        return value
    raise PodRefused(f"{where} must be {_TYPES[kind]}, not {_json_type(value)}")


def _name(obj: Mapping[str, Any], key: str, where: str) -> str:
    """``obj[key]`` as a non-empty string (a volume's name, a mount's path); refuse anything else."""
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        kind = "an empty string" if value == "" else _json_type(value)
        raise PodRefused(f"{where} must be a non-empty string, not {kind}")
    return value


def _objects(obj: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    """``obj[key]`` as a list of objects (empty when absent or null); refuse any other shape."""
    items = _get(obj, key, list, where) or []
    for index, item in enumerate(items):
        if type(item) is not dict:
            raise PodRefused(f"{where}[{index}] must be an object, not {_json_type(item)}")
    return items


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
    return names.get(type(value), type(value).__name__)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
