"""Kubernetes objects and configuration from files: the one reader for every file the product reads
(``inject``, ``simulate``, ``extender serve --snapshot``, ``--config`` and the configuration ConfigMap).

A file is read as UTF-8 text, then as one JSON value when it starts with ``{`` or ``[`` (``kubectl get -o
json``: 27 MB parse in well under a second) and otherwise as a YAML stream with libyaml's parser
(``CSafeLoader``, about 3x faster than PyYAML's own; that one where PyYAML was built without libyaml).

What a hostile or careless file could do to the reader is refused with one line naming the file:

* **Excessive aliasing**: YAML aliases (``*name``) repeat a node, and nested aliases multiply (a 600-byte
  file expands to 10^8 objects). PyYAML shares one object between the alias and its anchor, so the cost
  comes later, in whatever walks the value (the depth check, a JSON dump, a patch). Each document's node
  graph is therefore measured before anything is built: its size with every alias expanded, counted
  once per distinct node (memoised, so a bomb costs what its text costs), and refused by go-yaml's own
  rule (``allowedAliasRatio``: aliases may make up 99% of a document of up to 400,000 nodes, falling to
  10% at 4,000,000) with go-yaml's words, "excessive aliasing". A node that contains itself is refused.
  Ordinary anchors (``&id001`` from PyYAML's dumper, hand-written ``<<: *defaults``) read as kubectl
  reads them: every alias becomes its own copy, so changing one place never changes another.
* **Nesting deeper than** :data:`MAX_DEPTH` (JSON or YAML, aliases expanded): deeper structures exhaust
  Python's stack in whatever walks them next (writing YAML back, copying); no Kubernetes object nests a
  tenth as deep.
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


#: go-yaml's bounds on alias expansion (``decode.go``: ``alias_ratio_range_low``/``high``): up to this many
#: expanded nodes, aliases may make up :data:`MOST_ALIASED`; from :data:`ALIAS_RANGE_HIGH` on, only
#: :data:`LEAST_ALIASED`, scaled linearly between. Below :data:`FEW_ALIASED` aliased nodes or
#: :data:`FEW_NODES` nodes in all, any share is accepted.
ALIAS_RANGE_LOW = 400_000
ALIAS_RANGE_HIGH = 4_000_000
MOST_ALIASED = 0.99
LEAST_ALIASED = 0.10
FEW_ALIASED = 100
FEW_NODES = 1000


def allowed_alias_ratio(expanded: int) -> float:
    """The share of a document's expanded nodes that aliases may make up (go-yaml's ``allowedAliasRatio``)."""
    if expanded <= ALIAS_RANGE_LOW:
        return MOST_ALIASED
    if expanded >= ALIAS_RANGE_HIGH:
        return LEAST_ALIASED
    progress = (expanded - ALIAS_RANGE_LOW) / (ALIAS_RANGE_HIGH - ALIAS_RANGE_LOW)
    return MOST_ALIASED - (MOST_ALIASED - LEAST_ALIASED) * progress


class _Expansion:
    """One document's node graph measured as if every alias were expanded, each distinct node walked once.

    ``sizes``/``depths`` hold, per node already walked, its expanded node count and how deep it nests;
    reaching such a node again is an alias, whose whole expanded size counts as ``aliased``.
    """

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.depths: dict[int, int] = {}
        self.open: set[int] = set()
        self.aliased = 0

    def walk(self, node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in self.open:
            raise _Unreadable("an alias repeats a node inside itself (a recursive YAML alias)")
        if key in self.sizes:
            if depth + self.depths[key] > MAX_DEPTH:
                raise _Unreadable(f"nests deeper than {MAX_DEPTH} levels")
            self.aliased += self.sizes[key]
            return self.sizes[key]
        if depth > MAX_DEPTH:
            raise _Unreadable(f"nests deeper than {MAX_DEPTH} levels")
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        self.open.add(key)
        size, below = 1, 0
        for child in children:
            size += self.walk(child, depth + 1)
            below = max(below, self.depths[id(child)] + 1)
        self.open.discard(key)
        self.sizes[key], self.depths[key] = size, below
        return size


def _measure(node: yaml.Node) -> bool:
    """Refuse excessive aliasing in one document's graph; whether it has any alias at all."""
    expansion = _Expansion()
    expanded = expansion.walk(node, 0)
    aliased = expansion.aliased
    if aliased > FEW_ALIASED and expanded > FEW_NODES and aliased / expanded > allowed_alias_ratio(expanded):
        raise _Unreadable(
            f"contains excessive aliasing: YAML aliases expand it to {_count(expanded)} nodes, "
            f"{_count(aliased)} of them repeated"
        )
    return aliased > 0


def _count(number: int) -> str:
    return f"{number:,}" if number < 10**15 else f"about 10^{len(str(number)) - 1}"


class _Unreadable(Exception):
    """Why a document is refused, before the file's name is put in front."""


def _unshared(value: Any) -> Any:
    """``value`` with every list and mapping its own copy: an alias expanded as kubectl expands it.

    Called only on documents that :func:`_measure` bounded, so the copy's size is bounded too.
    """
    if isinstance(value, dict):
        return {key: _unshared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshared(item) for item in value]
    return value


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


def load_document(text: str, source: str) -> Any:
    """The one document of a file that holds a single value (a configuration), ``None`` when empty."""
    documents = load_documents(text, source)
    if len(documents) > 1:
        raise MalformedInput(f"{_shown(source)} holds {len(documents)} YAML documents; one is expected")
    return documents[0] if documents else None


def _parse(text: str, source: str) -> list[Any]:
    try:
        if text.lstrip()[:1] in ("{", "["):
            try:
                return [json.loads(text)]
            except ValueError:
                pass  # YAML flow style, several documents, or broken: YAML decides and names the error
        return _load_yaml(text)
    except RecursionError:
        raise MalformedInput(f"{_shown(source)} nests deeper than {MAX_DEPTH} levels") from None
    except _Unreadable as exc:
        raise MalformedInput(f"{_shown(source)} {exc}") from None
    except yaml.YAMLError as exc:
        raise MalformedInput(f"{_shown(source)} is not valid YAML or JSON: {_one_line(exc)}") from None


def _load_yaml(text: str) -> list[Any]:
    """Every document of a YAML stream, each measured (:func:`_measure`) before it is built."""
    loader = _BASE_LOADER(text)
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            aliased = _measure(node)
            document = loader.construct_document(node)
            documents.append(_unshared(document) if aliased else document)
        return documents
    finally:
        loader.dispose()


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
