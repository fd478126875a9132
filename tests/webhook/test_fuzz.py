"""Fuzz of the review endpoints: never a 5xx, always a valid AdmissionReview answer or a 400."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from confidential_pods.settings import settings_from_mapping
from tests import fuzzing
from tests.webhook.samples import realistic_pod
from webhook.app import create_app

APP = create_app(
    settings_from_mapping(
        {
            "aesmSidecarImage": "registry.example/aesmd:1",
            "tolerations": [{"key": "sgx", "operator": "Exists"}],
        }
    )
).test_client()

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)

KEYS = ["confidential", "epc", "containers", "runtime-class", "aesm", "status", "epc.app", "epc.init", "epcx"]
annotation_values = st.sampled_from(
    [
        "true",
        "false",
        "yes",
        "64Mi",
        "0",
        "-1",
        "1e30",
        "app",
        "init,app",
        "ghost",
        "none",
        "host",
        "sidecar",
        "kata",
        "runv",
        "",
        "1.5Mi",
        "100M",
    ]
) | st.text(max_size=6)
opt_in = st.fixed_dictionaries(
    {"confidential-pods.io/confidential": st.sampled_from(["true", "true", "false", "yes"])}
)
annotations = st.builds(
    lambda a, b: {**a, **b},
    opt_in,
    st.dictionaries(
        st.sampled_from(KEYS).map(lambda k: "confidential-pods.io/" + k), annotation_values, max_size=5
    ),
)
resources = (
    st.dictionaries(
        st.sampled_from(["requests", "limits"]),
        st.dictionaries(
            st.sampled_from(["alibabacloud.com/sgx_epc_MiB", "cpu"]),
            st.sampled_from(["64", "32", "0", "x", "1Gi"]) | json_values,
            max_size=2,
        ),
        max_size=2,
    )
    | json_values
)
containers = st.fixed_dictionaries(
    {"name": st.sampled_from(["app", "init", "aesmd", "side"]) | json_values},
    optional={
        "resources": resources,
        "env": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["SGX_AESM_ADDR", "A"])}), max_size=2)
        | json_values,
        "volumeMounts": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["confidential-pods-aesmd-socket", "aesmd-socket", "v"]),
                    "mountPath": st.sampled_from(["/var/run/aesmd", "/var/run/aesmd/x", "/run", "/x"]),
                }
            ),
            max_size=2,
        )
        | json_values,
        "restartPolicy": st.just("Always"),
        "securityContext": st.fixed_dictionaries({"privileged": st.booleans()}) | json_values,
    },
)
pods = (
    st.fixed_dictionaries(
        {
            "metadata": st.fixed_dictionaries(
                {}, optional={"annotations": annotations | json_values, "name": st.text(max_size=5)}
            )
            | json_values,
            "spec": st.fixed_dictionaries(
                {},
                optional={
                    "containers": st.lists(containers, max_size=3) | json_values,
                    "initContainers": st.lists(containers, max_size=2) | json_values,
                    "volumes": st.lists(
                        st.fixed_dictionaries(
                            {"name": st.sampled_from(["confidential-pods-qcnl", "aesmd-socket", "v"])}
                        ),
                        max_size=2,
                    )
                    | json_values,
                    "runtimeClassName": st.sampled_from(["kata", "runc", "runv"]) | json_values,
                    "hostNetwork": st.booleans(),
                    "schedulerName": st.sampled_from(["default-scheduler", "other"]) | json_values,
                    "tolerations": st.lists(
                        st.fixed_dictionaries(
                            {"key": st.sampled_from(["sgx", "x"]), "operator": st.just("Exists")}
                        ),
                        max_size=2,
                    )
                    | json_values,
                },
            )
            | json_values,
        }
    )
    | json_values
)
valid_values = {
    "confidential-pods.io/epc": st.sampled_from(["64Mi", "1.5Mi", "100M", "1Gi"]),
    "confidential-pods.io/aesm": st.sampled_from(["host", "sidecar", "none"]),
    "confidential-pods.io/runtime-class": st.sampled_from(["none", "kata", "runv"]),
    "confidential-pods.io/containers": st.sampled_from(["app", "app,side"]),
}
valid_pods = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {
                "annotations": st.fixed_dictionaries(
                    {"confidential-pods.io/confidential": st.just("true")}, optional=valid_values
                )
            }
        ),
        "spec": st.fixed_dictionaries(
            {"containers": st.lists(containers, min_size=1, max_size=3, unique_by=lambda c: str(c["name"]))},
            optional={
                "schedulerName": st.just("default-scheduler"),
                "volumes": st.just([{"name": "data", "emptyDir": {}}]),
            },
        ),
    }
)
POD_KIND = {"group": "", "version": "v1", "kind": "Pod"}
requests = st.fixed_dictionaries(
    {
        "uid": st.text(min_size=1, max_size=8),
        "kind": st.just(POD_KIND) | st.just(POD_KIND) | json_values,
        "operation": st.sampled_from(["CREATE", "CREATE", "UPDATE"]) | json_values,
        "object": valid_pods | pods,
    },
    optional={
        "namespace": st.sampled_from(["shop", "kube-system"]) | json_values,
        "subResource": st.just("") | json_values,
    },
)
reviews = st.fixed_dictionaries(
    {"request": requests | json_values},
    optional={
        "apiVersion": st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]) | json_values,
        "kind": st.just("AdmissionReview") | json_values,
    },
)


def _check(endpoint: str, body: bytes, sent: Any) -> None:
    answer = APP.post(endpoint, data=body, content_type="application/json")
    assert answer.status_code in (200, 400), answer.status_code
    payload = answer.get_json()
    if answer.status_code == 400:
        assert isinstance(payload["error"], str)
        return
    assert payload["kind"] == "AdmissionReview"
    assert payload["apiVersion"] == sent.get("apiVersion", "admission.k8s.io/v1")
    response = payload["response"]
    assert response["uid"] == sent["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    assert ("patch" in response) == ("patchType" in response)
    event("patched" if "patch" in response else "allowed" if response["allowed"] else "denied")
    if not response["allowed"]:
        assert "patch" not in response and response["status"]["message"]
    if "patch" in response:
        operations = json.loads(base64.b64decode(response["patch"]))
        jsonpatch.apply_patch(sent["request"]["object"], operations)  # must apply cleanly


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(review=reviews, endpoint=st.sampled_from(["/mutate", "/mutate/namespace"]))
def test_structured_reviews(review: dict[str, Any], endpoint: str) -> None:
    _check(endpoint, json.dumps(review).encode(), review)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bodies(body: bytes) -> None:
    answer = APP.post("/mutate", data=body, content_type="application/json")
    assert answer.status_code in (200, 400)
    if answer.status_code == 200:
        sent = json.loads(body)
        assert answer.get_json()["response"]["uid"] == sent["request"]["uid"]


# --- hostile shapes (tests/fuzzing.py); benchmarks/fuzz_soak.py runs these for 10,000+ cases ---------

ALI = "alibabacloud.com/sgx_epc_MiB"
HOSTILE = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


def poisoned_review(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": POD_KIND,
            "operation": "CREATE",
            "namespace": "shop",
            "object": pod,
        },
    }


@HOSTILE
@given(pod=fuzzing.poisoned(realistic_pod(), ALI), endpoint=st.sampled_from(["/mutate", "/mutate/namespace"]))
def test_poisoned_pods(pod: dict[str, Any], endpoint: str) -> None:
    review = poisoned_review(pod)
    _check(endpoint, json.dumps(review).encode(), review)


def deep_body(depth: int, closed: bool, kind: str) -> bytes:
    opening, closing = ("[", "]") if kind == "list" else ('{"a":', "}")
    return (opening * depth + ("1" + closing * depth if closed else "")).encode()


@HOSTILE
@given(depth=st.integers(500, 200_000), closed=st.booleans(), kind=st.sampled_from(["list", "dict"]))
def test_deep_bodies(depth: int, closed: bool, kind: str) -> None:
    answer = APP.post("/mutate", data=deep_body(depth, closed, kind), content_type="application/json")
    assert answer.status_code == 400 and isinstance(answer.get_json()["error"], str)
