"""A gunicorn worker that gives each connection its own thread (worker class ``connection``).

gunicorn's ``gthread`` worker parks every kept-alive connection in its main thread's poller between
requests: a request wakes the main thread, which hands the connection to a pool thread, which answers and
hands it back through a pipe, and the main thread registers it with the poller again. Our clients are a
few long-lived HTTP/1.1 connections (kube-scheduler's to the extender, the apiserver's to the webhook),
each sending a small request at a time; for them those hand-offs cost more than answering (in the
extender, ~40 % of its CPU per scheduled pod went to the gthread loop: docs/performance.md). Here the
thread that a connection gets when it is accepted reads its requests one after the other and answers
them itself, as Go's net/http does with a goroutine per connection. gunicorn still does the rest:
the arbiter, request parsing and limits, the WSGI environ and response, TLS through the ``ssl_context``
hook, access logs and server hooks.

* **Concurrency.** ``threads`` bounds the requests answered at once (a request waits for a slot); idle
  kept-alive connections hold no slot, only a parked thread. ``worker_connections`` bounds the
  connections: at the bound the worker stops accepting until one closes (the kernel's backlog holds
  the rest).
* **Timeouts.** Between requests a connection stays open ``keepalive`` seconds (a new one waits at
  least :data:`REQUEST_TIMEOUT_SECONDS` for its first request). Once a request starts (TLS handshake
  included), every read and write must progress within :data:`REQUEST_TIMEOUT_SECONDS`, and the whole
  request (line, headers, body) must arrive within :data:`REQUEST_DEADLINE_SECONDS`, or the connection
  closes. A body with a Content-Length of at most :data:`PREREAD_BYTES` is read before the request
  takes a slot, so a client trickling its body holds a thread but no slot (the bytes so read are
  bounded per worker by :data:`PREREAD_BUDGET_BYTES`; past it, the app reads the body in its slot).
* **Closing.** After an answer, a connection closes gracefully (gunicorn's ``close_graceful``: FIN,
  then a short drain), so request bytes left unread do not make the kernel reset it and cut off the
  end of the answer; a client that stalled or went away is closed at once.
* **Stop** (SIGTERM, as with gthread): the worker stops accepting; requests in flight finish; an idle
  connection stays at most :data:`STOP_KEEPALIVE_LINGER` seconds for a request its client may already
  be sending, answered with ``Connection: close``; the worker exits when every connection is closed or
  ``graceful_timeout`` has passed.

HTTP/2 is not offered (neither server enables it; gunicorn's default is HTTP/1.1 only).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import selectors
import socket
import ssl
import threading
import time
from datetime import datetime
from typing import Any

from gunicorn import http, util
from gunicorn import sock as gsock
from gunicorn.http import wsgi
from gunicorn.http.body import LengthReader
from gunicorn.workers import base

#: Seconds each read or write of a started request may take (TLS handshake included).
REQUEST_TIMEOUT_SECONDS = 10.0
#: Seconds a whole request (request line, headers, body) may take to arrive: the longest the apiserver
#: waits for a webhook, and kube-scheduler's default for an extender.
REQUEST_DEADLINE_SECONDS = 30.0
#: Bodies up to this Content-Length are read before the request takes a slot.
PREREAD_BYTES = 1024 * 1024
#: At most this many bytes of such bodies are held at once per worker.
PREREAD_BUDGET_BYTES = 32 * 1024 * 1024
#: Seconds an idle connection stays open once the worker is stopping (gthread's figure).
STOP_KEEPALIVE_LINGER = 2.0
#: How often an idle connection's thread looks at the worker's state (stop), seconds.
IDLE_SLICE_SECONDS = 1.0
#: Client disconnections that end a connection quietly.
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)


class ConnectionWorker(base.Worker):  # type: ignore[misc]
    """One thread per connection; see the module's documentation."""

    alive: bool  # gunicorn's: False once the worker is stopping

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open = 0
        self._changed = threading.Condition()
        self._slots = threading.BoundedSemaphore(self.cfg.threads)
        self._stopped_at: float | None = None
        self._preread = 0  # bytes of bodies read ahead, under _changed

    # ------------------------------------------------------------------ main thread

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.PIPE[0], selectors.EVENT_READ)  # signals wake the loop (set_wakeup_fd)
        for listener in self.sockets:
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ)
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                self.alive = False  # answers in the linger announce the close
                break
            if self._open >= self.worker_connections:
                with self._changed:
                    self._changed.wait_for(
                        lambda: self._open < self.worker_connections or not self.alive, 1.0
                    )
                continue
            try:
                ready = selector.select(1.0)
            except InterruptedError:
                continue
            for key, _ in ready:
                if key.fileobj == self.PIPE[0]:
                    _drain(self.PIPE[0])
                else:
                    self._accept(key.fileobj)  # type: ignore[arg-type]  # registered: a listener
        self._stop(selector)

    @property
    def worker_connections(self) -> int:
        return int(self.cfg.worker_connections)

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        util.close_on_exec(client)
        client.settimeout(REQUEST_TIMEOUT_SECONDS)
        with self._changed:
            self._open += 1
        thread = threading.Thread(
            target=self._connection, args=(client, address, listener.getsockname()), daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: refuse this one connection, keep serving the others
            self.log.error("no thread for a connection from %s; closed", address)
            self._closed(client, graceful=False)

    def _stop(self, selector: selectors.BaseSelector) -> None:
        self._stopped_at = time.monotonic()
        selector.close()
        for listener in self.sockets:
            listener.close()
        deadline = self._stopped_at + self.cfg.graceful_timeout
        with self._changed:
            while self._open and time.monotonic() < deadline:
                self.notify()
                self._changed.wait(min(1.0, max(deadline - time.monotonic(), 0.0)))

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.alive = False  # the signal also wrote to PIPE, which wakes the main loop

    # ------------------------------------------------------------------ connection threads

    def _connection(self, client: socket.socket, address: Any, server: Any) -> None:
        conn = client
        req = None
        graceful = False
        try:
            if self.cfg.is_ssl:
                conn = gsock.ssl_wrap_socket(client, self.cfg)
                if not self.cfg.do_handshake_on_connect:
                    conn.do_handshake()
            reads = _Reads(conn)
            parser = http.get_parser(self.cfg, reads, address)
            idle = selectors.DefaultSelector()
            idle.register(conn, selectors.EVENT_READ)
            try:
                wait = max(self.cfg.keepalive, REQUEST_TIMEOUT_SECONDS)  # for the first request
                while self._request_arrives(conn, parser, idle, wait):
                    reads.deadline = time.monotonic() + REQUEST_DEADLINE_SECONDS
                    conn.settimeout(REQUEST_TIMEOUT_SECONDS)
                    req = next(parser)
                    graceful = True
                    body = self._read_ahead(req)
                    try:
                        with self._slots:
                            keep = self._answer(req, conn, address, server, body)
                    finally:
                        self._release(len(body) if body is not None else 0)
                    drain_by = time.monotonic() + REQUEST_TIMEOUT_SECONDS
                    if not keep or not parser.finish_body(deadline=drain_by):
                        break
                    req = None
                    wait = self.cfg.keepalive
            finally:
                idle.close()
        except StopIteration:
            pass
        except http.errors.NoMoreData as exc:
            self.log.debug("Ignored premature client disconnection. %s", exc)
            graceful = False
        except TimeoutError:
            self.log.debug("Closing a connection from %s that stalled mid-request", address)
            graceful = False
        except ssl.SSLError as exc:
            graceful = False
            if exc.args[0] == ssl.SSL_ERROR_EOF or req is None:
                self.log.debug("TLS connection from %s ended: %s", address, exc)
            else:
                self.handle_error(req, conn, address, exc)
        except OSError as exc:
            graceful = False
            if exc.errno in _GONE:
                self.log.debug("Client %s went away: %s", address, exc)
            else:
                self.log.exception("Socket error processing request.")
        except Exception as exc:
            graceful = True  # an error answer (400 for a malformed request, 500) was written
            self.handle_error(req, conn, address, exc)
        finally:
            self._closed(conn, graceful)

    def _read_ahead(self, req: Any) -> bytes | None:
        """The body of ``req`` when it has a small Content-Length and the budget allows, read now."""
        if getattr(req, "_expected_100_continue", False):
            return None  # the client sends its body once told to continue, which the app's read does
        if not isinstance(req.body.reader, LengthReader):  # chunked
            return None
        size = req.body.reader.length  # gunicorn's parse of Content-Length (0 without one)
        if not 0 < size <= PREREAD_BYTES:
            return None
        with self._changed:
            if self._preread + size > PREREAD_BUDGET_BYTES:
                return None
            self._preread += size
        try:
            data = req.body.read(size)
            if len(data) != size:  # the client closed mid-body
                raise http.errors.NoMoreData(data)
        except BaseException:
            self._release(size)
            raise
        return bytes(data)

    def _release(self, size: int) -> None:
        if size:
            with self._changed:
                self._preread -= size

    def _request_arrives(
        self, conn: socket.socket, parser: Any, idle: selectors.BaseSelector, wait: float
    ) -> bool:
        """Wait, idle, until the client sends its next request: False once the connection should close."""
        if parser.unreader.buf.getvalue() or (isinstance(conn, ssl.SSLSocket) and conn.pending()):
            return True  # already read ahead
        deadline = time.monotonic() + wait
        while True:
            if self._stopped_at is not None:
                deadline = min(deadline, self._stopped_at + STOP_KEEPALIVE_LINGER)
            elif not self.alive:  # stopping, the main loop has not noticed yet
                deadline = min(deadline, time.monotonic() + STOP_KEEPALIVE_LINGER)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if idle.select(min(remaining, IDLE_SLICE_SECONDS)):
                return True

    def _answer(self, req: Any, conn: socket.socket, client: Any, server: Any, body: bytes | None) -> bool:
        """One request through the app (gthread's ``handle_request``); True when the connection stays open."""
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            request_start = datetime.now()
            resp, environ = wsgi.create(req, conn, client, server, self.cfg)
            environ["wsgi.multithread"] = True
            if body is not None:
                environ["wsgi.input"] = io.BytesIO(body)
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - request_start)
                if hasattr(respiter, "close"):
                    respiter.close()
            return not resp.should_close()
        except (Exception, SystemExit):
            if resp is not None and resp.headers_sent:  # a 500 now would corrupt the answer begun
                self.log.exception("Error handling request")
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")

    def _closed(self, conn: socket.socket, graceful: bool) -> None:
        if graceful:
            util.close_graceful(conn)
        else:
            util.close(conn)
        with self._changed:
            self._open -= 1
            self._changed.notify_all()


def _drain(fd: int) -> None:
    """Empty the wake-up pipe (one read: it only ever holds a few bytes, and it is non-blocking)."""
    with contextlib.suppress(OSError):
        os.read(fd, 4096)


class _Reads:
    """The connection as gunicorn's parser reads it: each ``recv`` within :data:`REQUEST_TIMEOUT_SECONDS`
    and before the current request's ``deadline``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = float("inf")

    def recv(self, size: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive in time")
        if remaining < REQUEST_TIMEOUT_SECONDS:  # else the socket's own timeout, set per request
            self.sock.settimeout(remaining)
        return self.sock.recv(size)

    def gettimeout(self) -> float | None:
        return self.sock.gettimeout()

    def settimeout(self, value: float | None) -> None:
        self.sock.settimeout(value)
