"""The flask application: HTTP in, AdmissionReview out. A thin shell around webhook.admission.

A review's POST with a ``Content-Length`` within the limit — every review the apiserver sends — is answered by
:class:`~confidential_pods.endpoints.PostsFirst` in front of flask (as the extender's verbs are), with the one
wrapper of each endpoint (:func:`_responder`: parse, decide, time and count); a chunked or oversized body, the
probes and the metrics go through flask, so errors keep one shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, request

from confidential_pods.endpoints import Responder, handle_http_errors, json_text, probes, serve_posts
from confidential_pods.settings import Settings, incomplete
from webhook.admission import Decide, admit
from webhook.metrics import WebhookMetrics
from webhook.plan import PodSecurityLevel
from webhook.policy import mutate
from webhook.review import MalformedReview, build_review, parse_review
from webhook.routing import route

logger = logging.getLogger(__name__)

#: Largest AdmissionReview body accepted (the apiserver's own request limit is 3 MiB).
MAX_BODY = 3 * 1024 * 1024


def create_app(
    settings: Settings,
    *,
    ready: Callable[[], bool] = lambda: True,
    metrics: WebhookMetrics | None = None,
    namespace_level: Callable[[str], PodSecurityLevel | None] | None = None,
) -> Flask:
    """Build the webhook app. ``ready`` backs ``/readyz`` (the serving shell flips it while draining);
    ``namespace_level`` reads a namespace's Pod Security level (``webhook.namespaces``), if given.

    A configuration that leaves a key to set (``settings.incomplete``) keeps ``/readyz`` at 503 with the
    reason and ``/healthz`` at 200: no Service endpoint, so a rollout stops at the first such replica (the
    good ones keep serving) and the apiserver refuses opted-in pods itself (failurePolicy Fail); no
    restart loop."""
    app = Flask("confidential-pods-webhook")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    metrics = metrics if metrics is not None else WebhookMetrics()
    app.extensions["confidential_pods_metrics"] = metrics

    responders = {
        endpoint: _responder(endpoint, decide, settings, metrics)
        for endpoint, decide in _decisions(settings, namespace_level).items()
    }
    serve_posts(app, responders, _error)

    reason = incomplete(settings)
    app.register_blueprint(probes((lambda: False) if reason else ready, metrics, not_ready=reason))
    handle_http_errors(app, _error, on_too_large=lambda: metrics.observe(request.path, "malformed", 0.0))
    return app


def _decisions(
    settings: Settings, namespace_level: Callable[[str], PodSecurityLevel | None] | None
) -> dict[str, Decide]:
    """What each endpoint does with a pod of a request that is ours."""

    def level_of(namespace: str) -> PodSecurityLevel | None:
        return namespace_level(namespace) if namespace_level is not None and namespace else None

    return {
        "/mutate": lambda pod, namespace: mutate(
            pod, namespace_opted_in=False, settings=settings, namespace_level=level_of(namespace)
        ),
        "/mutate/namespace": lambda pod, namespace: mutate(
            pod, namespace_opted_in=True, settings=settings, namespace_level=level_of(namespace)
        ),
        "/route": lambda pod, namespace: route(pod, settings=settings),
    }


def _responder(endpoint: str, decide: Decide, settings: Settings, metrics: WebhookMetrics) -> Responder:
    """The one wrapper of an endpoint: read the review, decide, answer; time and count it."""

    def review(body: bytes) -> tuple[int, str]:
        started = time.perf_counter()
        try:
            api_version, admission_request = parse_review(body)
        except MalformedReview as exc:
            metrics.observe(endpoint, "malformed", time.perf_counter() - started)
            return 400, json_text(_error(str(exc), 400))
        try:
            decision = admit(api_version, admission_request, decide=decide, settings=settings)
        except Exception:
            # A bug of ours, not the pod's: fail closed with a message the apiserver shows the user.
            logger.exception(
                "internal error answering admission review %s on %s", admission_request["uid"], endpoint
            )
            metrics.observe(endpoint, "error", time.perf_counter() - started)
            answer = build_review(
                api_version=api_version,
                uid=admission_request["uid"],
                allowed=False,
                code=500,
                message="internal error in the confidential-pods webhook; see its logs",
            )
            return 200, json_text(answer)
        metrics.observe(endpoint, decision.outcome, time.perf_counter() - started)
        if decision.outcome == "denied" and decision.mutation is not None:
            logger.info("denied pod in %s: %s", admission_request.get("namespace"), decision.mutation.message)
        return 200, json_text(decision.review)

    return review


def _error(message: str, code: int) -> dict[str, Any]:
    return {"error": message, "code": code}
