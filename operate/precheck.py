"""``confidential-pods precheck``: what must be set before anything is applied, without a cluster.

Pure: :func:`check_config` takes a configuration mapping (the ``--config`` file, or the ``config.yaml`` of the
built ConfigMap) and :func:`check_objects` the objects of a build (``kustomize build`` or ``helm template``
output); each returns one :class:`ToSet` per thing to set — a configuration key, or a placeholder image —
with why and how. Neither reads files nor talks to an API server.

What is checked: a ``<placeholder>`` left in any value (the alibaba overlay's ``dcap.pccsUrl`` holds
``<region>``); a value the loader refuses; :func:`~confidential_pods.settings.problems` (keys valid one by
one that leave a key to set, e.g. ``aesmSidecarImage`` for a sandbox ``runtimeClass``); an image whose
registry is under ``.invalid`` (the intel overlay's aesmd DaemonSet ships
``aesmd-image-required.invalid/aesmd:set-me``, RFC 2606's never-resolving domain).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confidential_pods.documents import load_document
from confidential_pods.errors import ConfigError
from confidential_pods.qcnl import PLACEHOLDER
from confidential_pods.schema import InvalidConfig
from confidential_pods.settings import Settings, problems, settings_from_mapping

#: The ConfigMap of the build that holds the webhook's and the extender's configuration.
CONFIG_MAP = "confidential-pods-config"
_POD_SPEC_PATHS = (
    ("spec",),
    ("spec", "template", "spec"),
    ("spec", "jobTemplate", "spec", "template", "spec"),
)
_CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")


@dataclass(frozen=True)
class ToSet:
    """One thing to set: a configuration key (``aesmSidecarImage``) or an image; why, and how."""

    what: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"set {self.what} ({self.where}): {self.message}"


def check_config(data: object, where: str) -> list[ToSet]:
    """What ``data`` (a configuration mapping, read from ``where``) leaves to set."""
    found = [
        ToSet(key, where, f"{value!r} still holds the placeholder {match}; replace it")
        for key, value, match in _placeholders(data)
    ]
    try:
        settings = settings_from_mapping(_filled(data))
    except InvalidConfig as exc:  # the schema's findings: one per bad key
        return [*found, *(ToSet(path or "the configuration", where, text) for path, text in exc.problems)]
    except ConfigError as exc:
        key, _, message = str(exc).partition(": ")
        if not message or " " in key:  # not about one key (an unknown key, not a mapping)
            key, message = "the configuration", str(exc)
        return [*found, ToSet(key, where, message)]
    return [*found, *(ToSet(p.key, where, p.message) for p in problems(settings))]


def check_objects(objects: Sequence[object]) -> list[ToSet]:
    """What a build (``kustomize build``/``helm template`` output) leaves to set: its configuration and
    every placeholder image."""
    found: list[ToSet] = []
    configs: list[tuple[str, object]] = []
    renderers: list[str] = []
    for obj in objects:
        if not isinstance(obj, Mapping):
            continue
        kind, name = obj.get("kind"), _name(obj)
        if (configuration := _configuration(obj)) is not None:
            configs.append(configuration)
            found += check_config(configuration[1], configuration[0])
        for container, image, command in containers(obj):
            if "qcnl" in command:
                renderers.append(f"{kind} {name}")
            registry = image.split("/", 1)[0] if "/" in image else ""
            if registry.endswith(".invalid"):
                repository = image.rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image
                found.append(
                    ToSet(
                        f"image {image}",
                        f"{kind} {name}, container {container}",
                        f"a placeholder; kustomize edit set image {repository}=<registry>/<image>:<tag> "
                        "(docs/install.md)",
                    )
                )
    for where, config in configs:
        dcap = config.get("dcap") if isinstance(config, Mapping) else None
        if renderers and not (isinstance(dcap, Mapping) and dcap.get("pccsUrl")):
            found.append(
                ToSet(
                    "dcap.pccsUrl",
                    where,
                    f"{', '.join(renderers)} renders sgx_default_qcnl.conf from it (confidential-pods qcnl), "
                    "which fails while it is unset; set your PCCS (docs/attestation.md), or drop the "
                    "component that runs it (components/aesmd, components/node-probe)",
                )
            )
    return found


def built_configuration(objects: Sequence[object]) -> tuple[str, object] | None:
    """Where the build keeps its configuration (``ConfigMap <name>``) and the configuration; None: it has
    no configuration ConfigMap."""
    for obj in objects:
        if isinstance(obj, Mapping) and (configuration := _configuration(obj)) is not None:
            return configuration
    return None


def settings_of(data: object) -> Settings | None:
    """The settings ``data`` makes with its placeholders filled in, as the cluster's checks judge them (the
    placeholders are reported by :func:`check_config`); None when the loader refuses ``data``."""
    try:
        return settings_from_mapping(_filled(data))
    except ConfigError:
        return None


def _configuration(obj: Mapping[str, Any]) -> tuple[str, object] | None:
    data = obj.get("data")
    if obj.get("kind") != "ConfigMap" or not _is_config(obj) or not isinstance(data, Mapping):
        return None
    if "config.yaml" not in data:
        return None
    where = f"ConfigMap {_name(obj)}"
    return where, load_document(str(data["config.yaml"]), f"{where} config.yaml") or {}


def _placeholders(data: object, path: str = "") -> Iterator[tuple[str, str, str]]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from _placeholders(value, f"{path}.{key}" if path else str(key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _placeholders(value, f"{path}[{index}]")
    elif isinstance(data, str):
        match = PLACEHOLDER.search(data)
        if match:
            yield path, data, match.group(0)


def _filled(data: object) -> object:
    """``data`` with each placeholder replaced by its own name (``<region>`` → ``region``), so that the
    loader judges the rest instead of stopping at the placeholder already reported."""
    if isinstance(data, Mapping):
        return {key: _filled(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_filled(value) for value in data]
    if isinstance(data, str):
        return PLACEHOLDER.sub(lambda m: re.sub(r"[^a-z0-9-]", "-", m.group(0)[1:-1].lower()) or "x", data)
    return data


def _is_config(obj: Mapping[str, Any]) -> bool:
    """The build's configuration ConfigMap (kustomize appends a hash to the name)."""
    metadata = obj.get("metadata")
    name = str(metadata.get("name")) if isinstance(metadata, Mapping) else ""
    return name == CONFIG_MAP or re.fullmatch(rf"{CONFIG_MAP}-[a-z0-9]{{10}}", name) is not None


def _name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return "?"
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata.get('name')}" if namespace else str(metadata.get("name"))


def containers(obj: Mapping[str, Any]) -> Iterator[tuple[str, str, list[str]]]:
    """Each container of a Pod or a workload: name, image, command and args."""
    for path in _POD_SPEC_PATHS:
        spec: Any = obj
        for step in path:
            spec = spec.get(step) if isinstance(spec, Mapping) else None
        if not isinstance(spec, Mapping) or not any(f in spec for f in _CONTAINER_FIELDS):
            continue
        for field in _CONTAINER_FIELDS:
            for container in _listed(spec.get(field)):
                if isinstance(container, Mapping):
                    words = [*_listed(container.get("command")), *_listed(container.get("args"))]
                    yield str(container.get("name")), str(container.get("image", "")), [str(w) for w in words]
        return


def _listed(value: object) -> list[Any]:
    """``value`` when it is a list, else nothing (``containers: 5`` is the API server's to refuse)."""
    return value if isinstance(value, list) else []
