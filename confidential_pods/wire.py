"""Raw Kubernetes wire formats both components share: JSON bodies in, typed dicts, JSON Patch and pointers.

Kubernetes JSON stays JSON (``TypedDict`` descriptions, no client models). What is typed here is typed
once: the webhook, the extender and the certs commands import it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict

from confidential_pods.errors import MalformedInput


class Status(TypedDict, total=False):
    """``metav1.Status``: an admission denial's ``status``, the ``object`` of a watch ERROR event."""

    kind: str
    status: str
    message: str
    reason: str
    code: int


class PatchOperation(TypedDict, total=False):
    """One RFC 6902 operation (the webhook's answers, the certs commands' Secret and caBundle patches)."""

    op: Literal["add", "replace", "test", "remove"]
    path: str
    value: Any


PathPart = str | int


def escape(part: PathPart) -> str:
    """Escape one JSON pointer reference token (RFC 6901: ``~`` → ``~0``, ``/`` → ``~1``)."""
    return str(part).replace("~", "~0").replace("/", "~1")


def pointer(parts: Sequence[PathPart]) -> str:
    """The JSON pointer of a path: ``["metadata", "annotations", "a/b"]`` → ``/metadata/annotations/a~1b``."""
    return "".join("/" + escape(part) for part in parts)


def mapping(value: object) -> Mapping[str, Any]:
    """``value`` when it is a JSON object, else an empty one (lenient reading of raw JSON)."""
    if type(value) is dict:  # decoded JSON: skip the slower ABC check
        return value
    return value if isinstance(value, Mapping) else {}


def sequence(value: object) -> Iterable[Any]:
    """``value`` when it is a JSON array, else an empty one."""
    return value if isinstance(value, list | tuple) else ()


def decode_json(body: bytes | str, what: str = "body") -> Any:
    """Decode one JSON text; :class:`MalformedInput` (HTTP 400) when it is not JSON we can read.

    Besides text that is not JSON, this refuses what Python's reader cannot hold: nesting deeper than
    its recursion limit (``RecursionError``: 100,000 ``[`` in a row), integers longer than 4,300 digits,
    and bytes that are not UTF-8 (or UTF-16/32, which JSON allows).
    """
    try:
        return json.loads(body)
    except RecursionError:
        raise MalformedInput(f"{what} is nested too deeply to be a Kubernetes object") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, the 4,300-digit limit
        raise MalformedInput(f"{what} is not JSON: {str(exc)[:200]}") from None


def depth_exceeds(value: object, limit: int) -> bool:
    """Whether ``value`` nests objects/arrays more than ``limit`` deep (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


#: Where each workload kind keeps its pod template (``inject`` mutates it, ``simulate`` places its pods).
POD_TEMPLATES: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
