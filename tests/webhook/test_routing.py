"""``/route`` (config routeEPCPods): pods requesting EPC without opting in get the confidential scheduler."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest

from confidential_pods.settings import Settings, settings_from_mapping
from tests.webhook.samples import admission_review, container, pod
from webhook.app import create_app
from webhook.routing import route

EPC = "alibabacloud.com/sgx_epc_MiB"
ROUTING = {"routeEPCPods": True, "schedulerName": "confidential-scheduler",
           "preemptingSchedulerName": "confidential-scheduler-preempting"}  # fmt: skip


def settings(**extra: Any) -> Settings:
    return settings_from_mapping({**ROUTING, **extra})


def epc_pod(
    annotations: dict[str, str] | None = None, *, where: str = "limits", **spec: Any
) -> dict[str, Any]:
    return pod(annotations=annotations, containers=[container("app", resources={where: {EPC: "16"}})], **spec)


def routed(obj: dict[str, Any], config: Settings | None = None) -> dict[str, Any]:
    mutation = route(obj, settings=config or settings())
    assert mutation.allowed
    return jsonpatch.apply_patch(obj, list(mutation.patch)) if mutation.patch else obj


@pytest.mark.parametrize("where", ["limits", "requests"])
def test_an_epc_pod_that_did_not_opt_in_gets_the_confidential_scheduler(where: str) -> None:
    original = epc_pod(where=where)
    mutation = route(original, settings=settings())
    assert mutation.outcome == "mutated"
    assert list(mutation.patch) == [
        {"op": "add", "path": "/spec/schedulerName", "value": "confidential-scheduler"}
    ]
    assert "without opting in" in mutation.warnings[0] and "confidential-scheduler" in mutation.warnings[0]
    # Nothing else: no EPC, AESM, RuntimeClass or annotation is injected.
    after = routed(original)
    assert {k: v for k, v in after["spec"].items() if k != "schedulerName"} == original["spec"]
    assert after["metadata"] == original["metadata"]


def test_epc_only_in_a_native_sidecar_counts() -> None:
    sidecar = container("aesmd", restartPolicy="Always", resources={"limits": {EPC: "8"}})
    assert routed(pod(init=[sidecar]))["spec"]["schedulerName"] == "confidential-scheduler"


def test_a_pod_that_may_preempt_gets_the_preempting_profile() -> None:
    assert routed(epc_pod(priority=1000))["spec"]["schedulerName"] == "confidential-scheduler-preempting"
    never = epc_pod(priority=1000, preemptionPolicy="Never")
    assert routed(never)["spec"]["schedulerName"] == "confidential-scheduler"


@pytest.mark.parametrize(
    ("obj", "outcome"),
    [
        (epc_pod({"confidential-pods.io/confidential": "true"}), "skipped"),  # the injecting entry's
        (epc_pod({"confidential-pods.io/status": "{}"}), "skipped"),
        (pod(), "skipped"),  # no EPC
        (pod(containers=[container("app", resources={"limits": {"sgx.intel.com/epc": "1Mi"}})]), "skipped"),
        (epc_pod(schedulerName="volcano"), "unchanged"),  # the pod chose its scheduler
        (epc_pod(schedulerName="confidential-scheduler"), "unchanged"),
        ({"metadata": [], "spec": "junk"}, "unchanged"),  # unreadable: left to the API server, never refused
        ({**epc_pod(), "spec": {**epc_pod()["spec"], "volumes": "junk"}}, "unchanged"),
    ],
)
def test_left_alone(obj: dict[str, Any], outcome: str) -> None:
    mutation = route(obj, settings=settings())
    assert (mutation.outcome, mutation.patch, mutation.allowed) == (outcome, (), True)


def test_opted_out_pod_in_an_enabled_namespace_is_routed() -> None:
    opted_out = epc_pod({"confidential-pods.io/confidential": "false"})
    assert routed(opted_out)["spec"]["schedulerName"] == "confidential-scheduler"


def test_off_unless_configured() -> None:
    config = settings_from_mapping({"schedulerName": "confidential-scheduler"})
    assert config.route_epc_pods is False
    assert route(epc_pod(), settings=config).outcome == "skipped"
    no_scheduler = settings_from_mapping({"routeEPCPods": True})
    assert route(epc_pod(), settings=no_scheduler).outcome == "unchanged"


def test_the_configured_epc_resource_decides() -> None:
    config = settings(profile="azure", epcResource="sgx.intel.com/epc")
    intel_named = pod(containers=[container("app", resources={"limits": {"sgx.intel.com/epc": "16"}})])
    assert routed(intel_named, config)["spec"]["schedulerName"] == "confidential-scheduler"
    assert route(epc_pod(), settings=config).outcome == "skipped"  # alibaba's name is not this cluster's


def test_route_endpoint_answers_with_the_patch_and_warning() -> None:
    client = create_app(settings()).test_client()
    answer = client.post("/route", json=admission_review(epc_pod()))
    response = answer.get_json()["response"]
    assert answer.status_code == 200 and response["allowed"] is True
    patch = json.loads(base64.b64decode(response["patch"]))
    assert patch == [{"op": "add", "path": "/spec/schedulerName", "value": "confidential-scheduler"}]
    assert "without opting in" in response["warnings"][0]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'confidential_pods_webhook_reviews_total{endpoint="/route",outcome="mutated"} 1.0' in metrics


def test_route_endpoint_never_refuses_a_pod() -> None:
    client = create_app(settings()).test_client()
    hostile = epc_pod({"confidential-pods.io/epc": "1e99999999"}, hostNetwork=True)
    response = client.post("/route", json=admission_review(hostile)).get_json()["response"]
    assert response["allowed"] is True
