"""kube-scheduler's own filters as ``simulate`` applies them, and workloads as their pods (pure).

The rows follow kube-scheduler's semantics: ``Toleration.ToleratesTaint`` (k8s.io/api/core/v1), the
NodeAffinity plugin's ``nodeaffinity.RequiredNodeAffinity`` (k8s.io/component-helpers), NodeUnschedulable,
and the DaemonSet controller's ``NodeShouldRunDaemonPod``.
"""

from __future__ import annotations

from typing import Any

import pytest

from extender.placement import (
    NodeFacts,
    PlacementError,
    Taint,
    node_facts,
    pod_constraints,
    refusal,
    tolerates,
    unmodelled,
)
from extender.workloads import expand

NO_SCHEDULE = Taint("dedicated", "ml", "NoSchedule")

#: (id, toleration, taint, tolerated)
TOLERATIONS = [
    ("equal-same-value", {"key": "dedicated", "operator": "Equal", "value": "ml"}, NO_SCHEDULE, True),
    ("no-operator-is-equal", {"key": "dedicated", "value": "ml"}, NO_SCHEDULE, True),
    ("equal-other-value", {"key": "dedicated", "operator": "Equal", "value": "db"}, NO_SCHEDULE, False),
    ("equal-no-value-vs-value", {"key": "dedicated", "operator": "Equal"}, NO_SCHEDULE, False),
    ("exists-ignores-value", {"key": "dedicated", "operator": "Exists"}, NO_SCHEDULE, True),
    ("exists-other-key", {"key": "gpu", "operator": "Exists"}, NO_SCHEDULE, False),
    ("empty-key-exists-tolerates-all", {"operator": "Exists"}, NO_SCHEDULE, True),
    ("empty-key-exists-any-effect", {"operator": "Exists"}, Taint("x", "", "NoExecute"), True),
    (
        "effect-must-match",
        {"key": "dedicated", "operator": "Exists", "effect": "NoExecute"},
        NO_SCHEDULE,
        False,
    ),
    ("effect-matches", {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}, NO_SCHEDULE, True),
    ("empty-effect-matches-all", {"key": "dedicated", "value": "ml", "effect": ""}, NO_SCHEDULE, True),
    (
        "unknown-operator-tolerates-nothing",
        {"key": "dedicated", "operator": "Gt", "value": "1"},
        NO_SCHEDULE,
        False,
    ),
    ("empty-key-equal-compares-values", {"operator": "Equal", "value": "ml"}, NO_SCHEDULE, True),
]


@pytest.mark.parametrize(
    ("toleration", "taint", "expected"), [r[1:] for r in TOLERATIONS], ids=[r[0] for r in TOLERATIONS]
)
def test_tolerates_follows_tolerates_taint(toleration: dict[str, str], taint: Taint, expected: bool) -> None:
    assert tolerates(toleration, taint) is expected


def node(
    name: str = "n1",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    unschedulable: bool = False,
) -> NodeFacts:
    spec: dict[str, Any] = {"taints": taints or []}
    if unschedulable:
        spec["unschedulable"] = True
    return node_facts({"metadata": {"name": name, "labels": labels or {}}, "spec": spec})


def pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [{"name": "c"}], **spec}}


def required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}
    }


def expression(key: str, operator: str, *values: str) -> dict[str, Any]:
    requirement: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        requirement["values"] = list(values)
    return {"matchExpressions": [requirement]}


