"""What both flask apps share: JSON answers, bounded request bodies, probes, metrics and HTTP errors.

:func:`probes` is the blueprint of ``/healthz``, ``/readyz`` and ``/metrics``; :func:`handle_http_errors`
answers routing errors and oversized bodies in the app's own JSON error shape (the webhook's
``{"error", "code"}``, the extender's ``{"Error"}`` as Go extenders answer); :func:`read_body` reads a
request body with the app's size limit applied to chunked bodies too; :class:`PostsFirst` answers the
POSTs both servers are there for (the extender's verbs, the webhook's reviews) in front of flask;
:class:`AppMetrics` is the base
of each app's metrics, kept in a registry of its own, with the expiry of the serving certificate
(:class:`CertificateExpiry`) when the app serves TLS.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from werkzeug.exceptions import ClientDisconnected, HTTPException, InternalServerError, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES

if TYPE_CHECKING:
    from confidential_pods.tlscontext import ReloadingContext

#: Where prometheus_client's multiprocess mode keeps its files (set by the serving layer alone).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_CHUNK = 64 * 1024

ErrorPayload = Callable[[str, int], dict[str, Any]]
#: The answer to one POST body: HTTP status and JSON text.
Responder = Callable[[bytes], tuple[int, str]]

logger = logging.getLogger(__name__)


def json_text(payload: Any) -> str:
    """Compact JSON text, as every answer of both servers is written."""
    return json.dumps(payload, separators=(",", ":"))


def json_response(payload: Any, status: int = 200) -> Response:
    """Compact JSON, ``application/json``."""
    return Response(json_text(payload), status=status, mimetype="application/json")


def read_body() -> bytes:
    """The request body, at most the app's ``MAX_CONTENT_LENGTH`` bytes; 413 beyond, chunked or not.

    werkzeug applies the limit to a ``Content-Length`` itself, but cuts a chunked body off at the limit
    and hands back the first part (which then fails as "not JSON"); read here, a chunked body over
    the limit is a :class:`~werkzeug.exceptions.RequestEntityTooLarge` like any other.
    """
    limit: int = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)  # the Content-Length is checked against the limit
    stream = request.environ["wsgi.input"]  # the server ends it at the last chunk: safe to read
    chunks: list[bytes] = []
    size = 0
    while chunk := stream.read(min(_CHUNK, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge()
    return b"".join(chunks)


def view(respond: Responder) -> Callable[[], Response]:
    """The flask view of a responder: what :class:`PostsFirst` leaves to flask (chunked or too large)."""

    def answer() -> Response:
        status, text = respond(read_body())
        return Response(text, status=status, mimetype="application/json")

    return answer


def serve_posts(app: Flask, responders: dict[str, Responder], error: ErrorPayload) -> None:
    """Each responder at its path: a flask view (chunked or oversized bodies) and :class:`PostsFirst` in
    front of flask for the rest."""
    for path, respond in responders.items():
        app.add_url_rule(path, path.strip("/"), view(respond), methods=["POST"])
    app.wsgi_app = PostsFirst(app, responders, error)  # type: ignore[method-assign]


class PostsFirst:
    """WSGI middleware: answers a POST to one of ``responders``' paths that has a ``Content-Length`` within
    the app's limit without flask; hands every other request to flask (``Flask.wsgi_app``, the documented
    place for middleware).

    Flask's request context, routing and Response cost 0.2 to 0.35 ms of a 1 to 1.4 ms extender call at
    500 nodes (docs/performance.md). The answer is the one flask's :func:`view` of the same responder
    gives, byte for byte; an unhandled exception is logged and answered 500 in the app's error shape
    (``error``), as flask's handler would.
    """

    def __init__(self, app: Flask, responders: dict[str, Responder], error: ErrorPayload) -> None:
        self._app = app
        self._flask = app.wsgi_app
        self._responders = responders
        self._error = error

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        respond = self._responders.get(environ.get("PATH_INFO", ""))
        length = environ.get("CONTENT_LENGTH") or ""
        if (
            respond is None
            or environ.get("REQUEST_METHOD") != "POST"
            or not (len(length) <= 12 and length.isascii() and length.isdigit())  # else werkzeug's reading
            or int(length) > self._app.config["MAX_CONTENT_LENGTH"]
        ):
            return self._flask(environ, start_response)
        size = int(length)
        body = environ["wsgi.input"].read(size) if size else b""
        try:
            if len(body) < size:  # the client went away mid-body, as werkzeug would say
                status, text = 400, json_text(self._error(ClientDisconnected.description, 400))
            else:
                status, text = respond(body)
        except Exception:  # as flask answers an unhandled exception: logged, 500 in the app's error shape
            logger.exception("exception on %s [POST]", environ.get("PATH_INFO"))
            status, text = 500, json_text(self._error(InternalServerError.description, 500))
        data = text.encode()
        start_response(
            f"{status} {HTTP_STATUS_CODES[status].upper()}",  # as werkzeug writes it
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]


def probes(ready: Callable[[], bool], metrics: AppMetrics, not_ready: str = "") -> Blueprint:
    """``/healthz`` (the process answers), ``/readyz`` (``ready()``) and ``/metrics`` (``metrics``)."""
    blueprint = Blueprint("probes", __name__)

    @blueprint.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok"})

    @blueprint.get("/readyz")
    def readyz() -> Response:
        if ready():
            return json_response({"status": "ready"})
        body = {"status": "not ready", "reason": not_ready} if not_ready else {"status": "not ready"}
        return json_response(body, 503)

    @blueprint.get("/metrics")
    def prometheus_metrics() -> Response:
        data, content_type = metrics.render()
        return Response(data, status=200, content_type=content_type)

    return blueprint


def handle_http_errors(
    app: Flask, payload: ErrorPayload, on_too_large: Callable[[], None] = lambda: None
) -> None:
    """Answer werkzeug's HTTP errors (404, 405, 413 …) as JSON built by ``payload(message, code)``."""

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 400
        if code < 400:  # routing redirects keep their Location header
            return error.get_response()  # type: ignore[return-value]
        if code == 413:
            on_too_large()
            return json_response(
                payload(f"body larger than {app.config['MAX_CONTENT_LENGTH']} bytes", 413), 413
            )
        return json_response(payload(error.description or error.name, code), code)


