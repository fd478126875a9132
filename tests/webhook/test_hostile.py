"""Hostile and careless input to the webhook: every case a refusal or a 400, quickly, never a 500.

Each case here was reproduced against the webhook before the fix (a pinned thread, a 500, an internal
error, a value kept that the webhook must own); see the security issue and docs/security.md.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
from flask.testing import FlaskClient

from confidential_pods.settings import Settings, settings_from_mapping
from tests.test_quantities import HOSTILE
from tests.webhook.samples import CONFIDENTIAL, admission_review, container, pod
from webhook.app import create_app
from webhook.policy import mutate

HOST = {"aesm": "host", "runtimeClass": "none"}
ALI = "alibabacloud.com/sgx_epc_MiB"
INTEL_EPC = "sgx.intel.com/epc"
ENCLAVE = "sgx.intel.com/enclave"


def settings(**keys: Any) -> Settings:
    return settings_from_mapping({**HOST, **keys})


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    return create_app(settings()).test_client()


def review_of(client: FlaskClient, obj: Any, **fields: Any) -> dict[str, Any]:
    review = admission_review(obj)
    review["request"].update(fields)
    answer = client.post("/mutate", json=review)
    assert answer.status_code == 200, answer.get_data()
    response: dict[str, Any] = answer.get_json()["response"]
    assert response["uid"] == review["request"]["uid"]
    return response


# --- quantities -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_epc_annotation_is_refused_quickly_naming_the_value(client: FlaskClient, value: str) -> None:
    started = time.perf_counter()
    response = review_of(client, pod(annotations={**CONFIDENTIAL, "confidential-pods.io/epc": value}))
    assert time.perf_counter() - started < 0.5  # a guard against a hang (1e999999 took ~35 s)
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert "confidential-pods.io/epc" in response["status"]["message"]
    assert repr(value[:24])[:-1] in response["status"]["message"]


@pytest.mark.parametrize("value", ["1e99999999", "9223372036854775807Ei", "1e5000", "1.5", "6_4", " 64"])
@pytest.mark.parametrize("where", ["requests", "limits", "init", "overhead"])
def test_hostile_epc_resource_values_are_refused_naming_the_field(
    client: FlaskClient, value: str, where: str
) -> None:
    if where == "overhead":
        target = pod(annotations=CONFIDENTIAL, overhead={ALI: value})
        field = "spec.overhead"
    elif where == "init":
        target = pod(annotations=CONFIDENTIAL, init=[container("setup", resources={"limits": {ALI: value}})])
        field = "spec.initContainers[0]"
    else:
        target = pod(annotations=CONFIDENTIAL, containers=[container("app", resources={where: {ALI: value}})])
        field = "container app"
    started = time.perf_counter()
    response = review_of(client, target)
    assert time.perf_counter() - started < 0.5
    assert response["allowed"] is False, response
    message = response["status"]["message"]
    assert field in message and repr(value)[:-1] in message


def test_json_number_too_long_for_python_is_a_400(client: FlaskClient) -> None:
    review = admission_review(pod(annotations=CONFIDENTIAL))
    text = json.dumps(review).replace('"image": "registry.example/app:1.0"', '"image": ' + "9" * 5000)
    answer = client.post("/mutate", data=text, content_type="application/json")
    assert answer.status_code == 400 and "not JSON" in answer.get_json()["error"]


def test_huge_json_number_as_a_quantity_is_refused(client: FlaskClient) -> None:
    big = 10**4000  # below Python's 4,300-digit limit: decodes, and must not be turned into text
    target = pod(annotations=CONFIDENTIAL, containers=[container("app", resources={"limits": {ALI: big}})])
    started = time.perf_counter()
    response = review_of(client, target)
    assert time.perf_counter() - started < 0.5
    assert response["allowed"] is False and "bit number" in response["status"]["message"]


# --- shapes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"volumes": {}}, "spec.volumes must be a list"),
        ({"volumes": 5}, "spec.volumes must be a list"),
        ({"volumes": "abc"}, "spec.volumes must be a list"),
        ({"volumes": ["abc"]}, "spec.volumes[0] must be an object"),
        ({"tolerations": {"key": "x"}}, "spec.tolerations must be a list"),
        ({"runtimeClassName": ["kata"]}, "spec.runtimeClassName must be a string"),
        ({"schedulerName": 7}, "spec.schedulerName must be a string"),
        ({"hostNetwork": "yes"}, "spec.hostNetwork must be true or false"),
        ({"overhead": [1]}, "spec.overhead must be an object"),
        ({"containers": {"name": "app"}}, "spec.containers must be a list"),
        ({"containers": [{"name": "app", "env": {}}]}, "spec.containers[0].env must be a list"),
        ({"containers": [{"name": "app", "env": [1]}]}, "spec.containers[0].env[0] must be an object"),
        ({"containers": [{"name": "app", "volumeMounts": "x"}]}, "spec.containers[0].volumeMounts"),
        ({"containers": [{"name": "app", "resources": []}]}, "spec.containers[0].resources must be"),
        ({"containers": [{"name": "app", "resources": {"limits": 3}}]}, "resources.limits must be an object"),
        ({"containers": [{"name": "app", "securityContext": 1}]}, "securityContext must be an object"),
        ({"containers": [{"name": "app", "restartPolicy": 1}]}, "restartPolicy must be a string"),
        ({"containers": [{"name": "a"}, {"name": "a"}]}, "used by two containers"),
        ({"initContainers": "x", "containers": [{"name": "a"}]}, "spec.initContainers must be a list"),
    ],
)
def test_wrong_json_types_are_refused_naming_the_field(
    client: FlaskClient, spec: dict[str, Any], field: str
) -> None:
    target = pod(annotations=CONFIDENTIAL)
    target["spec"].update(spec)
    response = review_of(client, target)
    assert response["allowed"] is False and field in response["status"]["message"], response


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"namespace": ["shop"]}, "request.namespace must be a string"),
        ({"namespace": {"a": 1}}, "request.namespace must be a string"),
        ({"operation": 1}, "request.operation must be a string"),
        ({"kind": "Pod"}, "request.kind must be an object"),
        ({"kind": {"kind": ["Pod"]}}, "request.kind.kind must be a string"),
        ({"subResource": []}, "request.subResource must be a string"),
    ],
)
def test_request_fields_of_the_wrong_type_are_refused(
    client: FlaskClient, fields: dict[str, Any], message: str
) -> None:
    response = review_of(client, pod(annotations=CONFIDENTIAL), **fields)
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert message in response["status"]["message"]


def test_object_namespace_of_the_wrong_type_does_not_crash(client: FlaskClient) -> None:
    target = pod(annotations=CONFIDENTIAL)
    target["metadata"]["namespace"] = ["kube-system"]
    response = review_of(client, target, namespace="")
    assert response["allowed"] is True  # judged by the pod itself, which is fine


@pytest.mark.parametrize("depth", [100_000, 20_000])
def test_deeply_nested_body_is_a_400(client: FlaskClient, depth: int) -> None:
    answer = client.post("/mutate", data=b"[" * depth, content_type="application/json")
    assert answer.status_code == 400 and "nested too deeply" in answer.get_json()["error"]


def test_deeply_nested_pod_field_is_answered(client: FlaskClient) -> None:
    deep: Any = "x"
    for _ in range(500):
        deep = [deep]
    target = pod(annotations=CONFIDENTIAL, containers=[container("app", args=deep)])
    response = review_of(client, {}, object=target)  # (the sample helper's deepcopy would recurse)
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"


# --- accounting: one effective-EPC count -----------------------------------------------------------


def test_max_epc_counts_the_effective_request_not_the_sum() -> None:
    # An init container runs before the app: the pod needs max(100, 100) MiB, not 200 MiB.
    original = pod(
        annotations={**CONFIDENTIAL, "confidential-pods.io/containers": "setup,app"},
        init=[container("setup")],
    )
    mutation = mutate(
        original,
        namespace_opted_in=False,
        settings=settings(defaultEPC="100Mi", maxEPCPerPod="150Mi", profile="intel"),
    )
    assert mutation.outcome == "mutated", mutation.message
    result = jsonpatch.apply_patch(original, [dict(op) for op in mutation.patch])
    assert result["metadata"]["annotations"][INTEL_EPC] == "100Mi"
    status = json.loads(result["metadata"]["annotations"]["confidential-pods.io/status"])
    assert status["epcBytes"] == 100 * 2**20


def test_effective_request_includes_overhead() -> None:
    original = pod(annotations=CONFIDENTIAL, overhead={INTEL_EPC: "8Mi"})
    mutation = mutate(original, namespace_opted_in=False, settings=settings(profile="intel"))
    result = jsonpatch.apply_patch(original, [dict(op) for op in mutation.patch])
    assert result["metadata"]["annotations"][INTEL_EPC] == "72Mi"


# --- intel: values the user already wrote -----------------------------------------------------------


def test_intel_pod_annotation_is_owned_by_the_webhook() -> None:
    original = pod(annotations={**CONFIDENTIAL, INTEL_EPC: "64Gi"})
    mutation = mutate(original, namespace_opted_in=False, settings=settings(profile="intel"))
    assert mutation.outcome == "mutated"
    result = jsonpatch.apply_patch(original, [dict(op) for op in mutation.patch])
    assert result["metadata"]["annotations"][INTEL_EPC] == "64Mi"
    assert any("64Gi replaced by 64Mi" in w for w in mutation.warnings)
    kubernetes_validate.validate(result, "1.33.0", strict=True)


def test_intel_enclave_request_is_completed_with_the_users_value() -> None:
    original = pod(
        annotations=CONFIDENTIAL, containers=[container("app", resources={"requests": {ENCLAVE: "2"}})]
    )
    mutation = mutate(original, namespace_opted_in=False, settings=settings(profile="intel"))
    result = jsonpatch.apply_patch(original, [dict(op) for op in mutation.patch])
    resources = result["spec"]["containers"][0]["resources"]
    assert resources["requests"][ENCLAVE] == resources["limits"][ENCLAVE] == "2"


def test_intel_enclave_request_and_limit_must_agree() -> None:
    disagreeing = {"requests": {ENCLAVE: "2"}, "limits": {ENCLAVE: "1"}}
    original = pod(annotations=CONFIDENTIAL, containers=[container("app", resources=disagreeing)])
    mutation = mutate(original, namespace_opted_in=False, settings=settings(profile="intel"))
    assert mutation.outcome == "denied"
    assert "request 2 differs from limit 1" in mutation.message and ENCLAVE in mutation.message


@pytest.mark.parametrize("value", ["1.1", "100m", "0.5"])
def test_intel_fractional_epc_bytes_are_refused(value: str) -> None:
    original = pod(
        annotations=CONFIDENTIAL, containers=[container("app", resources={"limits": {INTEL_EPC: value}})]
    )
    mutation = mutate(original, namespace_opted_in=False, settings=settings(profile="intel"))
    assert mutation.outcome == "denied"
    assert "container app" in mutation.message and "not a whole number" in mutation.message
