"""``confidential-pods extender serve``: the extender app under the shared serving layer, one worker.

**One worker process.** The EPC ledger, its reservations and the watch that feeds it live in the memory
of one process. With several worker processes each would hold its own ledger: a bind would reserve EPC
in one worker while the next filter, answered by another, would not see it, and every worker would run
its own list+watch against the API server. So gunicorn runs exactly one worker (``connection``, a thread
per connection: :mod:`confidential_pods.worker`); its threads answer requests concurrently and share the
ledger under its lock. The answers are small in-memory computations (see docs/extender.md for the
measured latencies), so one process keeps up with kube-scheduler, which calls the extender once per verb
per scheduling cycle.

**Feed.** ``--snapshot F`` fills the ledger from a file and binds in memory. Otherwise the ledger is
fed by :class:`extender.watching.LedgerFeed` (list then watch of nodes and assigned pods) from
``--kubeconfig F``, the in-cluster ServiceAccount or the default kubeconfig (:mod:`confidential_pods.kube`),
and binds go to the API server. The feed thread is started inside the worker after gunicorn forks it
(threads do not survive a fork).

**TLS** is optional (kube-scheduler's ``enableHTTPS``): with ``--cert``/``--key`` the pair is served
and re-read when it changes on disk. TLS, SIGTERM drain and exit codes are the shared serving layer's
(:mod:`confidential_pods.serving`), as for the webhook.
"""

from __future__ import annotations

import gc
import logging
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from confidential_pods import kube, serving
from confidential_pods.documents import load_document, read_text
from confidential_pods.errors import MalformedInput, ServingError
from confidential_pods.listening import bind_listener, listen_error, resolve
from confidential_pods.settings import Settings
from extender.app import create_app
from extender.binding import ApiBinder, Binder, MemoryBinder
from extender.ledger import EpcLedger
from extender.metrics import ExtenderMetrics
from extender.modes import ModeReport, classify, describe, filter_counts_epc
from extender.snapshot import SnapshotError, fill_ledger_from_facts, load_snapshot_facts

logger = logging.getLogger(__name__)


class Feed(Protocol):
    """What serving needs of ``extender.watching.LedgerFeed``."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def ready(self) -> bool: ...


@dataclass
class Backend:
    """Where the ledger's content comes from and where binds go."""

    ledger: EpcLedger
    binder: Binder
    ready: Callable[[], bool]
    metrics: ExtenderMetrics
    feed: Feed | None = None
    description: str = ""


class FreezeWhenReady:
    """``ready()`` that moves everything alive into the GC's permanent generation when it first says yes.

    At 150,000 pods the ledger holds ~170,000 GC-tracked objects; a full (generation 2) collection
    walks them all, tens of milliseconds that land on whichever request triggered it. The ledger's
    objects hold no reference cycles (reference counting frees them), so once the first full list is
    in, ``gc.freeze()`` takes them out of the collector's walk; later collections only scan what the
    watch created since.
    """

    def __init__(self, ready: Callable[[], bool]) -> None:
        self._ready = ready
        self._frozen = False

    def __call__(self) -> bool:
        if not self._ready():
            return False
        if not self._frozen:
            self._frozen = True
            gc.freeze()
            logger.info(
                "ledger ready; %d objects moved out of the garbage collector's walk", gc.get_freeze_count()
            )
        return True


def snapshot_backend(path: str, settings: Settings) -> Backend:
    """Ledger filled once from a snapshot file; binds only update memory.

    Only the facts are kept (capacities, pods holding EPC, each pod's UID and EPC for a bind), not
    the parsed file: at 5,000 nodes and 50,000 pods the parsed objects would take gigabytes.
    """
    facts = load_snapshot_facts(path, settings.profile)
    for problem in facts.unreadable:
        logger.warning("snapshot %s: counted as no EPC: %s", path, problem)
    ledger = EpcLedger()
    fill_ledger_from_facts(ledger, facts)
    binder = MemoryBinder(known=facts.pods)
    del facts
    gc.collect()  # the parsed file is garbage now; collect it before freezing what is left
    gc.freeze()  # see FreezeWhenReady; before the fork it also keeps the pages shared
    return Backend(
        ledger=ledger,
        binder=binder,
        ready=lambda: True,
        metrics=ExtenderMetrics(ledger),
        description=f"snapshot {path}: {ledger.node_count()} node(s), {ledger.pod_count()} pod(s) with EPC",
    )


def api_backend(kubeconfig: str | None, settings: Settings) -> Backend:
    """Ledger fed by list+watch from the API server; binds create ``pods/binding``."""
    from extender.watching import LedgerFeed

    try:
        configuration = kube.configuration(kubeconfig)
    except kube.CredentialsError as exc:
        raise ServingError(str(exc)) from None
    from kubernetes import client

    api_client = client.ApiClient(configuration)
    ledger = EpcLedger(wall_clock=time.time)  # the watch keeps it: heartbeats timed by this clock
    metrics = ExtenderMetrics(ledger)
    feed = LedgerFeed(
        api_client,
        ledger,
        settings.profile,
        reservation_ttl=settings.reservation_ttl_seconds,
        registry=metrics.registry,
        on_expired=metrics.count_expired,
    )
    return Backend(
        ledger=ledger,
        binder=ApiBinder(api_client),
        ready=FreezeWhenReady(feed.ready),
        metrics=metrics,
        feed=feed,
        description=f"API server {configuration.host}",
    )


