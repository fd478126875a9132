"""Namespaces' Pod Security levels: read, cached, unknown on failure; and the webhook's use of them."""

from __future__ import annotations

from typing import Any

import pytest

from confidential_pods.settings import settings_from_mapping
from tests.webhook.samples import CONFIDENTIAL, admission_review, pod
from webhook.app import create_app
from webhook.namespaces import NamespaceLevels, level_of


def namespace(labels: dict[str, str] | None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": labels or {}}}


@pytest.mark.parametrize(
    ("labels", "level"),
    [
        ({"pod-security.kubernetes.io/enforce": "restricted"}, "restricted"),
        ({"pod-security.kubernetes.io/enforce": "baseline"}, "baseline"),
        ({"pod-security.kubernetes.io/enforce": "privileged"}, "privileged"),
        ({"pod-security.kubernetes.io/warn": "restricted"}, None),  # warn/audit do not refuse
        ({"pod-security.kubernetes.io/enforce": "Restricted"}, None),  # not a level PSA knows
        (None, None),
    ],
)
def test_level_of(labels: dict[str, str] | None, level: str | None) -> None:
    assert level_of(namespace(labels)) == level


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_levels_are_cached_for_the_ttl_and_failures_briefly() -> None:
    calls: list[str] = []
    answers: dict[str, Any] = {"shop": namespace({"pod-security.kubernetes.io/enforce": "baseline"})}

    def fetch(name: str) -> Any:
        calls.append(name)
        if name not in answers:
            raise ConnectionError("apiserver unreachable")
        return answers[name]

    clock = Clock()
    levels = NamespaceLevels(fetch, clock=clock, ttl=30, failure_ttl=5)
    assert levels("shop") == "baseline" and levels("shop") == "baseline"
    assert calls == ["shop"]
    answers["shop"] = namespace({"pod-security.kubernetes.io/enforce": "restricted"})
    clock.now += 31
    assert levels("shop") == "restricted" and calls == ["shop", "shop"]
    assert levels("gone") is None and levels("gone") is None  # unknown, not retried at once
    assert calls.count("gone") == 1
    clock.now += 6
    assert levels("gone") is None and calls.count("gone") == 2


def test_webhook_refuses_host_socket_where_the_namespace_enforces_baseline() -> None:
    config = settings_from_mapping({"aesm": "host", "runtimeClass": "none"})
    app = create_app(config, namespace_level=lambda name: "baseline" if name == "shop" else None)
    review = admission_review(pod(annotations=CONFIDENTIAL), namespace="shop")
    response = app.test_client().post("/mutate", json=review).get_json()["response"]
    assert response["allowed"] is False and 'Pod Security level "baseline"' in response["status"]["message"]
    elsewhere = admission_review(pod(annotations=CONFIDENTIAL), namespace="other")
    assert app.test_client().post("/mutate", json=elsewhere).get_json()["response"]["allowed"] is True


def test_lookup_is_not_asked_for_requests_that_are_not_ours() -> None:
    asked: list[str] = []
    app = create_app(settings_from_mapping({}), namespace_level=lambda name: asked.append(name) or None)  # type: ignore[func-returns-value]
    app.test_client().post(
        "/mutate", json=admission_review(pod(annotations=CONFIDENTIAL), operation="UPDATE")
    )
    app.test_client().post(
        "/mutate", json=admission_review(pod(annotations=CONFIDENTIAL), namespace="kube-system")
    )
    assert asked == []
