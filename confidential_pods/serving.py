"""Serving either app under gunicorn: one application class, base options, TLS, drain and exit codes.

Both ``webhook serve`` and ``extender serve`` run through :func:`run`:

* **gunicorn configured in code** (:class:`Server`): no gunicorn config file or command line is read.
  ``connection`` workers (:mod:`confidential_pods.worker`): a thread per kept-alive connection, which
  answers its requests itself, for the apiserver's and kube-scheduler's long-lived HTTP/1.1
  connections (Go's idle timeout is 90 s; ours is :data:`KEEPALIVE_SECONDS`, longer, so the client
  always closes first).
* **TLS that follows the files** (:class:`~confidential_pods.tlscontext.ReloadingContext`): gunicorn asks
  the ``ssl_context`` server hook for a context for every accepted connection; the hook answers the
  current pair, re-read when it changes on disk, the last good pair kept. TLS 1.2+ only.
* **Graceful shutdown** (:class:`DrainingArbiter`): SIGTERM with a drain period answers ``/readyz``
  with 503 and serves everything else as before until the period ends (the time Kubernetes needs to
  take the pod out of the Service's endpoints); then, as without one, workers stop accepting, finish
  what is in flight and exit within :data:`GRACEFUL_TIMEOUT_SECONDS`. A second SIGTERM ends the drain.
* **Metrics across worker processes** (``multiprocess_metrics``): prometheus_client's multiprocess
  mode is switched on here, and only here, before the app (and its metrics) is built; the directory
  is removed at exit. A worker that exits is marked dead.
* **Errors**: what stops a start (:class:`~confidential_pods.errors.ServingError`, a certificate that
  does not load) is one line on stderr and exit code 1; gunicorn's own exit codes pass through.
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
from dataclasses import dataclass, field
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from confidential_pods.endpoints import MULTIPROC_ENV
from confidential_pods.errors import ServingError
from confidential_pods.tlscontext import ReloadingContext

logger = logging.getLogger(__name__)

#: Seconds an idle kept-alive connection stays open. Longer than the clients' idle timeout (Go's
#: http.Transport default, 90 s), so the client closes first and never reuses a connection the
#: server is closing at the same moment.
KEEPALIVE_SECONDS = 95
#: Seconds workers get to finish requests after SIGTERM (below Kubernetes' default 30 s grace).
GRACEFUL_TIMEOUT_SECONDS = 20
#: Worker classes accepted, by name: gunicorn's class for each. ``connection`` (the default) gives each
#: connection its own thread (:mod:`confidential_pods.worker`); ``gthread`` is gunicorn's threaded worker;
#: ``sync`` exists for comparison in benchmarks only.
WORKER_CLASSES = {
    "connection": "confidential_pods.worker.ConnectionWorker",
    "gthread": "gthread",
    "sync": "sync",
}

#: Builds the WSGI app; its argument is the readiness the drain turns off (``/readyz``).
AppFactory = Callable[[Callable[[], bool]], Any]


@dataclass(frozen=True)
class Serving:
    """How one server runs: its name (messages, process title) and its gunicorn sizing and hooks."""

    name: str
    bind: list[str]
    workers: int = 1
    threads: int = 4
    worker_class: str = "connection"
    drain_seconds: float = 0.0
    cert: str | None = None
    key: str | None = None
    #: Each worker listens itself (``SO_REUSEPORT``): the kernel spreads connections across workers.
    reuse_port: bool = False
    #: Counters kept in files shared by every worker process, so that ``/metrics`` shows them all and a
    #: replaced worker's counts survive (off for the extender: one worker, and its ledger gauges are live).
    multiprocess_metrics: bool = False
    #: More gunicorn settings (server hooks such as ``post_worker_init``).
    hooks: dict[str, Any] = field(default_factory=dict)


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


class Server(BaseApplication):  # type: ignore[misc]
    """gunicorn configured in code (no gunicorn config file or command line is read)."""

    def __init__(
        self, application: Any, options: dict[str, Any], *, drain_seconds: float, draining: Any
    ) -> None:
        self._application = application
        self._options = options
        self._drain_seconds = drain_seconds
        self._draining = draining
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


def options(serving: Serving, tls: ReloadingContext | None, multiproc_dir: str | None) -> dict[str, Any]:
    """The gunicorn settings of a server."""
    settings: dict[str, Any] = {
        "bind": serving.bind,
        "reuse_port": serving.reuse_port,
        "worker_class": WORKER_CLASSES[serving.worker_class],
        "workers": serving.workers,
        "threads": serving.threads,
        "keepalive": KEEPALIVE_SECONDS,
        # Nothing sits in front of either server (the apiserver and kube-scheduler connect directly), so
        # no peer's proxy headers are honoured: neither the scheme headers nor SCRIPT_NAME/PATH_INFO. With
        # nothing to trust, gunicorn need not work out per request whether the peer may be trusted (an
        # address parse per request; gunicorn's default trusts 127.0.0.1 with both).
        "secure_scheme_headers": {},
        "forwarder_headers": "",
        "forwarded_allow_ips": "*",
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "preload_app": True,
        "control_socket_disable": True,
        "proc_name": f"confidential-pods-{serving.name}",
        "loglevel": logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
        "errorlog": "-",
        "accesslog": None,
        **serving.hooks,
    }
    if tls is not None:

        def ssl_context(_config: Any, _default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return tls.context()

        # certfile/keyfile make gunicorn wrap connections; the context itself comes from the hook.
        settings.update(certfile=serving.cert, keyfile=serving.key, ssl_context=ssl_context)
    if multiproc_dir is not None:

        def child_exit(_arbiter: Any, worker: Any) -> None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, multiproc_dir)  # type: ignore[no-untyped-call]

        settings["child_exit"] = child_exit
    return settings


def check_sizing(serving: Serving) -> None:
    """Refuse sizes gunicorn would misread, with the option's name."""
    if serving.workers < 1 or serving.threads < 1:
        raise ServingError("--workers and --threads must be at least 1")
    if serving.drain_seconds < 0:
        raise ServingError("the drain period (--drain-seconds) must not be negative")
    if serving.worker_class not in WORKER_CLASSES:
        raise ServingError(f"worker class {serving.worker_class!r} is not one of {', '.join(WORKER_CLASSES)}")
    if (serving.cert is None) != (serving.key is None):
        raise ServingError("--cert and --key go together")


