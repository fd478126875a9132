"""HTTP behaviour of the webhook app with the flask test client."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest
from flask.testing import FlaskClient

from confidential_pods.settings import settings_from_mapping
from tests.webhook.samples import CONFIDENTIAL, admission_review, meshed_pod, pod, realistic_pod
from webhook.app import MAX_BODY, create_app


@pytest.fixture
def client() -> FlaskClient:
    settings = settings_from_mapping(
        {"aesm": "host", "runtimeClass": "none", "ownNamespace": "confidential-pods"}
    )
    return create_app(settings).test_client()


def _patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["patchType"] == "JSONPatch"
    patch: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return patch


@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_mutates_opted_in_pod_and_answers_in_the_version_asked(client: FlaskClient, api_version: str) -> None:
    original = realistic_pod()
    review = admission_review(original, api_version=api_version, uid="b0a5c3c8-1f4e-4c1e-9c55-5d0c3f1a2b3c")
    answer = client.post("/mutate", json=review)
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    body = answer.get_json()
    assert body["apiVersion"] == api_version and body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == "b0a5c3c8-1f4e-4c1e-9c55-5d0c3f1a2b3c" and response["allowed"] is True
    mutated = jsonpatch.apply_patch(original, _patch(response))
    assert mutated["spec"]["containers"][0]["resources"]["limits"]["alibabacloud.com/sgx_epc_MiB"] == "64"


def test_mutates_the_benchmarks_meshed_pod_in_its_enclave_container_only(client: FlaskClient) -> None:
    original = meshed_pod()
    response = client.post("/mutate", json=admission_review(original, namespace="payments")).get_json()[
        "response"
    ]
    mutated = jsonpatch.apply_patch(original, _patch(response))
    app, proxy, shipper = mutated["spec"]["containers"]
    assert app["resources"]["limits"]["alibabacloud.com/sgx_epc_MiB"] == "128"
    assert (proxy, shipper) == tuple(original["spec"]["containers"][1:])


def test_pod_endpoint_ignores_pods_without_annotation(client: FlaskClient) -> None:
    response = client.post("/mutate", json=admission_review(pod())).get_json()["response"]
    assert response["allowed"] is True and "patch" not in response and "patchType" not in response


def test_namespace_endpoint_mutates_unless_opted_out(client: FlaskClient) -> None:
    response = client.post("/mutate/namespace", json=admission_review(pod())).get_json()["response"]
    assert response["allowed"] is True and _patch(response)
    opted_out = pod(annotations={"confidential-pods.io/confidential": "false"})
    response = client.post("/mutate/namespace", json=admission_review(opted_out)).get_json()["response"]
    assert response == {"uid": response["uid"], "allowed": True}


def test_denial_carries_message_and_code(client: FlaskClient) -> None:
    bad = pod(annotations={**CONFIDENTIAL, "confidential-pods.io/epc": "lots"})
    response = client.post("/mutate", json=admission_review(bad)).get_json()["response"]
    assert response["allowed"] is False and "patch" not in response
    assert response["status"]["code"] == 403
    assert "confidential-pods.io/epc" in response["status"]["message"]


def test_warnings_are_returned(client: FlaskClient) -> None:
    odd = pod(annotations={**CONFIDENTIAL, "confidential-pods.io/epc": "100M"})
    response = client.post("/mutate", json=admission_review(odd)).get_json()["response"]
    assert any("rounded up" in w for w in response["warnings"])


@pytest.mark.parametrize(
    "review",
    [
        admission_review(pod(annotations=CONFIDENTIAL), kind="Service"),
        admission_review(pod(annotations=CONFIDENTIAL), kind="Deployment", group="apps"),
        admission_review(pod(annotations=CONFIDENTIAL), operation="UPDATE"),
        admission_review(pod(annotations=CONFIDENTIAL), operation="DELETE"),
        admission_review(pod(annotations=CONFIDENTIAL), sub_resource="ephemeralcontainers"),
        admission_review(pod(annotations=CONFIDENTIAL), namespace="kube-system"),
        admission_review(pod(annotations=CONFIDENTIAL), namespace="kube-public"),
        admission_review(pod(annotations=CONFIDENTIAL), namespace="kube-node-lease"),
        admission_review(pod(annotations=CONFIDENTIAL), namespace="confidential-pods"),
    ],
    ids=[
        "service",
        "deployment",
        "update",
        "delete",
        "subresource",
        "kube-system",
        "kube-public",
        "lease",
        "own",
    ],
)
@pytest.mark.parametrize("endpoint", ["/mutate", "/mutate/namespace"])
def test_requests_that_are_not_ours_are_allowed_untouched(
    client: FlaskClient, review: dict[str, Any], endpoint: str
) -> None:
    answer = client.post(endpoint, json=review)
    assert answer.status_code == 200
    assert answer.get_json()["response"] == {"uid": review["request"]["uid"], "allowed": True}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "no request"),
        (b'{"request": {"kind": {"kind": "Pod"}}}', "no uid"),
        (b'{"request": {"uid": ""}}', "no uid"),
        (b'{"apiVersion": "admission.k8s.io/v2", "request": {"uid": "x"}}', "apiVersion"),
        (b'{"kind": "ConversionReview", "request": {"uid": "x"}}', "AdmissionReview"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_malformed_bodies_are_400_with_json(client: FlaskClient, body: bytes, fragment: str) -> None:
    answer = client.post("/mutate", data=body, content_type="application/json")
    assert answer.status_code == 400
    assert fragment in answer.get_json()["error"]


def test_object_that_is_not_a_pod_is_refused_with_uid(client: FlaskClient) -> None:
    review = admission_review("a string")
    response = client.post("/mutate", json=review).get_json()["response"]
    assert response["uid"] == review["request"]["uid"] and response["allowed"] is False
    assert response["status"]["code"] == 400


def test_body_over_3_mib_is_413(client: FlaskClient) -> None:
    answer = client.post("/mutate", data=b" " * (MAX_BODY + 1), content_type="application/json")
    assert answer.status_code == 413 and "larger" in answer.get_json()["error"]


def test_unknown_path_and_method(client: FlaskClient) -> None:
    assert client.get("/nope").status_code == 404
    assert client.get("/nope").get_json()["code"] == 404
    assert client.get("/mutate").status_code == 405


def test_health_readiness_and_metrics(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    client.post("/mutate", json=admission_review(pod(annotations=CONFIDENTIAL)))
    text = client.get("/metrics").get_data(as_text=True)
    assert 'confidential_pods_webhook_reviews_total{endpoint="/mutate",outcome="mutated"}' in text
    assert "confidential_pods_webhook_review_duration_seconds_bucket" in text


def test_readiness_follows_the_shell() -> None:
    state = {"ready": False}
    app = create_app(settings_from_mapping({}), ready=lambda: state["ready"])
    assert app.test_client().get("/readyz").status_code == 503
    state["ready"] = True
    assert app.test_client().get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("config", "key"),
    [
        pytest.param({"runtimeClass": "runv"}, "aesmSidecarImage", id="sandbox-without-image"),
        pytest.param({"aesm": "sidecar"}, "aesmSidecarImage", id="aesm-sidecar-without-image"),
        pytest.param({"quote": "in-process"}, "dcap.pccsUrl", id="in-process-without-pccs"),
    ],
)
def test_an_incomplete_configuration_is_unready_with_the_key_whatever_the_shell_says(
    config: dict[str, str], key: str
) -> None:
    app = create_app(settings_from_mapping(config), ready=lambda: True)
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json()["reason"].startswith(f"configuration incomplete: {key}: ")
    assert app.test_client().get("/healthz").status_code == 200  # liveness: no restart loop
    complete = create_app(settings_from_mapping({**config, "aesmSidecarImage": "r.example/aesmd:1",
                                                  "dcap": {"pccsUrl": "https://pccs.example/"}}))  # fmt: skip
    assert complete.test_client().get("/readyz").status_code == 200


def test_internal_error_fails_closed_with_uid(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr("webhook.app.mutate", broken)
    review = admission_review(pod(annotations=CONFIDENTIAL))
    answer = client.post("/mutate", json=review)
    assert answer.status_code == 200
    response = answer.get_json()["response"]
    assert response["allowed"] is False and response["uid"] == review["request"]["uid"]
    assert response["status"]["code"] == 500


def test_namespace_taken_from_the_object_when_the_request_has_none(client: FlaskClient) -> None:
    review = admission_review(pod(annotations=CONFIDENTIAL))
    del review["request"]["namespace"]
    review["request"]["object"]["metadata"]["namespace"] = "kube-system"
    assert client.post("/mutate", json=review).get_json()["response"] == {
        "uid": review["request"]["uid"],
        "allowed": True,
    }
