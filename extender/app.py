"""The flask application: ExtenderArgs in, filter/prioritize/bind answers out. A thin shell.

Decisions live in ``scheduling.py`` and ``binding.py``; this module decodes bodies, takes the
ledger lock for one consistent view per request, records metrics and maps errors to JSON.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from confidential_pods.epc import effective_epc
from confidential_pods.quantities import format_bytes
from confidential_pods.settings import Settings
from extender.binding import Binder, PendingPods, bind_pod, pod_epc_for_bind
from extender.ledger import EpcLedger, NodeEpc
from extender.metrics import ExtenderMetrics, Verb
from extender.podepc import PodEpc, pod_uid
from extender.scheduling import NamesFilterOutcome, filter_names, score_names
from extender.wire import (
    MalformedRequest,
    PrioritizeWriter,
    error_filter_result,
    filter_result_in_order,
    parse_binding_args,
    parse_extender_args,
)

logger = logging.getLogger(__name__)

#: Largest request body accepted. Without nodeCacheCapable kube-scheduler sends whole Node objects
#: (several KiB each): 5,000 nodes fit with room to spare.
MAX_BODY = 128 * 1024 * 1024

NOT_READY = "confidential-pods extender is not ready: the EPC ledger has not listed nodes and pods yet"


def create_app(
    ledger: EpcLedger,
    settings: Settings,
    binder: Binder,
    ready: Callable[[], bool],
    *,
    clock: Callable[[], float] = time.monotonic,
    pending: PendingPods | None = None,
    metrics: ExtenderMetrics | None = None,
) -> Flask:
    """Build the extender app over one ledger. ``ready`` backs ``/readyz`` and gates the verbs.

    ``metrics`` lets the caller register more collectors (the watch feed's) in the same registry.
    """
    app = Flask("confidential-pods-extender")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    # Paths are exact: no redirects for doubled or trailing slashes (a node name has no "/").
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    metrics = metrics if metrics is not None else ExtenderMetrics(ledger)
    app.extensions["confidential_pods_metrics"] = metrics
    pending = pending if pending is not None else PendingPods()
    profile = settings.profile
    resource = profile.epc_resource
    strategy = settings.scoring_strategy
    ttl = settings.reservation_ttl_seconds
    prioritize_writer = PrioritizeWriter()

    def expire() -> None:
        expired = ledger.expire_reservations(clock(), ttl)
        if expired:
            metrics.expired.inc(len(expired))
            logger.warning("dropped %d reservation(s) the watch never confirmed: %s", len(expired), expired)

    def malformed(verb: Verb, started: float, exc: MalformedRequest) -> Response:
        metrics.observe(verb, "malformed", time.perf_counter() - started)
        return _json({"Error": str(exc)}, 400)

    @app.post("/filter")
    def filter_verb() -> Response:
        started = time.perf_counter()
        try:
            candidates = parse_extender_args(request.get_data(cache=False))
        except MalformedRequest as exc:
            return malformed("filter", started, exc)
        if not ready():
            metrics.observe("filter", "refused", time.perf_counter() - started)
            return _json(error_filter_result(NOT_READY), 200)
        epc = effective_epc(candidates.pod, profile)
        pending.remember(pod_uid(candidates.pod), epc)
        names = candidates.names
        outcome: NamesFilterOutcome
        if epc > 0:
            expire()
            # One lock acquisition, one consistent view, one loop over the names.
            outcome = ledger.with_usages(lambda usages: filter_names(epc, names, usages, resource))
        else:
            outcome = filter_names(0, names, {}, resource)
        answer = filter_result_in_order(candidates, outcome.passed, outcome.failed, outcome.unresolvable)
        metrics.observe("filter", "ok", time.perf_counter() - started)
        return _json(answer, 200)

    @app.post("/prioritize")
    def prioritize_verb() -> Response:
        started = time.perf_counter()
        try:
            candidates = parse_extender_args(request.get_data(cache=False))
        except MalformedRequest as exc:
            return malformed("prioritize", started, exc)
        if not ready():
            # kube-scheduler ignores a failing prioritize call and scores with its own plugins.
            metrics.observe("prioritize", "refused", time.perf_counter() - started)
            return _json({"Error": NOT_READY}, 503)
        epc = effective_epc(candidates.pod, profile)
        pending.remember(pod_uid(candidates.pod), epc)
        names = candidates.names
        if epc > 0:
            scores = ledger.with_usages(lambda usages: score_names(epc, names, usages, strategy))
        else:
            scores = score_names(0, names, {}, strategy)
        answer = prioritize_writer.write(names, scores)  # the JSON text of list[HostPriority]
        metrics.observe("prioritize", "ok", time.perf_counter() - started)
        return Response(answer, status=200, mimetype="application/json")

    @app.post("/bind")
    def bind_verb() -> Response:
        started = time.perf_counter()
        try:
            bind_request = parse_binding_args(request.get_data(cache=False))
        except MalformedRequest as exc:
            return malformed("bind", started, exc)
        if not ready():
            metrics.observe("bind", "refused", time.perf_counter() - started)
            return _json({"Error": NOT_READY}, 200)
        epc = pod_epc_for_bind(bind_request, pending, binder, profile)
        if isinstance(epc, str):
            error = epc
        else:
            expire()
            # bind_pod takes the ledger lock for the fit check and the reservation only, not for the API
            # call: filter and prioritize for the next pods must not wait for this pod's round trip.
            error = bind_pod(
                bind_request, epc, ledger=ledger, binder=binder, profile=profile, now=clock()
            ).error
        who = f"{bind_request.pod_namespace}/{bind_request.pod_name}"
        if error:
            logger.info("refused to bind %s to %s: %s", who, bind_request.node, error)
        else:
            logger.debug("bound %s to %s", who, bind_request.node)
        metrics.observe("bind", "refused" if error else "ok", time.perf_counter() - started)
        return _json({"Error": error}, 200)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"}, 200)

    @app.get("/readyz")
    def readyz() -> Response:
        if ready():
            return _json({"status": "ready"}, 200)
        return _json({"status": "not ready", "reason": NOT_READY}, 503)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        data, content_type = metrics.render()
        return Response(data, status=200, content_type=content_type)

    @app.get("/inspect")
    def inspect_all() -> Response:
        with ledger.lock:
            nodes = [n for n in (ledger.node(name) for name in ledger.nodes()) if n is not None]
            summary = {
                "resource": profile.epc_resource,
                "ready": ready(),
                "nodeCount": ledger.node_count(),
                "podCount": ledger.pod_count(),
                "reservationCount": ledger.reservation_count(),
            }
        return _json({**summary, "nodes": [node_json(n) for n in nodes]}, 200)

    @app.get("/inspect/<node_name>")
    def inspect_node(node_name: str) -> Response:
        node = ledger.node(node_name)
        if node is None:
            return _json({"Error": f"node {node_name} is not in the EPC ledger"}, 404)
        return _json(node_json(node), 200)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 400
        if code < 400:  # routing redirects keep their Location header
            return error.get_response()  # type: ignore[return-value]
        if code == 413:
            return _json({"Error": f"body larger than {app.config['MAX_CONTENT_LENGTH']} bytes"}, 413)
        return _json({"Error": f"{error.name}: {error.description}"}, code)

    return app


def node_json(node: NodeEpc) -> dict[str, Any]:
    """A node's accounting for ``/inspect``: bytes as integers, plus readable text."""
    return {
        "name": node.name,
        "sgx": node.capacity is not None,
        "capacity": node.capacity,
        "used": node.used,
        "reserved": node.reserved,
        "free": node.free,
        "summary": _summary(node),
        "pods": [_pod_json(p) for p in node.pods],
        "reservations": [_pod_json(p) for p in node.reservations],
    }


def _summary(node: NodeEpc) -> str:
    if node.capacity is None or node.free is None:
        return "no SGX EPC"
    return (
        f"{format_bytes(max(node.free, 0))} free of {format_bytes(node.capacity)} "
        f"({format_bytes(node.used)} used, {format_bytes(node.reserved)} reserved)"
    )


def _pod_json(pod: PodEpc) -> dict[str, Any]:
    return {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid, "epc": pod.epc}


def _json(payload: Any, status: int) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status, mimetype="application/json")
