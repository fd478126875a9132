"""The Nodes and Pods the tests send, and the example cluster, are valid Kubernetes objects."""

from __future__ import annotations

from importlib import resources
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.extender import scheduler_json as sj

VERSION = "1.33.0"


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "v1", "kind": "Node", **sj.node("sgx-a", 93)},
        {"apiVersion": "v1", "kind": "Node", **sj.node("plain", None)},
        {"apiVersion": "v1", "kind": "Pod", **sj.pod()},
        {"apiVersion": "v1", "kind": "Pod", **sj.pod(node_name="sgx-a", phase="Running")},
    ],
    ids=["sgx-node", "plain-node", "pending-pod", "running-pod"],
)
def test_fixtures_are_valid_objects(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, VERSION, strict=True)


def test_example_cluster_objects_are_valid() -> None:
    text = resources.files("extender.examples").joinpath("cluster.yaml").read_text(encoding="utf-8")
    objects = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    assert len(objects) >= 20
    for obj in objects:
        kubernetes_validate.validate(obj, VERSION, strict=True)
