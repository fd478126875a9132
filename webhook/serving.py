"""``confidential-pods webhook serve``: the webhook app under the shared serving layer, TLS only.

What is the webhook's own (the rest is :mod:`confidential_pods.serving`):

* **TLS is required** (the apiserver only calls webhooks over HTTPS).
* **Balanced workers.** Several worker processes (``--workers``), each listening on the port itself
  with ``SO_REUSEPORT``, so the kernel spreads new connections across them. With one shared listening
  socket the worker that wakes first accepts a whole burst of connections, and since a kept-alive
  connection stays with its worker, one process (one core, one GIL) ends up serving everything
  (benchmarks/webhook_bench.py saw it). The address is probed once before start, so a port in use is
  a clear error. Metrics of all workers are aggregated (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from confidential_pods import kube, serving
from confidential_pods.errors import ServingError
from confidential_pods.listening import check_address
from confidential_pods.settings import Settings, incomplete
from confidential_pods.tlscontext import ReloadingContext

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

WORKER_CLASSES = serving.WORKER_CLASSES


def serve(
    settings: Settings,
    *,
    cert: str,
    key: str,
    host: str,
    port: int,
    workers: int,
    threads: int,
    worker_class: str = "connection",
    drain_seconds: float = 0.0,
    kubeconfig: str | None = None,
    namespace_lookup: bool = True,
) -> int:
    """Serve the webhook until SIGTERM/SIGINT; returns the exit code (start-up errors: 1, no traceback).

    ``drain_seconds``: after SIGTERM keep serving this long with ``/readyz`` failing, then stop.
    ``kubeconfig``, ``namespace_lookup``: how namespaces' Pod Security levels are read (webhook.namespaces).
    """
    spec = serving.Serving(
        name="webhook",
        bind=[],
        workers=workers,
        threads=threads,
        worker_class=worker_class,
        drain_seconds=drain_seconds,
        cert=cert,
        key=key,
        reuse_port=True,  # a listening socket per worker: the kernel balances connections
        multiprocess_metrics=True,
    )
    try:
        serving.check_sizing(spec)
        tls = serving.load_tls(spec)
        assert tls is not None
        # The probe last, to keep the window before workers bind short.
        spec = replace(spec, bind=[check_address(host, port)])
        logger.info(
            "serving %s (serial %x, valid until %s) on %s:%d with %d %s worker(s) x %d thread(s)",
            cert,
            tls.pair.serial,
            tls.pair.not_after.isoformat(),
            host,
            port,
            workers,
            worker_class,
            threads,
        )
        reason = incomplete(settings)
        if reason:  # one line, here in the arbiter rather than in each worker
            logger.error("not ready (/readyz answers 503) until the configuration is complete: %s", reason)
        levels = _namespace_levels(kubeconfig) if namespace_lookup else None
        return serving.run(spec, lambda ready: _app(settings, ready, levels, tls), tls=tls)
    except ServingError as exc:
        print(f"confidential-pods webhook serve: {exc}", file=sys.stderr)
        return 1


def _app(settings: Settings, ready: Any, levels: Any, tls: ReloadingContext) -> Any:
    from webhook.app import create_app  # after the serving layer chose how metrics are kept
    from webhook.metrics import WebhookMetrics

    metrics = WebhookMetrics()
    metrics.export_certificate_expiry(tls)
    return create_app(settings, ready=ready, namespace_level=levels, metrics=metrics)


def _namespace_levels(kubeconfig: str | None) -> Any:
    """The namespace lookup: with ``kubeconfig``, else in a pod with its ServiceAccount, else none."""
    if kubeconfig is None and not (
        os.environ.get("KUBERNETES_SERVICE_HOST") and SERVICE_ACCOUNT_TOKEN.exists()
    ):
        logger.info("no API server credentials: namespaces' Pod Security levels are not read")
        return None
    from webhook.namespaces import api_lookup

    try:
        return api_lookup(kube.api_client(kubeconfig))
    except kube.CredentialsError as exc:
        raise ServingError(str(exc)) from None