def serve(
    settings: Settings,
    *,
    snapshot: str | None,
    kubeconfig: str | None,
    host: str,
    port: int,
    threads: int,
    cert: str | None,
    worker_class: str = "connection",
    key: str | None,
    max_body: int | None = None,
    drain_seconds: float = 0.0,
    metrics_address: tuple[str, int] | None = None,
    scheduler_config: str | None = None,
) -> int:
    """Serve the extender until SIGTERM/SIGINT; start-up errors print one line and return 1.

    ``scheduler_config``: kube-scheduler's configuration file (the one the scheduler's pod mounts), read once
    for its mode (:mod:`extender.modes`): in native mode ``/filter`` leaves EPC to kube-scheduler. Without it,
    or when the file contradicts its mode (each contradiction logged), ``/filter`` counts EPC itself.

    ``metrics_address``: also serve ``/metrics`` alone (no verb, no ``/inspect``) on this address, so that
    Prometheus can scrape the extender while its verbs stay on localhost.
    """
    spec = serving.Serving(
        name="extender",
        bind=[],
        workers=1,
        threads=threads,
        worker_class=worker_class,
        drain_seconds=drain_seconds,
        cert=cert,
        key=key,
    )
    try:
        serving.check_sizing(spec)
        if max_body is not None and max_body < 1024:
            raise ServingError("--max-body must be at least 1024 bytes")
        tls = serving.load_tls(spec)
        report = scheduling_mode(scheduler_config, settings) if scheduler_config else None
        try:
            backend = snapshot_backend(snapshot, settings) if snapshot else api_backend(kubeconfig, settings)
        except SnapshotError as exc:
            raise ServingError(str(exc)) from None
        if tls is not None:
            backend.metrics.export_certificate_expiry(tls)
        hooks = _feed_hooks(backend.feed)
        if metrics_address is not None:
            hooks = _with_metrics_server(hooks, MetricsServer(metrics_address, backend.metrics))
        spec = replace(spec, bind=[f"fd://{bind_listener(host, port).detach()}"], hooks=hooks)
        logger.info(
            "extender serving %s on %s://%s:%d (1 %s worker x %d threads), profile %s, scoring %s",
            backend.description,
            "https" if tls else "http",
            host,
            port,
            worker_class,
            threads,
            settings.profile.name,
            settings.scoring_strategy,
        )
        counts_epc = filter_counts_epc(report)
        if report is None:
            logger.info("no --scheduler-config: /filter counts EPC itself (as in ledger mode)")
        else:
            logger.info("%s (%s)", describe(report), scheduler_config)
            for problem in report.problems:
                logger.warning(
                    "scheduler configuration %s: %s; /filter counts EPC itself", scheduler_config, problem
                )
        return serving.run(
            spec, lambda draining: _app(backend, settings, draining, max_body, counts_epc), tls=tls
        )
    except ServingError as exc:
        print(f"confidential-pods extender serve: {exc}", file=sys.stderr)
        return 1


def scheduling_mode(path: str, settings: Settings) -> ModeReport:
    """The mode of kube-scheduler's configuration at ``path`` for the configured EPC resource; a file that
    cannot be read or is not a KubeSchedulerConfiguration is a :class:`ServingError` naming it."""
    try:
        config = load_document(read_text(path, "scheduler configuration"), path)
    except MalformedInput as exc:
        raise ServingError(f"--scheduler-config: {exc}") from None
    if not isinstance(config, dict) or config.get("kind") != "KubeSchedulerConfiguration":
        raise ServingError(f"--scheduler-config {path}: not a KubeSchedulerConfiguration")
    return classify(config, settings.profile.epc_resource)


def _app(
    backend: Backend,
    settings: Settings,
    not_draining: Callable[[], bool],
    max_body: int | None,
    counts_epc: bool = True,
) -> Any:
    app = create_app(
        backend.ledger,
        settings,
        backend.binder,
        backend.ready,
        metrics=backend.metrics,
        draining=lambda: not not_draining(),
        counts_epc=counts_epc,
    )
    if max_body is not None:
        app.config["MAX_CONTENT_LENGTH"] = max_body
    return app


class MetricsServer:
    """``/metrics`` of the extender alone, on its own listener (plain HTTP, threads).

    The socket is bound when the server is built, in gunicorn's master, so that a port in use is one clear
    start-up error; it serves from the worker (threads do not survive the fork). Every path answers the
    metrics: nothing else of the extender is reachable on this address.
    """

    def __init__(self, address: tuple[str, int], metrics: ExtenderMetrics) -> None:
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
                pass

        class Threading(socketserver.ThreadingMixIn, WSGIServer):
            daemon_threads = True

        host, port = address
        family, _ = resolve(host, port)
        Threading.address_family = family

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            body, content_type = metrics.render()
            start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
            return [body]

        try:
            self.httpd = Threading((host, port), Quiet)
        except OSError as exc:
            raise listen_error(exc, host, port) from None
        self.httpd.set_app(app)

    def start(self) -> None:
        threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True).start()


def _with_metrics_server(hooks: dict[str, Any], server: MetricsServer) -> dict[str, Any]:
    """``hooks`` plus starting the metrics server in the worker."""
    before = hooks.get("post_worker_init")

    def post_worker_init(worker: Any) -> None:
        if before is not None:
            before(worker)
        server.start()

    return {**hooks, "post_worker_init": post_worker_init}


def _feed_hooks(feed: Feed | None) -> dict[str, Any]:
    """Start the feed in the worker after the fork (threads do not survive one); stop it as it exits."""
    if feed is None:
        return {}

    def post_worker_init(_worker: Any) -> None:
        feed.start()

    def worker_exit(_server: Any, _worker: Any) -> None:
        feed.stop()

    return {"post_worker_init": post_worker_init, "worker_exit": worker_exit}
