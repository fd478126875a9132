"""Hostile shapes for the fuzz tests of both servers and for benchmarks/fuzz_soak.py.

* :data:`hostile_quantities`: quantities that cost the unbounded parser hours, or that only look
  like numbers (Unicode digits, ``_``, white space), and JSON numbers past int64 or 4,300 digits;
* :func:`deep`: arrays and objects nested hundreds to thousands deep;
* :func:`poisoned`: a realistic pod with one to three of the fields the servers read replaced by a
  value of the wrong JSON type, a hostile quantity or a deep structure — every path in :data:`POD_PATHS`;
* :func:`poisoned_at`: the same for any JSON document and the paths its reader reads.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from tests.test_quantities import HOSTILE

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
hostile_quantities = (
    st.sampled_from([*HOSTILE, "64", "64Mi", "0", "-5", "1.5", "100m", "9" * 30, "1e18", "8Ei"])
    | st.sampled_from([10**4000, -(10**4000), 2**63, 2**64, 1e308, -1e308, float("inf")])
    | st.integers()
    | st.floats(allow_nan=False)
)


@st.composite
def deep(draw: st.DrawFn, min_depth: int = 50, max_depth: int = 3000) -> Any:
    """A list or object nesting ``min_depth`` to ``max_depth`` levels (arrays and objects mixed)."""
    depth = draw(st.integers(min_depth, max_depth))
    shape = draw(st.sampled_from(["list", "dict", "mixed"]))
    value: Any = draw(scalars)
    for level in range(depth):
        in_list = shape == "list" or (shape == "mixed" and level % 2 == 1)
        value = [value] if in_list else {"k": value}
    return value


#: Every field of a pod that the webhook or the extender reads (``[]`` is "the first item of").
POD_PATHS: tuple[tuple[str | int, ...], ...] = (
    ("metadata",),
    ("metadata", "annotations"),
    ("metadata", "annotations", "confidential-pods.io/epc"),
    ("metadata", "annotations", "confidential-pods.io/containers"),
    ("metadata", "namespace"),
    ("metadata", "name"),
    ("metadata", "uid"),
    ("spec",),
    ("spec", "containers"),
    ("spec", "containers", 0),
    ("spec", "containers", 0, "name"),
    ("spec", "containers", 0, "resources"),
    ("spec", "containers", 0, "resources", "requests"),
    ("spec", "containers", 0, "resources", "limits"),
    ("spec", "containers", 0, "resources", "requests", "RESOURCE"),
    ("spec", "containers", 0, "resources", "limits", "RESOURCE"),
    ("spec", "containers", 0, "env"),
    ("spec", "containers", 0, "env", 0),
    ("spec", "containers", 0, "volumeMounts"),
    ("spec", "containers", 0, "volumeMounts", 0),
    ("spec", "containers", 0, "securityContext"),
    ("spec", "containers", 0, "securityContext", "privileged"),
    ("spec", "initContainers"),
    ("spec", "initContainers", 0),
    ("spec", "initContainers", 0, "restartPolicy"),
    ("spec", "initContainers", 0, "resources", "limits", "RESOURCE"),
    ("spec", "volumes"),
    ("spec", "volumes", 0),
    ("spec", "tolerations"),
    ("spec", "tolerations", 0),
    ("spec", "runtimeClassName"),
    ("spec", "schedulerName"),
    ("spec", "hostNetwork"),
    ("spec", "hostPID"),
    ("spec", "overhead"),
    ("spec", "overhead", "RESOURCE"),
    ("spec", "nodeName"),
    ("status",),
    ("status", "phase"),
)


def _set(document: Any, path: tuple[str | int, ...], value: Any, resource: str) -> None:
    """Put ``value`` at ``path``, creating what is missing on the way (``RESOURCE`` is the EPC name)."""
    node = document
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        key = resource if part == "RESOURCE" else part
        if isinstance(key, int):
            if not isinstance(node, list):
                return  # an earlier poison replaced the array: nothing to reach here
            while len(node) <= key:
                node.append({"name": f"c{len(node)}"})
            if last:
                node[key] = value
                return
            node = node[key]
            continue
        if not isinstance(node, dict):
            return
        if last:
            node[key] = value
            return
        following = path[depth + 1]
        node = node.setdefault(key, [] if isinstance(following, int) else {})


#: What replaces a field: a value of the wrong JSON type, a hostile quantity or a deep structure.
hostile_values = json_values | hostile_quantities | deep(min_depth=50, max_depth=200)


@st.composite
def poisoned_at(
    draw: st.DrawFn, base: Any, paths: Sequence[tuple[str | int, ...]], resource: str = ""
) -> Any:
    """``base`` (a JSON document) with one to three of ``paths`` replaced by :data:`hostile_values`
    (what is missing on the way is created; ``RESOURCE`` in a path is ``resource``)."""
    document = copy.deepcopy(base)
    for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3, unique=True)):
        _set(document, path, draw(hostile_values), resource)
    return document


@st.composite
def poisoned(draw: st.DrawFn, base: dict[str, Any], resource: str) -> dict[str, Any]:
    """``base`` (a realistic pod) with one to three fields it is read by replaced by hostile values."""
    pod = copy.deepcopy(base)
    pod.setdefault("spec", {}).setdefault("initContainers", [{"name": "init", "restartPolicy": "Always"}])
    poisoned_pod: dict[str, Any] = draw(poisoned_at(pod, POD_PATHS, resource))
    return poisoned_pod
