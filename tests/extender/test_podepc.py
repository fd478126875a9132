"""Effective EPC request of a pod, table-driven against the upstream rules.

Upstream: k8s.io/component-helpers/resource.AggregateContainerRequests (KEP-753 sidecar rules) and
PodRequests (adds spec.overhead); limits default missing requests (pkg/apis/core/v1 SetDefaults_Pod).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from confidential_pods.epc import effective_epc, node_capacity
from confidential_pods.profiles import PROFILES
from confidential_pods.quantities import MiB
from extender.podepc import PodEpc, pod_facts

ALIBABA = PROFILES["alibaba"]
INTEL = PROFILES["intel"]
RES = ALIBABA.epc_resource


def ctr(request: str | None = None, limit: str | None = None, sidecar: bool = False) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if request is not None:
        resources["requests"] = {RES: request, "cpu": "100m"}
    if limit is not None:
        resources["limits"] = {RES: limit}
    container: dict[str, Any] = {"name": "c", "image": "busybox", "resources": resources}
    if sidecar:
        container["restartPolicy"] = "Always"
    return container


def pod(
    containers: list[dict[str, Any]],
    init: list[dict[str, Any]] | None = None,
    overhead: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if init is not None:
        spec["initContainers"] = init
    if overhead is not None:
        spec["overhead"] = {RES: overhead, "memory": "160Mi"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "spec": spec}


EFFECTIVE_CASES = [
    ("no containers request EPC", pod([{"name": "c", "image": "x"}]), 0),
    ("one container", pod([ctr("64")]), 64),
    ("app containers are summed", pod([ctr("64"), ctr("32")]), 96),
    ("limit only: request defaults to limit", pod([ctr(limit="16")]), 16),
    ("request wins over limit", pod([ctr("8", "8")]), 8),
    ("init larger than apps", pod([ctr("32")], init=[ctr("128")]), 128),
    ("apps larger than init", pod([ctr("32"), ctr("64")], init=[ctr("48")]), 96),
    ("largest init container counts, not the sum", pod([ctr("8")], init=[ctr("40"), ctr("50")]), 50),
    ("native sidecar adds to the apps", pod([ctr("32")], init=[ctr("16", sidecar=True)]), 48),
    (
        "init after a sidecar needs init + sidecar",
        pod([ctr("8")], init=[ctr("16", sidecar=True), ctr("100")]),
        116,
    ),
    (
        "init before the sidecar runs alone",
        pod([ctr("8")], init=[ctr("100"), ctr("16", sidecar=True)]),
        100,
    ),
    (
        "sidecars accumulate for later inits",
        pod([ctr("1")], init=[ctr("10", sidecar=True), ctr("20", sidecar=True), ctr("5")]),
        35,
    ),
    (
        "sidecar peak while initializing",
        pod([], init=[ctr("10", sidecar=True), ctr("20", sidecar=True)]),
        30,
    ),
    ("overhead added", pod([ctr("64")], overhead="8"), 72),
    ("overhead added to init peak", pod([ctr("1")], init=[ctr("30")], overhead="2"), 32),
    ("overhead alone", pod([{"name": "c", "image": "x"}], overhead="4"), 4),
    ("unparseable request counts 0", pod([ctr("lots"), ctr("2")]), 2),
    (
        "restartPolicy other than Always is a plain init",
        pod([ctr("4")], init=[{**ctr("3"), "restartPolicy": "Never"}]),
        4,
    ),
]


@pytest.mark.parametrize(
    ("pod_json", "expected_mib"), [c[1:] for c in EFFECTIVE_CASES], ids=[c[0] for c in EFFECTIVE_CASES]
)
def test_effective_epc(pod_json: dict[str, Any], expected_mib: int) -> None:
    assert effective_epc(pod_json, ALIBABA) == expected_mib * MiB


def test_effective_epc_byte_profile() -> None:
    p = {"spec": {"containers": [{"name": "c", "resources": {"limits": {"sgx.intel.com/epc": "512Ki"}}}]}}
    assert effective_epc(p, INTEL) == 512 * 1024
    # other profiles' resources are ignored
    assert effective_epc(p, ALIBABA) == 0


@pytest.mark.parametrize(
    ("allocatable", "expected"),
    [
        ({RES: "93"}, 93 * MiB),
        ({RES: "0"}, 0),
        ({"cpu": "4"}, None),
        ({RES: "garbage"}, None),
        (None, None),
    ],
)
def test_node_capacity(allocatable: dict[str, str] | None, expected: int | None) -> None:
    node: dict[str, Any] = {"metadata": {"name": "n"}, "status": {}}
    if allocatable is not None:
        node["status"]["allocatable"] = allocatable
    assert node_capacity(node, ALIBABA) == expected


def _assigned(**changes: Any) -> dict[str, Any]:
    p = pod([ctr("64")])
    p["metadata"]["uid"] = "u-1"
    p["spec"]["nodeName"] = "node-a"
    p["status"] = {"phase": "Running"}
    for key, value in changes.items():
        section, field = key.split("__")
        p[section][field] = value
    return p


def test_pod_facts_keeps_only_small_facts() -> None:
    assert pod_facts(_assigned(), ALIBABA) == PodEpc(
        uid="u-1", namespace="ns", name="p", node="node-a", epc=64 * MiB
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"spec__nodeName": ""},
        {"status__phase": "Succeeded"},
        {"status__phase": "Failed"},
    ],
    ids=["unassigned", "succeeded", "failed"],
)
def test_pod_facts_none_when_holding_nothing(changes: dict[str, Any]) -> None:
    assert pod_facts(_assigned(**changes), ALIBABA) is None


def test_terminating_pod_counts_until_gone() -> None:
    # Its enclave holds the EPC until the containers stop (kube-scheduler and kubelet count it too).
    terminating = _assigned(metadata__deletionTimestamp="2026-01-01T00:00:00Z")
    running = pod_facts(_assigned(), ALIBABA)
    assert running is not None and not running.leaving
    assert pod_facts(terminating, ALIBABA) == dataclasses.replace(running, leaving=True)
    terminating["status"]["phase"] = "Succeeded"
    assert pod_facts(terminating, ALIBABA) is None


def test_pod_facts_none_without_epc_and_pending_counts() -> None:
    no_epc = _assigned()
    no_epc["spec"]["containers"] = [{"name": "c", "image": "x"}]
    assert pod_facts(no_epc, ALIBABA) is None
    assert pod_facts(_assigned(status__phase="Pending"), ALIBABA) is not None


def test_pod_facts_uid_falls_back_to_namespaced_name() -> None:
    p = _assigned()
    del p["metadata"]["uid"]
    facts = pod_facts(p, ALIBABA)
    assert facts is not None and facts.uid == "ns/p"


def test_malformed_shapes_do_not_raise() -> None:
    weird: dict[str, Any] = {"spec": {"containers": "nope", "initContainers": [None, 3], "overhead": []}}
    assert effective_epc(weird, ALIBABA) == 0
    assert pod_facts({"spec": {"nodeName": 5}}, ALIBABA) is None
