"""PatchBuilder: recorded operations reproduce its view; the caller's document is never changed."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.patching import PatchBuilder

POD: dict[str, Any] = {
    "metadata": {"name": "p", "labels": {"a": "b"}},
    "spec": {
        "containers": [{"name": "app", "env": [{"name": "A", "value": "1"}]}, {"name": "side"}],
        "volumes": [{"name": "v", "emptyDir": {}}],
    },
}

# Each step: (method, path, value) applied in order.
steps = st.lists(
    st.sampled_from(
        [
            ("set_key", ["metadata", "annotations"], "x"),
            ("set_key", ["metadata", "labels"], "y"),
            ("set_key", ["spec", "containers", 0, "resources", "limits"], "epc"),
            ("set_key", ["spec", "containers", 1, "resources", "requests"], "epc"),
            ("append", ["spec", "containers", 0, "env"], {"name": "B", "value": "2"}),
            ("append", ["spec", "containers", 1, "env"], {"name": "B", "value": "2"}),
            ("append", ["spec", "volumes"], {"name": "w", "emptyDir": {}}),
            ("append", ["spec", "tolerations"], {"key": "k", "operator": "Exists"}),
            ("insert", ["spec", "initContainers"], {"name": "aesmd"}),
            ("insert", ["spec", "containers"], {"name": "first"}),
        ]
    ),
    max_size=12,
)


@given(steps)
def test_operations_reproduce_the_view_and_leave_the_input_alone(
    plan: list[tuple[str, list[Any], Any]],
) -> None:
    original = copy.deepcopy(POD)
    untouched = copy.deepcopy(POD)
    builder = PatchBuilder(original)
    recorded: list[Any] = []
    for method, path, value in plan:
        if method == "set_key":
            builder.set_key(path, "k", value)
        elif method == "append":
            builder.append(path, value)
        else:
            builder.insert(path, 0, value)
        # each operation as recorded: a later step below a value it added (the view holds the operation's
        # own copy of that value) must copy before it changes anything
        recorded.extend(copy.deepcopy(builder.operations[len(recorded) :]))
    assert original == untouched
    assert [dict(op) for op in builder.operations] == recorded
    assert jsonpatch.apply_patch(original, [dict(op) for op in builder.operations]) == builder.document


def test_untouched_subtrees_are_shared_not_copied() -> None:
    original = copy.deepcopy(POD)
    builder = PatchBuilder(original)
    builder.set_key(["spec", "containers", 0, "resources", "limits"], "epc", "64")
    assert builder.document["metadata"] is original["metadata"]
    assert builder.document["spec"]["volumes"] is original["spec"]["volumes"]
    assert builder.document["spec"]["containers"][1] is original["spec"]["containers"][1]
    assert builder.document["spec"]["containers"][0] is not original["spec"]["containers"][0]
    assert "resources" not in original["spec"]["containers"][0]


@pytest.mark.parametrize(
    "path", [["metadata", "name", "x"], ["spec", "containers", 5], ["spec", "containers", "0"]]
)
def test_paths_through_non_objects_are_type_errors(path: list[Any]) -> None:
    with pytest.raises(TypeError):
        PatchBuilder(copy.deepcopy(POD)).ensure_object(path)
