"""components/servicemonitor: a prometheus-operator ServiceMonitor for the webhook, in no overlay by default.

Built the way docs/metrics.md tells users to add it (an overlay plus the component), then checked: the
component adds that one object and changes nothing else; the object is valid against the part of
prometheus-operator's CRD we use; and it points where the webhook really serves its metrics — the
Service and its HTTPS port, the CA bundle of the Secret the webhook mounts, a server name the serving
certificate is issued for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest

from certs.authority import service_names
from tests.manifests.building import MANIFESTS, Manifest, build_with_components, containers, find

COMPONENT = MANIFESTS / "components" / "servicemonitor"

# monitoring.coreos.com/v1 is not in the Kubernetes OpenAPI schema. The subset of ServiceMonitor we use (and
# the fields a user's patch most likely adds), written from prometheus-operator's CRD
# (example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml, v0.93), with
# additionalProperties false so a misspelt field fails like a strict OpenAPI check. `scheme` keeps the
# lower-case values older operators accept too.
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_KEY_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["key"],
    "properties": {"name": {"type": "string"}, "key": {"type": "string"}, "optional": {"type": "boolean"}},
}
#: What a scrape endpoint of either monitor says (plus ``tlsConfig`` for a ServiceMonitor's).
_ENDPOINT: dict[str, Any] = {
    "port": {"type": "string"},
    "scheme": {"enum": ["http", "https"]},
    "path": {"type": "string"},
    "interval": _DURATION,
    "scrapeTimeout": _DURATION,
    "honorLabels": {"type": "boolean"},
}
#: ``spec`` of a ServiceMonitor.
SERVICE_MONITOR_SPEC: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["endpoints", "selector"],
    "properties": {
        "jobLabel": {"type": "string"},
        "namespaceSelector": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "any": {"type": "boolean"},
                "matchNames": {"type": "array", "items": {"type": "string"}},
            },
        },
        "selector": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
        },
        "endpoints": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    **_ENDPOINT,
                    "tlsConfig": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "ca": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"secret": _KEY_SELECTOR, "configMap": _KEY_SELECTOR},
                            },
                            "serverName": {"type": "string"},
                            "insecureSkipVerify": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}


#: ``spec`` of a PodMonitor (the same CRD family, monitoring.coreos.com_podmonitors.yaml).
POD_MONITOR_SPEC: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["podMetricsEndpoints", "selector"],
    "properties": {
        "jobLabel": {"type": "string"},
        "selector": SERVICE_MONITOR_SPEC["properties"]["selector"],
        "podMetricsEndpoints": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "object", "additionalProperties": False, "properties": _ENDPOINT},
        },
    },
}


def validate(monitor: Manifest) -> None:
    """apiVersion, kind and metadata of a ServiceMonitor or PodMonitor; ``spec`` by its schema above."""
    schemas = {"ServiceMonitor": SERVICE_MONITOR_SPEC, "PodMonitor": POD_MONITOR_SPEC}
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] in schemas
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert {"name", "namespace"} <= set(monitor["metadata"]) <= {"name", "namespace", "labels", "annotations"}
    jsonschema.validate(monitor["spec"], schemas[monitor["kind"]])


def with_component(kustomize: str, directory: Path, overlay: str) -> list[Manifest]:
    """``overlay`` plus the component, as docs/metrics.md shows."""
    return build_with_components(kustomize, overlay, ["servicemonitor"], directory)


def test_no_build_includes_it(built: dict[str, list[Manifest]]) -> None:
    for name, objects in built.items():
        assert not [o for o in objects if o["kind"] in ("ServiceMonitor", "PodMonitor")], name


def test_a_misspelt_field_is_caught() -> None:
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"selector": {}, "endpoints": [{"port": "https", "tlsConfig": {"insecureSkipVerfy": True}}]},
    }
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


@pytest.mark.parametrize(
    "overlay", ["alibaba", "cert-manager"]
)  # certificates from our Job, from cert-manager
def test_scrapes_the_webhook_over_verified_https(
    kustomize: str, built: dict[str, list[Manifest]], tmp_path: Path, overlay: str
) -> None:
    objects = with_component(kustomize, tmp_path, overlay)
    monitor = find(objects, "ServiceMonitor", "confidential-pods-webhook")
    pods = find(objects, "PodMonitor", "confidential-scheduler-extender")
    assert [o for o in objects if o not in (monitor, pods)] == built[overlay]  # adds two, changes nothing
    validate(monitor)

    service = find(objects, "Service", "confidential-pods-webhook")
    namespace = service["metadata"]["namespace"]
    assert monitor["metadata"]["namespace"] == namespace  # selects Services (and reads Secrets) of its own
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    deployment = find(objects, "Deployment", "confidential-pods-webhook")
    ((pod_spec, webhook),) = list(containers(deployment))
    (container_port,) = [p for p in webhook["ports"] if p["name"] == port["targetPort"]]
    assert f"--port={container_port['containerPort']}" in webhook["args"]
    assert any(arg.startswith("--cert=") for arg in webhook["args"])  # that port is TLS
    assert (endpoint["scheme"], endpoint["path"]) == ("https", "/metrics")

    tls = endpoint["tlsConfig"]
    assert "insecureSkipVerify" not in tls
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert tls["ca"]["secret"] == {"name": volumes["tls"]["secret"]["secretName"], "key": "ca.crt"}
    (webhook_config,) = [o for o in objects if o["kind"] == "MutatingWebhookConfiguration"]
    dialled = {
        f"{w['clientConfig']['service']['name']}.{w['clientConfig']['service']['namespace']}.svc"
        for w in webhook_config["webhooks"]
    }
    assert dialled == {tls["serverName"]}  # the name the API server verifies too
    assert tls["serverName"] in issued_names(objects)


@pytest.mark.parametrize("overlay", ["alibaba", "intel", "azure"])
def test_scrapes_the_extenders_metrics_port_only(kustomize: str, tmp_path: Path, overlay: str) -> None:
    """The PodMonitor reaches the extender's metrics-only listener; its verbs stay on localhost."""
    objects = with_component(kustomize, tmp_path, overlay)
    monitor = find(objects, "PodMonitor", "confidential-scheduler-extender")
    validate(monitor)
    deployment = find(objects, "Deployment", "confidential-scheduler")
    assert monitor["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (extender,) = [c for _, c in containers(deployment) if c["name"] == "extender"]
    (port,) = [p for p in extender["ports"] if p["name"] == endpoint["port"]]
    assert f"--metrics-port={port['containerPort']}" in extender["args"]
    assert "--host=127.0.0.1" in extender["args"]  # the verbs' listener
    assert (endpoint["scheme"], endpoint["path"]) == ("http", "/metrics")


def issued_names(objects: list[Manifest]) -> tuple[str, ...]:
    """The DNS names the serving certificate carries: cert-manager's Certificate, or our certs Job's."""
    certificates = [o for o in objects if o["kind"] == "Certificate" and not o["spec"].get("isCA")]
    if certificates:
        (certificate,) = certificates
        names: tuple[str, ...] = tuple(certificate["spec"]["dnsNames"])
        return names
    job = find(objects, "Job", "confidential-pods-certs-install")
    ((_, certs),) = list(containers(job))
    flags = dict(
        arg.removeprefix("--").split("=", 1) for arg in certs["args"] if arg.startswith("--") and "=" in arg
    )
    return service_names(flags["service"], flags["namespace"])
