"""The flask application: a route table over the extender's verbs (``verbs.py``), plus inspection.

Every verb goes through one wrapper (:func:`_responder`): parse the body, answer "not ready" until the
ledger's first full list, call the verb, time it and count its outcome. ``/inspect`` shows the ledger.

A verb's POST with a ``Content-Length`` within the limit — every call kube-scheduler makes — is answered by
:class:`~confidential_pods.endpoints.PostsFirst`, a WSGI middleware in front of flask (``app.wsgi_app``), with
the same wrapper: flask's request context, routing and Response cost 0.2 to 0.35 ms of a 1 to 1.4 ms call at
500 nodes (docs/performance.md). Everything else (other paths and methods, chunked or oversized bodies,
``/inspect``, probes, metrics) goes through flask as before, so errors keep one shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response

from confidential_pods.endpoints import (
    Responder,
    handle_http_errors,
    json_response,
    json_text,
    probes,
    serve_posts,
)
from confidential_pods.quantities import format_bytes
from confidential_pods.settings import Settings
from extender.binding import Binder, PendingPods
from extender.ledger import EpcLedger, NodeEpc
from extender.metrics import ExtenderMetrics
from extender.podepc import PodEpc
from extender.readiness import Readiness, is_stale
from extender.verbs import NOT_READY, Answer, VerbName, Verbs
from extender.wire import MalformedRequest, parse_binding_args, parse_extender_args, parse_preemption_args

#: Largest request body accepted. Without nodeCacheCapable kube-scheduler sends whole Node objects
#: (several KiB each): 5,000 nodes fit with room to spare.
MAX_BODY = 128 * 1024 * 1024


__all__ = ["MAX_BODY", "NOT_READY", "create_app", "node_json"]


@dataclass(frozen=True)
class Route:
    """One verb: how its body is parsed and which method of :class:`Verbs` answers it."""

    verb: VerbName
    parse: Callable[[bytes], Any]
    answer: Callable[[Verbs, Any], Answer]


ROUTES = (
    Route("filter", parse_extender_args, Verbs.filter),
    Route("prioritize", parse_extender_args, Verbs.prioritize),
    Route("bind", parse_binding_args, Verbs.bind),
    Route("preempt", parse_preemption_args, Verbs.preempt),
)


def create_app(
    ledger: EpcLedger,
    settings: Settings,
    binder: Binder,
    ready: Callable[[], bool],
    *,
    clock: Callable[[], float] = time.monotonic,
    pending: PendingPods | None = None,
    metrics: ExtenderMetrics | None = None,
    draining: Callable[[], bool] = lambda: False,
    counts_epc: bool = True,
) -> Flask:
    """Build the extender app over one ledger. ``ready`` (the ledger has been listed) gates the verbs
    and backs ``/readyz``; ``draining`` (the serving layer's SIGTERM drain) fails ``/readyz`` only: the
    verbs kube-scheduler still sends while the Service's endpoints catch up are answered.

    ``metrics`` lets the caller register more collectors (the watch feed's) in the same registry.
    ``counts_epc``: whether ``/filter`` refuses by free EPC (:attr:`~extender.verbs.Verbs.counts_epc`).
    """
    app = Flask("confidential-pods-extender")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    # Paths are exact: no redirects for doubled or trailing slashes (a node name has no "/").
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    metrics = metrics if metrics is not None else ExtenderMetrics(ledger)
    app.extensions["confidential_pods_metrics"] = metrics
    verbs = Verbs(
        ledger,
        settings,
        binder,
        pending=pending,
        clock=clock,
        on_expired=metrics.count_expired,
        on_preempt=metrics.count_preemption,
        on_departures=metrics.count_departures,
        counts_epc=counts_epc,
    )
    responders = {f"/{route.verb}": _responder(route, verbs, ready, metrics) for route in ROUTES}
    serve_posts(app, responders, _error)

    app.register_blueprint(_inspection(ledger, settings, ready))
    app.register_blueprint(probes(lambda: ready() and not draining(), metrics, NOT_READY))
    handle_http_errors(app, _error)
    return app


def _error(message: str, code: int) -> dict[str, Any]:
    """The extender's error shape, as Go extenders answer."""
    return {"Error": message}


def _responder(route: Route, verbs: Verbs, ready: Callable[[], bool], metrics: ExtenderMetrics) -> Responder:
    """The one wrapper of every verb: parse, ready gate, answer, time and count."""

    def respond(body: bytes) -> tuple[int, str]:
        started = time.perf_counter()
        try:
            arguments = route.parse(body)
        except MalformedRequest as exc:
            metrics.observe(route.verb, "malformed", time.perf_counter() - started)
            return 400, json_text({"Error": str(exc)})
        answer = route.answer(verbs, arguments) if ready() else Verbs.not_ready(route.verb)
        text = answer.body if isinstance(answer.body, str) else json_text(answer.body)
        metrics.observe(route.verb, answer.outcome, time.perf_counter() - started)
        return answer.status, text

    return respond


def _inspection(ledger: EpcLedger, settings: Settings, ready: Callable[[], bool]) -> Blueprint:
    """``/inspect`` (every node) and ``/inspect/<node>``: the ledger as JSON, for operators."""
    blueprint = Blueprint("inspection", __name__)

    @blueprint.get("/inspect")
    def inspect_all() -> Response:
        with ledger.lock:
            nodes = [n for n in (ledger.node(name) for name in ledger.nodes()) if n is not None]
            summary = {
                "resource": settings.profile.epc_resource,
                "ready": ready(),
                "nodeCount": ledger.node_count(),
                "podCount": ledger.pod_count(),
                "reservationCount": ledger.reservation_count(),
            }
            readiness = ledger.readiness_of(n.name for n in nodes)
        now = time.time()
        return json_response({**summary, "nodes": [node_json(n, readiness[n.name], now) for n in nodes]})

    @blueprint.get("/inspect/<node_name>")
    def inspect_node(node_name: str) -> Response:
        node = ledger.node(node_name)
        if node is None:
            return json_response({"Error": f"node {node_name} is not in the EPC ledger"}, 404)
        return json_response(node_json(node, ledger.readiness(node_name), time.time()))

    return blueprint


def node_json(node: NodeEpc, readiness: Readiness | None = None, now: float | None = None) -> dict[str, Any]:
    """A node's accounting for ``/inspect``: bytes as integers, plus readable text; its
    ``SGXAttestationReady`` condition as the extender last saw it (``null``: none), ``stale`` when the probe
    has not renewed it for 15 minutes at ``now`` (the filter then treats it as unknown)."""
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
        "nominated": [_pod_json(p) for p in node.nominated],
        "attestation": None
        if readiness is None
        else {
            "status": readiness.status,
            "reason": readiness.reason,
            "message": readiness.message,
            "stale": is_stale(readiness, now),
        },
    }


def _summary(node: NodeEpc) -> str:
    if node.capacity is None or node.free is None:
        return "no SGX EPC"
    return (
        f"{format_bytes(max(node.free, 0))} free of {format_bytes(node.capacity)} "
        f"({format_bytes(node.used)} used, {format_bytes(node.reserved)} reserved)"
    )


def _pod_json(pod: PodEpc) -> dict[str, Any]:
    return {
        "namespace": pod.namespace,
        "name": pod.name,
        "uid": pod.uid,
        "epc": pod.epc,
        "priority": pod.priority,
        "leaving": pod.leaving,
    }
