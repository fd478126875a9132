"""The flask application: HTTP in, AdmissionReview out. A thin shell around webhook.admission."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from confidential_pods.settings import Settings
from webhook import metrics
from webhook.admission import admit
from webhook.review import MalformedReview, build_review, parse_review

logger = logging.getLogger(__name__)

#: Largest AdmissionReview body accepted (the apiserver's own request limit is 3 MiB).
MAX_BODY = 3 * 1024 * 1024


def create_app(settings: Settings, *, ready: Callable[[], bool] = lambda: True) -> Flask:
    """Build the webhook app. ``ready`` backs ``/readyz`` (the serving shell flips it while draining)."""
    app = Flask("confidential-pods-webhook")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    def review(endpoint: str, namespace_opted_in: bool) -> Response:
        started = time.perf_counter()
        uid = ""
        try:
            body = request.get_data(cache=False)
            api_version, admission_request = parse_review(body)
            uid = admission_request["uid"]
            decision = admit(
                api_version, admission_request, namespace_opted_in=namespace_opted_in, settings=settings
            )
        except MalformedReview as exc:
            metrics.observe(endpoint, "malformed", time.perf_counter() - started)
            return _json({"error": str(exc), "code": 400}, 400)
        except HTTPException:
            raise
        except Exception:
            # Fail closed with a message rather than a 500: the apiserver shows it to the user.
            logger.exception("internal error answering admission review %s on %s", uid, endpoint)
            metrics.observe(endpoint, "error", time.perf_counter() - started)
            if not uid:
                return _json({"error": "internal error reading the AdmissionReview", "code": 400}, 400)
            answer = build_review(
                api_version=api_version,
                uid=uid,
                allowed=False,
                code=500,
                message="internal error in the confidential-pods webhook; see its logs",
            )
            return _json(answer, 200)
        metrics.observe(endpoint, decision.outcome, time.perf_counter() - started)
        if decision.outcome == "denied" and decision.mutation is not None:
            logger.info("denied pod in %s: %s", admission_request.get("namespace"), decision.mutation.message)
        return _json(decision.review, 200)

    @app.post("/mutate")
    def mutate_opted_in_pods() -> Response:
        return review("/mutate", namespace_opted_in=False)

    @app.post("/mutate/namespace")
    def mutate_namespace_pods() -> Response:
        return review("/mutate/namespace", namespace_opted_in=True)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"}, 200)

    @app.get("/readyz")
    def readyz() -> Response:
        if ready():
            return _json({"status": "ready"}, 200)
        return _json({"status": "not ready"}, 503)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        data, content_type = metrics.render()
        return Response(data, status=200, content_type=content_type)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 400
        if code == 413:
            metrics.observe(request.path, "malformed", 0.0)
            return _json({"error": f"body larger than {MAX_BODY} bytes", "code": 413}, 413)
        return _json({"error": error.description or error.name, "code": code}, code)

    return app


def _json(payload: Any, status: int) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status, mimetype="application/json")
