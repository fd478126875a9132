"""``confidential-pods inject``: the webhook's mutation applied to YAML files, offline.

Pods and the pod templates of workload kinds are mutated exactly as the webhook would at
admission; other kinds pass through unchanged. A refused object makes the run fail (exit 1)
with the object and the reason, and nothing is written.

What the webhook learns from a pod's namespace comes from the Namespaces in the same input, as the
webhook configuration and its Pod Security lookup read them (:func:`namespaces_in`): labelled
``confidential-pods.io/injection=enabled``, its pods are opted in; ``disabled``, they are never sent to
the webhook (nor are pods of the system namespaces); ``pod-security.kubernetes.io/enforce`` is the level
the webhook judges host-mode pods by. For namespaces the input does not hold, the command line says
(``--namespace-opted-in``, ``--pod-security``); unsaid, the level is unknown and nothing is assumed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

from confidential_pods.documents import load_documents, printable, read_text
from confidential_pods.errors import MalformedInput, Refused
from confidential_pods.settings import Settings
from confidential_pods.wire import POD_TEMPLATES, mapping
from webhook.admission import SYSTEM_NAMESPACES
from webhook.contract import CONFIDENTIAL
from webhook.mutation import Mutation
from webhook.namespaces import level_of
from webhook.plan import PodSecurityLevel
from webhook.policy import mutate

INJECTION_LABEL = "confidential-pods.io/injection"


class InjectRefused(Refused):
    """An object in the input is refused by the policy; the message names it and the reason."""


@dataclass(frozen=True)
class NamespaceFacts:
    """What the webhook knows of a pod's namespace: its injection label, its Pod Security level."""

    injection: str | None = None
    level: PodSecurityLevel | None = None


@dataclass(frozen=True)
class Scope:
    """The namespaces the input defines, and what to assume of the others (the command line's say)."""

    namespaces: Mapping[str, NamespaceFacts] = field(default_factory=dict)
    opted_in: bool = False
    level: PodSecurityLevel | None = None

    def of(self, namespace: str) -> NamespaceFacts:
        known = self.namespaces.get(namespace) if namespace else None
        if known is not None:
            return known
        return NamespaceFacts("enabled" if self.opted_in else None, self.level)


def namespace_facts(namespace: Mapping[str, Any]) -> NamespaceFacts:
    """A Namespace object's injection label and enforced Pod Security level."""
    labels = mapping(mapping(namespace.get("metadata")).get("labels"))
    injection = labels.get(INJECTION_LABEL)
    return NamespaceFacts(injection if isinstance(injection, str) else None, level_of(dict(namespace)))


def namespaces_in(documents: list[Any]) -> dict[str, NamespaceFacts]:
    """The Namespaces among ``documents`` (Lists walked), by name."""
    return {
        str(mapping(doc.get("metadata")).get("name")): namespace_facts(doc)
        for doc in _walk(documents)
        if doc.get("kind") == "Namespace" and mapping(doc.get("metadata")).get("name")
    }


def _walk(documents: list[Any]) -> Iterator[dict[str, Any]]:
    for doc in documents:
        if isinstance(doc, dict):
            yield doc
            if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
                yield from _walk(doc["items"])


def admission(pod: Mapping[str, Any], namespace: str, settings: Settings, scope: Scope) -> Mutation:
    """What the webhook answers for ``pod`` created in ``namespace`` (a pod never sent to it: skipped)."""
    facts = scope.of(namespace)
    if namespace in SYSTEM_NAMESPACES or facts.injection == "disabled":
        why = (
            "a system namespace" if namespace in SYSTEM_NAMESPACES else f"labelled {INJECTION_LABEL}=disabled"
        )
        return Mutation("skipped", message=f"namespace {namespace} is {why}: the webhook is not called")
    return mutate(
        pod,
        namespace_opted_in=facts.injection == "enabled",
        settings=replace(settings, audience="offline"),  # refusals name the --config key to set
        namespace_level=facts.level,
    )


@dataclass(frozen=True)
class Injected:
    documents: list[Any]
    warnings: list[str]


def inject_documents(
    documents: list[Any],
    settings: Settings,
    *,
    namespace_opted_in: bool,
    namespace_level: PodSecurityLevel | None = None,
) -> Injected:
    """Mutate every Pod and pod template in ``documents`` (parsed YAML). Pure.

    The Namespaces among ``documents`` say what the webhook would learn of their pods' namespaces;
    ``namespace_opted_in`` and ``namespace_level`` stand for the namespaces they do not define.
    """
    warnings: list[str] = []
    scope = Scope(namespaces_in(documents), namespace_opted_in, namespace_level)
    result = [_inject(doc, settings, scope, warnings) for doc in documents]
    return Injected(result, warnings)


def _inject(doc: Any, settings: Settings, scope: Scope, warnings: list[str]) -> Any:
    if not isinstance(doc, dict):
        return doc
    kind = doc.get("kind")
    if kind == "List" and isinstance(doc.get("items"), list):
        return {**doc, "items": [_inject(item, settings, scope, warnings) for item in doc["items"]]}
    path: tuple[str, ...] = () if kind == "Pod" else POD_TEMPLATES.get(str(kind), ("",))
    template: Any = doc
    for part in path:
        template = template.get(part) if isinstance(template, dict) else None
    if not isinstance(template, dict):
        return doc
    namespace = str(mapping(doc.get("metadata")).get("namespace") or "")
    mutation = admission(template, namespace, settings, scope)
    name = _describe(doc)
    if not mutation.allowed:
        raise InjectRefused(f"{name}: {mutation.message}")
    if mutation.outcome == "skipped" and _asks(template):
        warnings.append(f"{name}: {mutation.message}; left unchanged")
    warnings.extend(f"{name}: {warning}" for warning in mutation.warnings)
    prefix = "".join(f"/{part}" for part in path)
    operations = [{**op, "path": prefix + op["path"]} for op in mutation.patch]
    return jsonpatch.apply_patch(doc, operations) if operations else doc


def _asks(template: Mapping[str, Any]) -> bool:
    """The pod (template) asks to be confidential itself (an annotation the namespace then overrides)."""
    annotations = mapping(mapping(template.get("metadata")).get("annotations"))
    return CONFIDENTIAL in annotations and annotations[CONFIDENTIAL] != "false"


def _describe(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    namespace = metadata.get("namespace")
    name = metadata.get("name") or metadata.get("generateName") or "<unnamed>"
    return f"{obj.get('kind')}/{namespace + '/' if namespace else ''}{name}"


def run(
    settings: Settings,
    *,
    source: str,
    output: str | None,
    namespace_opted_in: bool,
    namespace_level: PodSecurityLevel | None = None,
) -> int:
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
        injected = inject_documents(
            documents, settings, namespace_opted_in=namespace_opted_in, namespace_level=namespace_level
        )
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