ZONE = {"zone": "a", "gen": "7"}
UNSCHEDULABLE = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
#: (id, pod, node, reason fragment or None when the node is left to the pod)
FILTERS = [
    ("plain-node-plain-pod", pod(), node(), None),
    ("cordoned", pod(), node(unschedulable=True), "cordoned"),
    (
        "cordoned-tolerated",
        pod(tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]),
        node(unschedulable=True),
        None,
    ),
    (
        "cordoned-tolerated-by-everything",
        pod(tolerations=[{"operator": "Exists"}]),
        node(unschedulable=True),
        None,
    ),
    ("no-schedule-taint", pod(), node(taints=[{"key": "k", "value": "v", "effect": "NoSchedule"}]), "{k: v}"),
    ("no-execute-taint", pod(), node(taints=[{"key": "k", "effect": "NoExecute"}]), "k (NoExecute)"),
    (
        "prefer-no-schedule-is-not-a-filter",
        pod(),
        node(taints=[{"key": "k", "effect": "PreferNoSchedule"}]),
        None,
    ),
    (
        "taint-tolerated",
        pod(tolerations=[{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}]),
        node(taints=[{"key": "k", "value": "v", "effect": "NoSchedule"}]),
        None,
    ),
    (
        "one-of-two-taints-tolerated",
        pod(tolerations=[{"key": "a", "operator": "Exists"}]),
        node(taints=[{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoSchedule"}]),
        "b (NoSchedule)",
    ),
    ("node-selector-matches", pod(nodeSelector={"zone": "a"}), node(labels=ZONE), None),
    (
        "node-selector-value-differs",
        pod(nodeSelector={"zone": "b"}),
        node(labels=ZONE),
        "nodeSelector (zone=b)",
    ),
    ("node-selector-label-missing", pod(nodeSelector={"disk": "ssd"}), node(labels=ZONE), "nodeSelector"),
    ("in", pod(affinity=required(expression("zone", "In", "a", "b"))), node(labels=ZONE), None),
    ("in-other", pod(affinity=required(expression("zone", "In", "b"))), node(labels=ZONE), "node affinity"),
    ("in-no-values", pod(affinity=required(expression("zone", "In"))), node(labels=ZONE), "node affinity"),
    ("not-in", pod(affinity=required(expression("zone", "NotIn", "b"))), node(labels=ZONE), None),
    (
        "not-in-hit",
        pod(affinity=required(expression("zone", "NotIn", "a"))),
        node(labels=ZONE),
        "node affinity",
    ),
    (
        "not-in-label-missing",
        pod(affinity=required(expression("disk", "NotIn", "ssd"))),
        node(labels=ZONE),
        None,
    ),
    ("exists", pod(affinity=required(expression("zone", "Exists"))), node(labels=ZONE), None),
    (
        "exists-missing",
        pod(affinity=required(expression("disk", "Exists"))),
        node(labels=ZONE),
        "node affinity",
    ),
    ("does-not-exist", pod(affinity=required(expression("disk", "DoesNotExist"))), node(labels=ZONE), None),
    (
        "does-not-exist-hit",
        pod(affinity=required(expression("zone", "DoesNotExist"))),
        node(labels=ZONE),
        "affinity",
    ),
    ("gt", pod(affinity=required(expression("gen", "Gt", "6"))), node(labels=ZONE), None),
    ("gt-equal", pod(affinity=required(expression("gen", "Gt", "7"))), node(labels=ZONE), "node affinity"),
    ("lt", pod(affinity=required(expression("gen", "Lt", "8"))), node(labels=ZONE), None),
    ("lt-not-a-number", pod(affinity=required(expression("zone", "Lt", "8"))), node(labels=ZONE), "affinity"),
    (
        "gt-two-values",
        pod(affinity=required(expression("gen", "Gt", "1", "2"))),
        node(labels=ZONE),
        "affinity",
    ),
    (
        "gt-label-missing",
        pod(affinity=required(expression("cores", "Gt", "1"))),
        node(labels=ZONE),
        "affinity",
    ),
    (
        "terms-are-ored",
        pod(affinity=required(expression("zone", "In", "b"), expression("gen", "In", "7"))),
        node(labels=ZONE),
        None,
    ),
    (
        "requirements-are-anded",
        pod(
            affinity=required(
                {
                    "matchExpressions": [
                        {"key": "zone", "operator": "In", "values": ["a"]},
                        {"key": "gen", "operator": "In", "values": ["8"]},
                    ]
                }
            )
        ),
        node(labels=ZONE),
        "node affinity",
    ),
    ("empty-term-matches-nothing", pod(affinity=required({})), node(labels=ZONE), "node affinity"),
    ("no-terms-matches-nothing", pod(affinity=required()), node(labels=ZONE), "node affinity"),
    (
        "match-fields-name",
        pod(
            affinity=required({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})
        ),
        node(),
        None,
    ),
    (
        "match-fields-other-name",
        pod(
            affinity=required({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]})
        ),
        node(),
        "node affinity",
    ),
    (
        "match-fields-not-in",
        pod(
            affinity=required(
                {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n2"]}]}
            )
        ),
        node(),
        None,
    ),
    (
        "match-fields-two-values",
        pod(
            affinity=required(
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1", "n2"]}]}
            )
        ),
        node(),
        "node affinity",
    ),
    (
        "selector-and-affinity-both-needed",
        pod(nodeSelector={"zone": "a"}, affinity=required(expression("gen", "In", "8"))),
        node(labels=ZONE),
        "node affinity",
    ),
    (
        "cordon-checked-first",
        pod(nodeSelector={"zone": "b"}),
        node(labels=ZONE, unschedulable=True),
        "cordoned",
    ),
    (
        "taint-before-affinity",
        pod(nodeSelector={"zone": "b"}),
        node(labels=ZONE, taints=[{"key": "k", "effect": "NoSchedule"}]),
        "taint",
    ),
    (
        "cordon-taint-tolerated-still-cordoned-without-toleration",
        pod(),
        node(taints=[UNSCHEDULABLE]),
        "taint",
    ),
]


@pytest.mark.parametrize(("spec", "facts", "fragment"), [r[1:] for r in FILTERS], ids=[r[0] for r in FILTERS])
def test_kube_scheduler_filters(spec: dict[str, Any], facts: NodeFacts, fragment: str | None) -> None:
    reason = refusal(pod_constraints(spec), facts)
    if fragment is None:
        assert reason is None
    else:
        assert reason is not None and fragment in reason, reason


REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
#: (id, pod spec, fragment of the error)
UNREADABLE = [
    ("selector-not-a-map", {"nodeSelector": ["zone"]}, "spec.nodeSelector must be an object"),
    ("selector-value-not-a-string", {"nodeSelector": {"zone": 1}}, "spec.nodeSelector.zone must be a string"),
    ("tolerations-not-a-list", {"tolerations": {"key": "k"}}, "spec.tolerations must be a list"),
    ("toleration-not-an-object", {"tolerations": ["k"]}, "spec.tolerations[0] must be an object"),
    (
        "terms-not-a-list",
        {"affinity": {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": 5}}}},
        f"{REQUIRED} must be a list",
    ),
    (
        "values-not-strings",
        {"affinity": required({"matchExpressions": [{"key": "k", "operator": "In", "values": [1]}]})},
        "matchExpressions: values must be a list of strings",
    ),
]


@pytest.mark.parametrize(("spec", "fragment"), [r[1:] for r in UNREADABLE], ids=[r[0] for r in UNREADABLE])
def test_unreadable_fields_are_named(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(PlacementError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        pod_constraints(pod(**spec))


def test_unmodelled_rules_are_named() -> None:
    busy = pod(
        containers=[{"name": "c", "resources": {"limits": {"cpu": "1", "alibabacloud.com/sgx_epc_MiB": "8"}},
                     "ports": [{"containerPort": 80, "hostPort": 8080}]}],
        affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{}]},
                  "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{}]}},
        topologySpreadConstraints=[{"maxSkew": 1}],
        runtimeClassName="kata",
    )  # fmt: skip
    assert unmodelled(busy) == (
        "resources cpu",
        "preferred node affinity",
        "pod anti-affinity",
        "topology spread constraints",
        "host ports",
        "RuntimeClass scheduling (its nodeSelector and tolerations)",
    )
    assert unmodelled(pod()) == ()


# --- workloads as their pods ------------------------------------------------------------------------------

TEMPLATE = {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c"}]}}


def workload(kind: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"template": TEMPLATE, **spec}
    if kind == "CronJob":
        body = {"jobTemplate": {"spec": {"template": TEMPLATE, **spec}}}
    return {"kind": kind, "metadata": {"name": "w", "namespace": "shop"}, "spec": body}


NODES = (
    node("a", labels={"sgx": "true"}),
    node("b", labels={"sgx": "true"}, unschedulable=True, taints=[UNSCHEDULABLE]),
    node("c", labels={"sgx": "true"}, taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
    node("d"),
)
SGX_ONLY = {**TEMPLATE, "spec": {**TEMPLATE["spec"], "nodeSelector": {"sgx": "true"}}}
#: (id, object, pods' names, how)
EXPANSIONS = [
    ("deployment", workload("Deployment", replicas=3), ["w-0", "w-1", "w-2"], "replicas 3"),
    ("deployment-default", workload("Deployment"), ["w-0"], "replicas 1 (default)"),
    ("deployment-zero", workload("Deployment", replicas=0), [], "replicas 0"),
    ("statefulset", workload("StatefulSet", replicas=2), ["w-0", "w-1"], "replicas 2"),
    ("replicaset", workload("ReplicaSet", replicas=2), ["w-0", "w-1"], "replicas 2"),
    ("job-parallelism", workload("Job", parallelism=3), ["w-0", "w-1", "w-2"], "parallelism 3"),
    (
        "job-capped-by-completions",
        workload("Job", parallelism=3, completions=2),
        ["w-0", "w-1"],
        "completions 2",
    ),
    ("job-suspended", workload("Job", parallelism=3, suspend=True), [], "suspended"),
    ("cronjob", workload("CronJob", parallelism=2), ["w-0", "w-1"], "parallelism 2, one run"),
    ("replicas-not-a-number", workload("Deployment", replicas="3"), ["w-0"], "replicas 1"),
    ("daemonset", workload("DaemonSet", template=SGX_ONLY), ["w-0", "w-1"], "one per eligible node, 2 of 4"),
    ("daemonset-everywhere", workload("DaemonSet"), ["w-0", "w-1", "w-2"], "one per eligible node, 3 of 4"),
]


@pytest.mark.parametrize(("obj", "names", "how"), [r[1:] for r in EXPANSIONS], ids=[r[0] for r in EXPANSIONS])
def test_workloads_become_their_pods(obj: dict[str, Any], names: list[str], how: str) -> None:
    expansion = expand(obj, NODES)
    assert [p["metadata"]["name"] for p in expansion.pods] == names
    assert expansion.how == how and expansion.origin == f"{obj['kind']} shop/w"
    for made in expansion.pods:
        assert made["kind"] == "Pod" and made["metadata"]["namespace"] == "shop"
        assert made["metadata"]["labels"] == {"app": "w"}
    assert TEMPLATE == {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c"}]}}


def test_daemon_pods_are_pinned_and_tolerate_cordons() -> None:
    """The controller pins each daemon pod to its node, and daemon pods tolerate cordons."""
    pods = expand(workload("DaemonSet", template=SGX_ONLY), NODES).pods
    for made, expected in zip(pods, ("a", "b"), strict=True):
        constraints = pod_constraints(made)
        left = [n.name for n in NODES if refusal(constraints, n) is None]
        assert left == [expected]


def test_a_pod_is_itself() -> None:
    alone = pod()
    assert expand({"kind": "Pod", **alone}, NODES).pods == ({"kind": "Pod", **alone},)