def load_tls(serving: Serving) -> ReloadingContext | None:
    """The serving pair, loaded now so that a bad one is a start-up error (CertificateError)."""
    if serving.cert is None or serving.key is None:
        return None
    return ReloadingContext(serving.cert, serving.key)


def run(serving: Serving, build_app: AppFactory, *, tls: ReloadingContext | None) -> int:
    """Serve until SIGTERM/SIGINT (after the drain period); returns the exit code."""
    main_pid = os.getpid()
    multiproc_dir = _enable_multiprocess() if serving.multiprocess_metrics else None
    try:
        draining = multiprocessing.RawValue(ctypes.c_bool, False)  # shared with the forked workers
        application = build_app(lambda: not draining.value)
        server = Server(
            application,
            options(serving, tls, multiproc_dir),
            drain_seconds=serving.drain_seconds,
            draining=draining,
        )
        # Everything loaded so far lives as long as the process: keep it out of the collector's full
        # passes (13-23 ms each with flask, kubernetes and gunicorn loaded, measured), a pause the
        # workers would otherwise take now and then mid-request.
        gc.collect()
        gc.freeze()
        try:
            server.run()
        except SystemExit as exc:  # gunicorn's arbiter leaves through sys.exit
            return exit_code(exc.code, serving.name)
        return 0
    finally:
        if multiproc_dir is not None and os.getpid() == main_pid:  # not in a worker leaving
            shutil.rmtree(multiproc_dir, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)


def _enable_multiprocess() -> str:
    """prometheus_client's multiprocess mode, in a fresh directory: before any metric is created.

    prometheus_client picks its value class from the environment when it is first imported; the
    commands import it only after this, and the refresh covers a process that imported it earlier.
    """
    directory = tempfile.mkdtemp(prefix="confidential-pods-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return directory


def exit_code(code: object, name: str) -> int:
    """gunicorn's ``sys.exit`` argument as an exit code (a message: printed, then 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(f"confidential-pods {name} serve: {code}", file=sys.stderr)
    return 1