class AppMetrics:
    """The metrics of one app, in a registry of its own (tests build many apps in one process).

    Under gunicorn with several worker processes the serving layer switches prometheus_client to its
    multiprocess mode before any app is built; :meth:`render` then aggregates every worker's counters
    and histograms from their files, plus the collectors registered with :meth:`register_live`
    (read from this process's memory at scrape time).
    """

    #: The start of every metric name of the app (``confidential_pods_webhook``).
    prefix: ClassVar[str]

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._live: list[Collector] = []

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter in this app's registry (``_total`` is appended to ``name`` in the exposition)."""
        return Counter(name, documentation, list(labels), registry=self.registry)

    def histogram(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> Histogram:
        """A histogram in this app's registry."""
        return Histogram(name, documentation, list(labels), buckets=buckets, registry=self.registry)

    def register_live(self, collector: Collector) -> None:
        """A collector that reads live state at scrape time (not a counter of this process)."""
        self.registry.register(collector)
        self._live.append(collector)

    def export_certificate_expiry(self, tls: ReloadingContext) -> None:
        """``<prefix>_certificate_expiry_timestamp_seconds``: when the certificate ``tls`` serves expires."""
        self.register_live(CertificateExpiry(f"{self.prefix}_certificate_expiry_timestamp_seconds", tls))

    def render(self) -> tuple[bytes, str]:
        """The exposition text for ``GET /metrics`` and its content type."""
        if not os.environ.get(MULTIPROC_ENV):
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        for collector in self._live:
            registry.register(collector)
        return generate_latest(registry), CONTENT_TYPE_LATEST


class CertificateExpiry(Collector):
    """The notAfter of the serving certificate, as a Unix time, read at scrape time.

    Asks the :class:`~confidential_pods.tlscontext.ReloadingContext` for its current pair, as an accepted
    connection does: two ``stat`` calls while the files are unchanged, the new pair once they are replaced.
    Under gunicorn each worker holds its own context; the scrape's own connection has just refreshed it.
    """

    def __init__(self, name: str, tls: ReloadingContext) -> None:
        self._name = name
        self._tls = tls

    def collect(self) -> Iterator[GaugeMetricFamily]:
        not_after = self._tls.current().not_after.timestamp()
        yield GaugeMetricFamily(
            self._name, "When the serving certificate expires (notAfter), Unix seconds.", not_after
        )
