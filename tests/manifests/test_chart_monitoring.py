"""The chart's optional monitoring objects: the Grafana dashboard as a ConfigMap for Grafana's sidecar and a
PrometheusRule whose alerts query only what the webhook and the extender export.

The exported families come from tests/test_dashboard.py's fixture (both apps built as ``serve`` builds them
and driven once through each verb); its PromQL reader takes each alert expression apart. ``namespace`` is
the one label an alert matches that no server exports: prometheus-operator's monitors add it to every
scraped series.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from tests.manifests.building import CHART_VALUES, NAMESPACE, Manifest, find, helm_template
from tests.test_dashboard import DASHBOARD, Exported, exported, read_query, sample_labels  # noqa: F401

#: Labels the scrape adds to every series (prometheus-operator's target labels).
TARGET_LABELS = frozenset({"namespace"})
#: ``spec`` of a PrometheusRule: the fields we use and the ones a user's patch most likely adds, written from
#: prometheus-operator's CRD (monitoring.coreos.com_prometheusrules.yaml, v0.93), misspellings refused.
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
PROMETHEUS_RULE_SPEC: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "groups": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": _DURATION,
                    "rules": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["expr"],
                            "properties": {
                                "alert": {"type": "string"},
                                "record": {"type": "string"},
                                "expr": {"type": "string", "minLength": 1},
                                "for": _DURATION,
                                "keep_firing_for": _DURATION,
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                            },
                        },
                    },
                },
            },
        }
    },
}
#: What the issue asks the alerts to cover, by alert name.
ALERTS = {
    "ConfidentialPodsWebhookUnavailable",
    "ConfidentialPodsWebhookRefusing",
    "ConfidentialPodsExtenderNotReady",
    "ConfidentialPodsEPCExhausted",
    "ConfidentialPodsCertificateExpiring",
}


@pytest.fixture(scope="module")
def monitored(helm: str) -> list[Manifest]:
    return helm_template(
        helm,
        *CHART_VALUES["azure"],
        "monitoring.enabled=true",
        "dashboard.enabled=true",
        "prometheusRule.enabled=true",
    )


def rules(objects: list[Manifest]) -> dict[str, dict[str, Any]]:
    rule = find(objects, "PrometheusRule", "confidential-pods")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def test_both_are_off_by_default(helm: str) -> None:
    kinds = {o["kind"] for o in helm_template(helm, *CHART_VALUES["azure"], "monitoring.enabled=true")}
    assert "PrometheusRule" not in kinds
    names = {o["metadata"]["name"] for o in helm_template(helm, *CHART_VALUES["azure"])}
    assert "confidential-pods-dashboard" not in names


def test_the_dashboard_is_a_configmap_the_grafana_sidecar_loads(helm: str, monitored: list[Manifest]) -> None:
    config_map = find(monitored, "ConfigMap", "confidential-pods-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"  # the sidecar's default label
    assert config_map["metadata"]["namespace"] == NAMESPACE
    (name,) = config_map["data"]
    assert name.endswith(".json")
    assert json.loads(config_map["data"][name]) == json.loads(DASHBOARD.read_text())
    # a sidecar that searches another namespace, with another label and a folder annotation
    elsewhere = helm_template(
        helm,
        *CHART_VALUES["azure"],
        "dashboard.enabled=true",
        "dashboard.namespace=monitoring",
        "dashboard.labels.grafana_dashboard=null",
        "dashboard.labels.dashboards=confidential",
        "dashboard.annotations.grafana_folder=SGX",
    )
    metadata = find(elsewhere, "ConfigMap", "confidential-pods-dashboard")["metadata"]
    assert metadata["namespace"] == "monitoring" and metadata["annotations"] == {"grafana_folder": "SGX"}
    assert (
        metadata["labels"]["dashboards"] == "confidential" and "grafana_dashboard" not in metadata["labels"]
    )


def test_the_rule_validates_and_covers_what_the_issue_names(monitored: list[Manifest]) -> None:
    rule = find(monitored, "PrometheusRule", "confidential-pods")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["namespace"] == NAMESPACE
    jsonschema.validate(rule["spec"], PROMETHEUS_RULE_SPEC)
    found = rules(monitored)
    assert set(found) == ALERTS
    for name, alert in found.items():
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_every_alert_queries_only_what_the_code_exports(
    monitored: list[Manifest],
    exported: Exported,  # noqa: F811
    alert: str,
) -> None:
    expr = rules(monitored)[alert]["expr"]
    query = read_query(expr)
    assert query.selectors, f"{alert}: no metric in {expr}"
    names = exported.everything()
    for selector in query.selectors:
        family = names.get(selector.metric)
        assert family is not None, f"{alert}: {selector.metric} is not exported (or not of that type)"
        assert "namespace" in selector.labels, (
            f"{alert}: {selector.metric} not limited to the release namespace"
        )
        labels = sample_labels(family, selector.metric) | TARGET_LABELS
        assert selector.labels <= labels, f"{alert}: {selector.metric} has labels {sorted(labels)}"
        assert query.grouping <= labels, f"{alert}: grouping by {sorted(query.grouping - labels)}"
    assert f'namespace="{NAMESPACE}"' in expr


def test_the_thresholds_are_values(helm: str) -> None:
    found = rules(
        helm_template(
            helm,
            *CHART_VALUES["azure"],
            "prometheusRule.enabled=true",
            "prometheusRule.certificateExpiryDays=10",
            "prometheusRule.epcFreeBytesThreshold=268435456",
            "prometheusRule.labels.release=kube-prometheus-stack",
        )
    )
    assert found["ConfidentialPodsCertificateExpiring"]["expr"].rstrip().endswith("< 10")
    assert found["ConfidentialPodsEPCExhausted"]["expr"].rstrip().endswith("< 268435456")
    assert "256Mi" in found["ConfidentialPodsEPCExhausted"]["annotations"]["summary"]
