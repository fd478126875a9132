"""``PostsFirst`` (confidential_pods.endpoints) in the webhook: reviews answered in front of flask give what
flask's view of the same endpoint gives, byte for byte, and are counted once.

A review's POST with a ``Content-Length`` is answered by the middleware; the same request sent chunked goes
through flask. Both must give the same status, headers and body for every kind of answer (mutated,
unchanged, skipped, denied, malformed, an internal error of the policy, an unhandled exception).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flask import Flask

from confidential_pods.settings import settings_from_mapping
from tests.webhook.samples import CONFIDENTIAL, admission_review, pod, realistic_pod
from tests.wsgi import both, call
from webhook import app as webhook_app
from webhook.app import create_app
from webhook.metrics import WebhookMetrics

SETTINGS = {"aesm": "host", "runtimeClass": "none", "ownNamespace": "confidential-pods"}


def make_app(metrics: WebhookMetrics | None = None) -> Flask:
    return create_app(settings_from_mapping(SETTINGS), metrics=metrics)


def review(obj: Any, **fields: Any) -> bytes:
    return json.dumps(admission_review(obj, uid="5f1c2a7e-4b1d-4c39-9a8e-0d2b7c3e4f51", **fields)).encode()


CASES = {
    "mutated": ("/mutate", review(realistic_pod())),
    "namespace-opted-in": ("/mutate/namespace", review(pod())),
    "unchanged": ("/mutate", review(pod())),
    "skipped-not-a-pod": ("/mutate", review(pod(annotations=CONFIDENTIAL), kind="Service")),
    "denied": ("/mutate", review(pod(annotations={**CONFIDENTIAL, "confidential-pods.io/epc": "lots"}))),
    "route": ("/route", review(realistic_pod())),
    "v1beta1": ("/mutate", review(realistic_pod(), api_version="admission.k8s.io/v1beta1")),
    "not-json": ("/mutate", b"not json"),
    "deep": ("/mutate", b"[" * 100_000),
    "empty": ("/mutate", b""),
    "no-request": ("/mutate", b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}'),
}


@pytest.mark.parametrize(("path", "body"), list(CASES.values()), ids=list(CASES))
def test_the_middleware_answers_as_flask_does(path: str, body: bytes) -> None:
    mine, flasks = both(make_app(), path, body)
    assert mine == flasks


def test_each_review_is_counted_once_by_outcome() -> None:
    metrics = WebhookMetrics()
    app = make_app(metrics)
    for chunked in (False, True):
        for path, body in (CASES["mutated"], CASES["denied"], CASES["not-json"]):
            call(app, path, body, chunked=chunked)
    text = metrics.render()[0].decode()
    for outcome in ("mutated", "denied", "malformed"):
        assert (
            f'confidential_pods_webhook_reviews_total{{endpoint="/mutate",outcome="{outcome}"}} 2.0' in text
        )


def test_an_error_of_the_policy_is_a_refusal_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(webhook_app, "admit", broken)
    mine, flasks = both(make_app(), *CASES["mutated"])
    assert mine == flasks
    response = json.loads(mine[2])["response"]
    assert response["allowed"] is False and response["status"]["code"] == 500


def test_an_unhandled_exception_is_a_logged_500_in_the_apps_error_shape(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(body: bytes) -> None:
        raise RuntimeError("a bug before the review was read")

    monkeypatch.setattr(webhook_app, "parse_review", broken)
    app = make_app()
    with caplog.at_level(logging.ERROR):
        status, headers, data = call(app, *CASES["mutated"])
    assert status == "500 INTERNAL SERVER ERROR" and headers["Content-Type"] == "application/json"
    assert json.loads(data)["code"] == 500
    assert json.loads(data)["error"].startswith("The server encountered an internal error")
    assert any(r.exc_info for r in caplog.records)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # flask's own handling of the same failure: the same answer
    assert call(app, *CASES["mutated"], chunked=True)[0::2] == (status, data)


def test_a_review_with_a_content_length_never_reaches_flask(monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()

    def dispatch() -> None:
        raise AssertionError("reached flask")

    monkeypatch.setattr(app, "full_dispatch_request", dispatch)
    for path in ("/mutate", "/mutate/namespace", "/route"):
        assert call(app, path, review(realistic_pod()))[0] == "200 OK", path
    assert call(app, "/mutate", review(realistic_pod()), chunked=True)[0] == "500 INTERNAL SERVER ERROR"


def test_what_is_not_a_reviews_post_within_the_limit_goes_to_flask() -> None:
    app = make_app()
    body = review(realistic_pod())
    assert call(app, "/mutate", b"", method="GET")[0].startswith("405")
    assert call(app, "/mutate/", body)[0].startswith(("404", "308"))  # not the exact path: flask's routing
    app.config["MAX_CONTENT_LENGTH"] = 1024
    status, _, data = call(app, "/mutate", body)
    assert status.startswith("413") and json.loads(data) == {
        "error": "body larger than 1024 bytes",
        "code": 413,
    }
    assert call(app, "/readyz", b"", method="GET")[0].startswith("200")
