"""``confidential-pods webhook serve``: the flask app under gunicorn, TLS only.

The thin I/O shell around :func:`webhook.app.create_app`:

* **TLS 1.2+ only.** The serving context refuses TLS 1.0/1.1 and offers ECDHE + AEAD suites for 1.2.
* **Certificate reload without restart.** gunicorn asks the ``ssl_context`` server hook for a context
  for every connection it accepts; the hook answers :class:`confidential_pods.tlscontext.ReloadingContext`'s
  current context, which follows the PEM files on disk and keeps the last good pair.
* **Workers.** ``gthread`` workers (threads per process, keep-alive connections parked in a poller),
  the shape that keeps the apiserver's HTTP/1.1 connections open; gunicorn's ``sync`` workers close
  every connection after one request and would pay a TLS handshake per review.
* **Balanced workers.** Every worker listens on the port itself with ``SO_REUSEPORT`` and the kernel
  spreads new connections across them. With one shared listening socket the worker that wakes first
  accepts a whole burst of connections, and since a kept-alive connection stays with its worker, one
  process (one core, one GIL) ends up serving everything (benchmarks/webhook_bench.py saw it).
  The address is probed once before start, so a port in use is a clear error.
* **Prometheus multiprocess.** A fresh ``PROMETHEUS_MULTIPROC_DIR`` is created before the app is
  built and the workers fork; a worker that exits is marked dead; the directory is removed at exit.
* **Graceful shutdown.** SIGTERM: with a drain period (``drain_seconds``), ``/readyz`` answers 503
  and everything else is served as before until the period ends (the time Kubernetes needs to take
  the terminating pod out of the webhook Service's endpoints). Then, as without one, workers stop
  accepting, finish the requests in flight and answer what arrives on kept-alive connections with
  ``Connection: close`` (for up to two seconds), exit and close their listening sockets; the
  process exits 0. A second SIGTERM ends the drain early; SIGINT/SIGQUIT stop at once.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from confidential_pods.errors import CertificateError, ServingError
from confidential_pods.listening import check_address
from confidential_pods.settings import Settings
from confidential_pods.tlscontext import ReloadingContext

logger = logging.getLogger(__name__)

#: Seconds an idle kept-alive connection stays open. Longer than the apiserver's idle timeout
#: (Go's http.Transport default, 90 s), so the client closes first and never reuses a connection
#: the server is closing at the same moment.
KEEPALIVE_SECONDS = 95
#: Seconds workers get to finish requests after SIGTERM (below Kubernetes' default 30 s grace).
GRACEFUL_TIMEOUT_SECONDS = 20
#: Worker classes serve() accepts. ``sync`` exists for comparison in benchmarks only.
WORKER_CLASSES = ("gthread", "sync")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class DrainingArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's arbiter, except that the first SIGTERM starts a drain period instead of stopping."""

    def __init__(self, app: Any, *, drain_seconds: float, draining: ctypes.c_bool) -> None:
        super().__init__(app)
        self.drain_seconds = drain_seconds
        self.draining = draining  # shared memory: workers read it for /readyz
        self.drain_deadline: float | None = None

    def handle_term(self) -> None:
        if self.drain_seconds <= 0 or self.drain_deadline is not None:
            raise StopIteration  # gunicorn's graceful stop
        self.draining.value = True
        self.drain_deadline = time.monotonic() + self.drain_seconds
        self.log.info("SIGTERM: /readyz now fails; serving %.1f s more before stopping", self.drain_seconds)

    def manage_workers(self) -> None:
        # Runs at least once a second from the arbiter's main loop.
        if self.drain_deadline is not None and time.monotonic() >= self.drain_deadline:
            raise StopIteration
        super().manage_workers()


class WebhookServer(BaseApplication):  # type: ignore[misc]
    """gunicorn configured in code (no gunicorn config file or command line is read)."""

    def __init__(
        self,
        application: Any,
        options: dict[str, Any],
        *,
        drain_seconds: float = 0.0,
        draining: ctypes.c_bool | None = None,
    ) -> None:
        self._application = application
        self._options = options
        self._drain_seconds = drain_seconds
        self._draining = draining if draining is not None else ctypes.c_bool(False)
        super().__init__()

    def load_config(self) -> None:
        for name, value in self._options.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        return self._application

    def run(self) -> None:
        try:
            DrainingArbiter(self, drain_seconds=self._drain_seconds, draining=self._draining).run()
        except RuntimeError as exc:  # what gunicorn's own run() reports this way
            print(f"\nError: {exc}\n", file=sys.stderr)
            sys.exit(1)


