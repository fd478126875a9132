"""The MutatingWebhookConfiguration, field by field against admissionregistration.k8s.io/v1."""

from __future__ import annotations

from typing import Any

import pytest

from tests.manifests.building import INSTALLS, Manifest, find, sent
from tests.manifests.upstream_types import STRUCTS, unknown_fields
from webhook.contract import opt_in
from webhook.podview import PodRefused

EXCLUDED_NAMESPACES = ["kube-system", "kube-public", "kube-node-lease", "confidential-pods"]
POD_CREATE_ONLY = [
    {
        "operations": ["CREATE"],
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "resources": ["pods"],
        "scope": "Namespaced",
    }
]
CONFIDENTIAL = "confidential-pods.io/confidential"


def _configuration(built: dict[str, list[Manifest]], name: str) -> Manifest:
    return find(built[name], "MutatingWebhookConfiguration", "confidential-pods")


def _entries(configuration: Manifest) -> dict[str, Manifest]:
    return {entry["name"]: entry for entry in configuration["webhooks"]}


@pytest.mark.parametrize("name", INSTALLS)
def test_only_upstream_fields(built: dict[str, list[Manifest]], name: str) -> None:
    configuration = _configuration(built, name)
    assert unknown_fields(configuration, "MutatingWebhookConfiguration") == []
    for entry in configuration["webhooks"]:
        assert STRUCTS["MutatingWebhook"].required <= set(entry), entry["name"]
        for condition in entry.get("matchConditions", []):
            assert STRUCTS["MatchCondition"].required <= set(condition)


def test_the_schema_check_sees_misspelt_fields() -> None:
    entry = {"name": "x.y.z", "clientConfig": {"service": {"name": "s", "namespace": "n", "paht": "/"}}}
    bad = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "webhooks": [entry],
    }
    assert unknown_fields(bad, "MutatingWebhookConfiguration") == [
        ".webhooks[0].clientConfig.service.paht: no such field in ServiceReference "
        "(k8s.io/api/admissionregistration/v1/types.go)"
    ]


@pytest.mark.parametrize("name", INSTALLS)
def test_two_entries_as_specified(built: dict[str, list[Manifest]], name: str) -> None:
    configuration = _configuration(built, name)
    entries = _entries(configuration)
    assert list(entries) == ["namespace.confidential-pods.io", "pod.confidential-pods.io"]
    service = find(built[name], "Service", "confidential-pods-webhook")
    for path, entry in zip(["/mutate/namespace", "/mutate"], entries.values(), strict=True):
        assert entry["clientConfig"] == {
            "service": {
                "name": service["metadata"]["name"],
                "namespace": service["metadata"]["namespace"],
                "path": path,
                "port": service["spec"]["ports"][0]["port"],
            }
        }, "no caBundle in the manifests: certs install / cainjector own that field"
        assert entry["rules"] == POD_CREATE_ONLY
        assert entry["sideEffects"] == "None"
        assert entry["admissionReviewVersions"] == ["v1"]
        # A second call could only see the status marker and answer without a patch.
        assert entry["reinvocationPolicy"] == "Never"
        assert entry["failurePolicy"] == "Fail"
        assert 1 <= entry["timeoutSeconds"] <= 5
        assert "objectSelector" not in entry
        expressions = entry["namespaceSelector"]["matchExpressions"]
        assert {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": EXCLUDED_NAMESPACES,
        } in expressions
        assert "matchLabels" not in entry["namespaceSelector"]

    by_namespace, by_pod = entries.values()
    assert by_namespace["namespaceSelector"]["matchExpressions"][0] == {
        "key": "confidential-pods.io/injection",
        "operator": "In",
        "values": ["enabled"],
    }
    assert [c["name"] for c in by_namespace["matchConditions"]] == ["not-opted-out"]
    assert by_pod["namespaceSelector"]["matchExpressions"][0] == {
        "key": "confidential-pods.io/injection",
        "operator": "NotIn",
        "values": ["enabled", "disabled"],
    }
    assert [c["name"] for c in by_pod["matchConditions"]] == ["annotated-confidential"]


def test_own_namespace_is_excluded(built: dict[str, list[Manifest]]) -> None:
    namespace = find(built["base"], "Namespace")["metadata"]["name"]
    assert namespace in EXCLUDED_NAMESPACES


# --- the namespaceSelector semantics, evaluated as the API server does for matchExpressions ---


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for requirement in selector.get("matchExpressions", []):
        present = requirement["key"] in labels
        value = labels.get(requirement["key"])
        if requirement["operator"] == "In" and not (present and value in requirement["values"]):
            return False
        if requirement["operator"] == "NotIn" and present and value in requirement["values"]:
            return False
    return True


@pytest.mark.parametrize(
    ("namespace_labels", "expected"),
    [
        ({}, ["pod.confidential-pods.io"]),
        ({"confidential-pods.io/injection": "enabled"}, ["namespace.confidential-pods.io"]),
        ({"confidential-pods.io/injection": "disabled"}, []),
        ({"confidential-pods.io/injection": "something-else"}, ["pod.confidential-pods.io"]),
        ({"kubernetes.io/metadata.name": "kube-system", "confidential-pods.io/injection": "enabled"}, []),
        ({"kubernetes.io/metadata.name": "kube-public"}, []),
        ({"kubernetes.io/metadata.name": "kube-node-lease"}, []),
        (
            {"kubernetes.io/metadata.name": "confidential-pods", "confidential-pods.io/injection": "enabled"},
            [],
        ),
        ({"kubernetes.io/metadata.name": "team-a"}, ["pod.confidential-pods.io"]),
    ],
)
def test_each_namespace_reaches_at_most_one_entry(
    built: dict[str, list[Manifest]], namespace_labels: dict[str, str], expected: list[str]
) -> None:
    entries = _entries(_configuration(built, "base"))
    assert [n for n, e in entries.items() if _selects(e["namespaceSelector"], namespace_labels)] == expected


