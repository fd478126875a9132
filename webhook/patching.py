"""RFC 6902 patches built against the raw object.

:class:`PatchBuilder` keeps a working copy of the object in step with the operations it
records, so each step sees what earlier steps added: parents are created before children
(the apiserver rejects an ``add`` under a missing parent), arrays are only ever appended to
or inserted into (never replaced), and JSON pointers are escaped.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict


class PatchOperation(TypedDict):
    op: Literal["add", "replace"]
    path: str
    value: Any


PathPart = str | int


def escape(part: PathPart) -> str:
    """Escape one JSON pointer reference token (RFC 6901: ``~`` → ``~0``, ``/`` → ``~1``)."""
    return str(part).replace("~", "~0").replace("/", "~1")


def pointer(parts: Sequence[PathPart]) -> str:
    return "".join("/" + escape(part) for part in parts)


class PatchBuilder:
    """Records add operations against a document and applies them to a private copy."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document: dict[str, Any] = copy.deepcopy(dict(document))
        self.operations: list[PatchOperation] = []

    def get(self, parts: Sequence[PathPart]) -> Any:
        """The value at ``parts`` in the working copy, or None when any step is missing."""
        node: Any = self.document
        for part in parts:
            if isinstance(node, dict) and isinstance(part, str):
                node = node.get(part)
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
            else:
                return None
        return node

    def ensure_object(self, parts: Sequence[PathPart]) -> dict[str, Any]:
        """Make sure a mapping exists at ``parts`` (creating missing or null parents); return it."""
        node: Any = self.document
        for depth, part in enumerate(parts):
            child = node[part] if isinstance(node, list) and isinstance(part, int) else node.get(part)
            if child is None:
                if isinstance(node, list):
                    raise TypeError(f"{pointer(parts[: depth + 1])} is null")
                self._record("add", parts[: depth + 1], {})
                child = node[part] = {}
            node = child
        if not isinstance(node, dict):
            raise TypeError(f"{pointer(parts)} is not an object")
        return node

    def set_key(self, parent: Sequence[PathPart], key: str, value: Any) -> None:
        """``add`` ``key`` under the object at ``parent`` (an add replaces an existing key's value)."""
        target = self.ensure_object(parent)
        self._record("add", [*parent, key], value)
        target[key] = copy.deepcopy(value)

    def append(self, array: Sequence[PathPart], value: Any) -> None:
        """Append to the array at ``array``, creating the array (holding ``value``) when missing."""
        self.insert(array, None, value)

    def insert(self, array: Sequence[PathPart], index: int | None, value: Any) -> None:
        """Insert ``value`` at ``index`` (None: the end) of the array at ``array``."""
        parent, name = array[:-1], array[-1]
        holder = self.ensure_object(parent)
        current = holder.get(str(name))
        if current is None:
            self._record("add", array, [value])
            holder[str(name)] = [copy.deepcopy(value)]
            return
        if not isinstance(current, list):
            raise TypeError(f"{pointer(array)} is not an array")
        if index is None or index >= len(current):
            self._record("add", [*array, "-"], value)
            current.append(copy.deepcopy(value))
        else:
            self._record("add", [*array, index], value)
            current.insert(index, copy.deepcopy(value))

    def _record(self, op: Literal["add", "replace"], parts: Sequence[PathPart], value: Any) -> None:
        self.operations.append({"op": op, "path": pointer(parts), "value": copy.deepcopy(value)})