def gunicorn_options(
    *,
    address: str,
    cert: str,
    key: str,
    tls: ReloadingContext,
    workers: int,
    threads: int,
    worker_class: str,
    multiproc_dir: str,
) -> dict[str, Any]:
    def ssl_context(_config: Any, _default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return tls.context()

    def child_exit(_arbiter: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, multiproc_dir)  # type: ignore[no-untyped-call]

    return {
        "bind": [address],
        "reuse_port": True,  # a listening socket per worker: the kernel balances connections
        # certfile/keyfile make gunicorn wrap connections; the context itself comes from the hook.
        "certfile": cert,
        "keyfile": key,
        "ssl_context": ssl_context,
        "worker_class": worker_class,
        "workers": workers,
        "threads": threads,
        "keepalive": KEEPALIVE_SECONDS,
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "child_exit": child_exit,
        "preload_app": True,
        "control_socket_disable": True,
        "proc_name": "confidential-pods-webhook",
        "loglevel": logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
        "errorlog": "-",
        "accesslog": None,
    }


def serve(
    settings: Settings,
    *,
    cert: str,
    key: str,
    host: str,
    port: int,
    workers: int,
    threads: int,
    worker_class: str = "gthread",
    drain_seconds: float = 0.0,
) -> int:
    """Serve the webhook until SIGTERM/SIGINT; returns the exit code (start-up errors: 1, no traceback).

    ``drain_seconds``: after SIGTERM keep serving this long with ``/readyz`` failing, then stop.
    """
    main_pid = os.getpid()
    multiproc_dir: str | None = None
    try:
        if workers < 1 or threads < 1:
            raise ServingError("--workers and --threads must be at least 1")
        if drain_seconds < 0:
            raise ServingError("the drain period must not be negative")
        if worker_class not in WORKER_CLASSES:
            raise ServingError(f"worker class {worker_class!r} is not one of {', '.join(WORKER_CLASSES)}")
        tls = ReloadingContext(cert, key)
        multiproc_dir = tempfile.mkdtemp(prefix="confidential-pods-metrics-")
        draining = multiprocessing.RawValue(ctypes.c_bool, False)  # shared with the forked workers
        application = _create_app(settings, multiproc_dir, ready=lambda: not draining.value)
        options = gunicorn_options(
            address=check_address(host, port),  # last, to keep the window before workers bind short
            cert=cert,
            key=key,
            tls=tls,
            workers=workers,
            threads=threads,
            worker_class=worker_class,
            multiproc_dir=multiproc_dir,
        )
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
        server = WebhookServer(application, options, drain_seconds=drain_seconds, draining=draining)
        # Everything loaded so far lives as long as the process: keep it out of the collector's full
        # passes (13-23 ms each with flask, kubernetes and gunicorn loaded, measured), a pause the
        # workers would otherwise take now and then mid-review.
        gc.collect()
        gc.freeze()
        try:
            server.run()
        except SystemExit as exc:  # gunicorn's arbiter leaves through sys.exit
            return _exit_code(exc.code)
        return 0
    except (ServingError, CertificateError) as exc:
        print(f"confidential-pods webhook serve: {exc}", file=sys.stderr)
        return 1
    finally:
        if multiproc_dir is not None and os.getpid() == main_pid:  # not in a worker leaving
            shutil.rmtree(multiproc_dir, ignore_errors=True)


def _create_app(settings: Settings, multiproc_dir: str, *, ready: Callable[[], bool]) -> Any:
    """Build the flask app with multiprocess metrics (the env var must precede metric creation)."""
    os.environ[MULTIPROC_ENV] = multiproc_dir
    from prometheus_client import values

    # prometheus_client picks its value class at import time; refresh it in case it came in early.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    from webhook.app import create_app

    return create_app(settings, ready=ready)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(f"confidential-pods webhook serve: {code}", file=sys.stderr)
    return 1
