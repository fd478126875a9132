"""RFC 6902 patches built against the raw object.

:class:`PatchBuilder` keeps a working copy of the object in step with the operations it
records, so each step sees what earlier steps added: parents are created before children
(the apiserver rejects an ``add`` under a missing parent), arrays are only ever appended to
or inserted into (never replaced), and JSON pointers are escaped.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from confidential_pods.wire import PatchOperation, PathPart, escape, pointer

__all__ = ["PatchBuilder", "PatchOperation", "PathPart", "escape", "pointer"]


class PatchBuilder:
    """Records add operations against a document and applies them to a private view of it.

    The view is copy-on-write: a container (dict or list) is copied the first time something
    below it changes, so the caller's document is never modified and a review costs copies of
    the few containers on the changed paths, not a deep copy of the pod. A value added is copied
    once, into its operation, and the view holds that same copy, not owned: a later change below it
    copies its containers first, so a recorded operation never changes.
    """

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document: dict[str, Any] = dict(document)
        self.operations: list[PatchOperation] = []
        # Containers this builder made (and may change in place); the list keeps their ids unique.
        self._owned: list[Any] = [self.document]
        self._owned_ids = {id(self.document)}

    def get(self, parts: Sequence[PathPart]) -> Any:
        """The value at ``parts`` in the working view, or None when any step is missing."""
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
        """Make sure a mapping exists at ``parts`` (creating missing or null parents); return it, writable."""
        node: Any = self.document
        for depth, part in enumerate(parts):
            if isinstance(node, list):
                if not isinstance(part, int) or not 0 <= part < len(node) or node[part] is None:
                    raise TypeError(f"{pointer(parts[: depth + 1])} is not an element of the array")
                child = node[part]
            else:
                child = node.get(part)
                if child is None:
                    self._record("add", parts[: depth + 1], {})
                    child = node[part] = self._own({})
            if not isinstance(child, (dict, list)):
                raise TypeError(f"{pointer(parts[: depth + 1])} is not an object")
            node = self._writable(node, part, child)
        if not isinstance(node, dict):
            raise TypeError(f"{pointer(parts)} is not an object")
        return node

    def set_key(self, parent: Sequence[PathPart], key: str, value: Any) -> None:
        """``add`` ``key`` under the object at ``parent`` (an add replaces an existing key's value)."""
        target = self.ensure_object(parent)
        target[key] = self._record("add", [*parent, key], value)

    def append(self, array: Sequence[PathPart], value: Any) -> None:
        """Append to the array at ``array``, creating the array (holding ``value``) when missing."""
        self.insert(array, None, value)

    def insert(self, array: Sequence[PathPart], index: int | None, value: Any) -> None:
        """Insert ``value`` at ``index`` (None: the end) of the array at ``array``."""
        parent, name = array[:-1], str(array[-1])
        holder = self.ensure_object(parent)
        current = holder.get(name)
        if current is None:
            (added,) = self._record("add", array, [value])
            holder[name] = self._own([added])
            return
        if not isinstance(current, list):
            raise TypeError(f"{pointer(array)} is not an array")
        current = self._writable(holder, name, current)
        if index is None or index >= len(current):
            current.append(self._record("add", [*array, "-"], value))
        else:
            current.insert(index, self._record("add", [*array, index], value))

    def _own(self, container: Any) -> Any:
        self._owned.append(container)
        self._owned_ids.add(id(container))
        return container

    def _writable(self, parent: Any, key: PathPart, child: Any) -> Any:
        """``child`` (found at ``parent[key]``), copied into the view first unless already ours."""
        if id(child) in self._owned_ids:
            return child
        copied = self._own(dict(child) if isinstance(child, dict) else list(child))
        parent[key] = copied
        return copied

    def _record(self, op: Literal["add", "replace"], parts: Sequence[PathPart], value: Any) -> Any:
        """Record the operation with its own copy of ``value``; return that copy (for the view)."""
        recorded = copy.deepcopy(value)
        self.operations.append({"op": op, "path": pointer(parts), "value": recorded})
        return recorded
