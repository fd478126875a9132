"""``confidential-pods inject``: the webhook's mutation applied to YAML files, offline.

Pods and the pod templates of workload kinds are mutated exactly as the webhook would at
admission; other kinds pass through unchanged. A refused object makes the run fail (exit 1)
with the object and the reason, and nothing is written.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

from confidential_pods.documents import load_documents, printable, read_text
from confidential_pods.errors import MalformedInput, Refused
from confidential_pods.settings import Settings
from webhook.policy import mutate

#: Where each workload kind keeps its pod template.
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


#: The webhook reads the namespace's Pod Security level and refuses this; offline, it can only warn.
HOST_PATH_WARNING = (
    "the host AESM socket is a hostPath volume: a namespace enforcing Pod Security baseline or "
    'restricted refuses the pod (there, use confidential-pods.io/aesm: "sidecar" or '
    'confidential-pods.io/quote: "in-process")'
)


class InjectRefused(Refused):
    """An object in the input is refused by the policy; the message names it and the reason."""


@dataclass(frozen=True)
class Injected:
    documents: list[Any]
    warnings: list[str]


def inject_documents(documents: list[Any], settings: Settings, *, namespace_opted_in: bool) -> Injected:
    """Mutate every Pod and pod template in ``documents`` (parsed YAML). Pure."""
    warnings: list[str] = []
    result = [_inject(doc, settings, namespace_opted_in, warnings) for doc in documents]
    return Injected(result, warnings)


def _inject(doc: Any, settings: Settings, opted_in: bool, warnings: list[str]) -> Any:
    if not isinstance(doc, dict):
        return doc
    kind = doc.get("kind")
    if kind == "List" and isinstance(doc.get("items"), list):
        return {**doc, "items": [_inject(item, settings, opted_in, warnings) for item in doc["items"]]}
    path: tuple[str, ...] = () if kind == "Pod" else TEMPLATE_PATHS.get(str(kind), ("",))
    template: Any = doc
    for part in path:
        template = template.get(part) if isinstance(template, dict) else None
    if not isinstance(template, dict):
        return doc
    mutation = mutate(template, namespace_opted_in=opted_in, settings=settings)
    name = _describe(doc)
    if not mutation.allowed:
        raise InjectRefused(f"{name}: {mutation.message}")
    warnings.extend(f"{name}: {warning}" for warning in mutation.warnings)
    if mutation.aesm == "host":
        warnings.append(f"{name}: {HOST_PATH_WARNING}")
    prefix = "".join(f"/{part}" for part in path)
    operations = [{**op, "path": prefix + op["path"]} for op in mutation.patch]
    return jsonpatch.apply_patch(doc, operations) if operations else doc


def _describe(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    namespace = metadata.get("namespace")
    name = metadata.get("name") or metadata.get("generateName") or "<unnamed>"
    return f"{obj.get('kind')}/{namespace + '/' if namespace else ''}{name}"


def run(settings: Settings, *, source: str, output: str | None, namespace_opted_in: bool) -> int:
    """The command's shell: read, inject, write; one line on stderr and an exit code on failure.

    Exit codes: 0 written; 1 an object was refused (nothing written); 2 the input could not be read
    or parsed (not a file, not UTF-8, not YAML/JSON, excessive YAML aliasing, nesting too deep).
    """
    try:
        documents = load_documents(read_text(source), "stdin" if source == "-" else source)
    except MalformedInput as exc:
        print(f"confidential-pods inject: {exc}", file=sys.stderr)
        return 2
    try:
        injected = inject_documents(documents, settings, namespace_opted_in=namespace_opted_in)
    except InjectRefused as refusal:
        print(f"confidential-pods inject: refused {printable(str(refusal))}", file=sys.stderr)
        return 1
    for warning in injected.warnings:
        print(f"Warning: {printable(warning)}", file=sys.stderr)
    text = yaml.dump_all(injected.documents, Dumper=_DUMPER, sort_keys=False, default_flow_style=False)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


#: libyaml's emitter when PyYAML has it (the reader uses libyaml's parser too).
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
