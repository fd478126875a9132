"""Kubernetes objects from files: one reader for ``inject``, ``simulate`` and ``extender serve --snapshot``.

A file is read as UTF-8 text, then as one JSON value when it starts with ``{`` or ``[`` (``kubectl get -o
json``: 27 MB parse in well under a second) and otherwise as a YAML stream with libyaml's parser
(``CSafeLoader``, about 3x faster than PyYAML's own; that one where PyYAML was built without libyaml).

What a hostile or careless file could do to the reader is refused with one line naming the file:

* **YAML aliases** (``*name``): an 830-byte file of nested lists with aliases expands to 10^8 objects.
  Kubernetes manifests never need them (kubectl's own output has none), so any alias is refused.
* **Nesting deeper than** :data:`MAX_DEPTH` (JSON or YAML): deeper structures exhaust Python's stack
  in whatever walks them next (writing YAML back, copying); no Kubernetes object nests a tenth as deep.
* bytes that are not UTF-8, text that is not YAML or JSON.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from confidential_pods.errors import MalformedInput
from confidential_pods.wire import depth_exceeds

#: Deepest nesting of objects and arrays accepted (a Pod nests about 10 deep, a CRD schema maybe 40).
MAX_DEPTH = 100

_BASE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _NoAliasLoader(_BASE_LOADER):  # type: ignore[misc]
    """The safe loader, refusing aliases: a node reached a second time is an alias (or a cycle)."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node in self.constructed_objects or node in self.recursive_objects:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "YAML aliases (*name) are not accepted in Kubernetes objects; an alias repeats this node",
                node.start_mark,
            )
        return super().construct_object(node, deep=deep)


def read_text(source: str | os.PathLike[str], what: str = "") -> str:
    """The text of a file, or of stdin for ``-``; :class:`MalformedInput` naming it when unreadable.

    ``what`` names the file's role in messages (``cannot read snapshot cluster.yaml: …``).
    """
    name = os.fspath(source)
    shown = f"{what} {_shown(name)}" if what else _shown(name)
    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise MalformedInput(f"cannot read {shown}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedInput(f"{shown} is not UTF-8 text (byte {exc.start})") from None


def load_documents(text: str, source: str) -> list[Any]:
    """Every document of a JSON value or YAML stream (empty documents dropped), checked as above."""
    documents = _parse(text, source)
    for index, document in enumerate(documents):
        if depth_exceeds(document, MAX_DEPTH):
            raise MalformedInput(
                f"{_shown(source)} document {index + 1} nests deeper than {MAX_DEPTH} levels"
            )
    return [document for document in documents if document is not None]


def _parse(text: str, source: str) -> list[Any]:
    try:
        if text.lstrip()[:1] in ("{", "["):
            try:
                return [json.loads(text)]
            except ValueError:
                pass  # YAML flow style, several documents, or broken: YAML decides and names the error
        return list(yaml.load_all(text, Loader=_NoAliasLoader))
    except RecursionError:
        raise MalformedInput(f"{_shown(source)} nests deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as exc:
        raise MalformedInput(f"{_shown(source)} is not valid YAML or JSON: {_one_line(exc)}") from None


def _one_line(exc: yaml.YAMLError) -> str:
    return " ".join(str(exc).split())[:300]


def _shown(name: str) -> str:
    """A file name for a message: control characters escaped (a name is printed to a terminal)."""
    return "stdin" if name == "-" else printable(name)


def printable(text: str) -> str:
    """``text`` with control and other non-printable characters escaped (``\\x1b`` for ESC), for terminals."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