# --- the CEL matchCondition, evaluated with cel-python on sample pods ---

#: The condition, written without CEL optionals (``.?``/``[?]``) so that it compiles on every API
#: server with GA matchConditions (1.30+). The e2e suite proves it on a real API server. Every value but
#: "false" is sent: "true" is injected, any other value refused with the webhook's message.
EXPECTED_CONDITION = (
    "has(object.metadata.annotations) && "
    "'confidential-pods.io/confidential' in object.metadata.annotations && "
    "object.metadata.annotations['confidential-pods.io/confidential'] != 'false'"
)


#: The namespace entry's condition: everything but an explicit opt-out is sent.
EXPECTED_NAMESPACE_CONDITION = (
    "!has(object.metadata.annotations) || "
    "!('confidential-pods.io/confidential' in object.metadata.annotations) || "
    "object.metadata.annotations['confidential-pods.io/confidential'] != 'false'"
)


@pytest.mark.parametrize(
    ("entry_name", "expected"),
    [
        ("pod.confidential-pods.io", EXPECTED_CONDITION),
        ("namespace.confidential-pods.io", EXPECTED_NAMESPACE_CONDITION),
    ],
)
def test_match_condition_text(built: dict[str, list[Manifest]], entry_name: str, expected: str) -> None:
    """Checked without a CEL library too: exactly the documented expression."""
    entry = _entries(_configuration(built, "base"))[entry_name]
    (condition,) = entry["matchConditions"]
    assert " ".join(condition["expression"].split()) == expected


def _pod(annotations: dict[str, str] | None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "p", "namespace": "team-a"}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {"containers": [{"name": "c"}]}}


#: (entry, pod, whether the API server sends its CREATE to the entry).
MATCH_CASES = [
    *(
        ("pod.confidential-pods.io", pod, sent)
        for pod, sent in [
            (_pod({CONFIDENTIAL: "true"}), True),
            (_pod({CONFIDENTIAL: "true", "other": "x"}), True),
            (_pod({CONFIDENTIAL: "false"}), False),
            # Sent, and refused by the webhook with a message (never created unchanged without a word).
            (_pod({CONFIDENTIAL: "True"}), True),
            (_pod({CONFIDENTIAL: "yes"}), True),
            (_pod({CONFIDENTIAL: "1"}), True),
            (_pod({CONFIDENTIAL: "False"}), True),
            (_pod({CONFIDENTIAL: ""}), True),
            (_pod({"confidential-pods.io/epc": "64Mi"}), False),
            (_pod({}), False),
            (_pod(None), False),
            (_pod(None, labels={CONFIDENTIAL: "true"}), False),
        ]
    ),
    *(
        ("namespace.confidential-pods.io", pod, sent)  # leaves out only opt-outs
        for pod, sent in [
            (_pod({CONFIDENTIAL: "false"}), False),
            (_pod({CONFIDENTIAL: "false", "other": "x"}), False),
            (_pod({CONFIDENTIAL: "true"}), True),
            (_pod({CONFIDENTIAL: "True"}), True),  # sent, and refused by the webhook with a message
            (_pod({CONFIDENTIAL: "False"}), True),
            (_pod({CONFIDENTIAL: ""}), True),
            (_pod({"confidential-pods.io/epc": "64Mi"}), True),
            (_pod({}), True),
            (_pod(None), True),
            (_pod(None, labels={CONFIDENTIAL: "false"}), True),
        ]
    ),
]


@pytest.mark.parametrize(("entry_name", "pod", "expected"), MATCH_CASES)
def test_match_conditions(
    built: dict[str, list[Manifest]], entry_name: str, pod: dict[str, Any], expected: bool
) -> None:
    """Each entry's one matchCondition, evaluated with cel-python on sample pods (CREATE requests)."""
    entry = _entries(_configuration(built, "base"))[entry_name]
    assert len(entry["matchConditions"]) == 1
    assert sent(entry, pod) is expected


#: Values of the annotation, well and badly written (the last with a Cyrillic e).
VALUES = ["true", "false", "True", "TRUE", "False", "yes", "no", "1", "0", "on"]
VALUES += ["", " true", "true ", "tru\u0435"]


@pytest.mark.parametrize("namespace_opted_in", [False, True], ids=["pod-entry", "namespace-entry"])
@pytest.mark.parametrize("value", [*VALUES, None], ids=repr)
def test_entries_send_exactly_the_pods_the_webhook_answers(
    built: dict[str, list[Manifest]], namespace_opted_in: bool, value: str | None
) -> None:
    """The CEL condition of each entry sends a pod iff the webhook has something to say about it: it injects
    it or refuses it with a message. A pod the webhook would only skip is not sent (it never depends on the
    webhook); a pod the webhook would refuse is never left out (it is never created unchanged in silence)."""
    entry = _entries(_configuration(built, "base"))[
        "namespace.confidential-pods.io" if namespace_opted_in else "pod.confidential-pods.io"
    ]
    annotations = {} if value is None else {CONFIDENTIAL: value}
    try:
        answers = opt_in(annotations, namespace_opted_in=namespace_opted_in) is None  # injected
    except PodRefused:
        answers = True  # refused with the webhook's message
    assert sent(entry, _pod(annotations)) is answers
