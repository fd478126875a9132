"""The ``connection`` worker class (confidential_pods.worker) in-process: a thread per connection, the
requests-at-once bound, the timeouts, the connection cap and the stop, with short timeouts patched in."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from confidential_pods import worker as worker_module
from confidential_pods.worker import ConnectionWorker

App = Callable[[dict[str, Any], Any], Any]


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body) + 5))])
    return [b"hello" + body]


class Running:
    """A ConnectionWorker serving ``app`` on a loopback port, its run loop in a thread."""

    def __init__(self, app: App, **settings: Any) -> None:
        cfg = Config()
        for name, value in {"threads": 4, "keepalive": 5, "graceful_timeout": 5, **settings}.items():
            cfg.set(name, value)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.worker = ConnectionWorker(1, os.getppid(), [self.listener], None, 30, cfg, Logger(cfg))
        self.worker.wsgi = app
        self.worker.PIPE = os.pipe()  # init_process makes it (and installs signal handlers: main thread only)
        for fd in self.worker.PIPE:
            os.set_blocking(fd, False)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def stop(self) -> None:
        self.worker.alive = False
        os.write(self.worker.PIPE[1], b".")  # what the SIGTERM handler's wakeup fd does
        self.thread.join(15)
        assert not self.thread.is_alive(), "the worker did not stop"

    def close(self) -> None:
        if self.thread.is_alive():
            self.stop()
        for fd in self.worker.PIPE:
            os.close(fd)


@pytest.fixture
def serve() -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def start(app: App = hello, **settings: Any) -> Running:
        running.append(Running(app, **settings))
        return running[-1]

    yield start
    for server in running:
        server.close()


def get(
    conn: http.client.HTTPConnection, path: str = "/", body: bytes = b""
) -> tuple[int, bytes, str | None]:
    conn.request("POST", path, body)
    response = conn.getresponse()
    return response.status, response.read(), response.getheader("Connection")


def test_requests_of_a_kept_alive_connection_are_answered_on_it(serve: Callable[..., Running]) -> None:
    server = serve()
    conn = server.connection()
    answers = [get(conn, body=str(i).encode()) for i in range(20)]
    first = conn.sock
    assert answers == [(200, b"hello%d" % i, "keep-alive") for i in range(20)]
    assert get(conn)[0] == 200 and conn.sock is first  # never reconnected
    conn.close()


def test_idle_connections_hold_no_slot(serve: Callable[..., Running]) -> None:
    """With one request at a time, connections left open and idle do not keep another client waiting."""
    server = serve(threads=1)
    idle = [server.connection() for _ in range(4)]
    for conn in idle:
        assert get(conn)[0] == 200  # each now open and idle, its thread waiting for a next request
    other = server.connection()
    other.timeout = 3
    assert get(other, body=b"!") == (200, b"hello!", "keep-alive")
    for conn in [*idle, other]:
        conn.close()


def test_threads_bound_the_requests_answered_at_once(serve: Callable[..., Running]) -> None:
    inside, release = threading.Semaphore(0), threading.Event()
    at_once, most = [0], [0]
    lock = threading.Lock()

    def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with lock:
            at_once[0] += 1
            most[0] = max(most[0], at_once[0])
        inside.release()
        release.wait(10)
        with lock:
            at_once[0] -= 1
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(slow, threads=2)
    results: list[int] = []
    clients = [threading.Thread(target=lambda: results.append(get(server.connection())[0])) for _ in range(5)]
    for client in clients:
        client.start()
    assert inside.acquire(timeout=5) and inside.acquire(timeout=5)
    assert not inside.acquire(timeout=0.5), "a third request ran while two held both slots"
    release.set()
    for client in clients:
        client.join(10)
    assert results == [200] * 5 and most[0] == 2


def test_a_client_stalling_mid_request_is_cut_off(
    serve: Callable[..., Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "REQUEST_TIMEOUT_SECONDS", 0.3)
    server = serve()
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part of it")
    stalled.settimeout(5)
    started = time.monotonic()
    assert stalled.recv(1024) == b""  # closed by the server, without an answer
    assert 0.2 < time.monotonic() - started < 4
    assert get(server.connection())[0] == 200  # the others are served all the while
    stalled.close()


def test_an_idle_connection_closes_after_keepalive(serve: Callable[..., Running]) -> None:
    server = serve(keepalive=1)
    conn = server.connection()
    assert get(conn)[0] == 200
    conn.sock.settimeout(5)
    started = time.monotonic()
    assert conn.sock.recv(1) == b""
    assert 0.8 < time.monotonic() - started < 4
    conn.close()


def test_malformed_request_is_400_and_app_error_is_500(serve: Callable[..., Running]) -> None:
    server = serve()
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    raw.sendall(b"NOT A REQUEST LINE\r\n\r\n")
    answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 ") and raw.recv(1) == b""
    raw.close()
    assert get(server.connection(), "/boom")[0] == 500
    assert get(server.connection())[0] == 200


def test_at_the_connection_cap_the_next_client_waits_for_one_to_close(serve: Callable[..., Running]) -> None:
    server = serve(worker_connections=2)
    first, second = server.connection(), server.connection()
    assert get(first)[0] == 200 and get(second)[0] == 200
    third: list[tuple[int, bytes, str | None]] = []
    waiting = threading.Thread(target=lambda: third.append(get(server.connection())))
    waiting.start()
    waiting.join(0.7)
    assert waiting.is_alive() and not third, "a third connection was served past the cap of 2"
    first.close()
    waiting.join(10)
    assert third and third[0][0] == 200
    second.close()


def test_stop_finishes_what_is_in_flight_then_closes_idle_connections(
    serve: Callable[..., Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "STOP_KEEPALIVE_LINGER", 0.5)
    inside, release = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            inside.set()
            release.wait(10)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(app)
    idle, busy = server.connection(), server.connection()
    assert get(idle)[0] == 200
    answer: list[tuple[int, bytes, str | None]] = []
    request = threading.Thread(target=lambda: answer.append(get(busy, "/slow")))
    request.start()
    assert inside.wait(5)
    stopping = threading.Thread(target=server.stop)
    stopping.start()
    time.sleep(0.3)
    # Stopping: no new connection is accepted, the one in flight is still served.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).recv(1)
    release.set()
    request.join(5)
    assert answer == [(200, b"ok", "keep-alive")]  # answered (it began before the stop)
    # A request arriving within the linger is still answered, with the end of the connection announced.
    assert get(busy) == (200, b"ok", "close")
    idle.sock.settimeout(5)
    assert idle.sock.recv(1) == b""  # the idle one closed after the linger
    stopping.join(10)
    assert not server.thread.is_alive() and server.worker._open == 0


def test_unread_request_bytes_do_not_cut_off_the_answer(
    serve: Callable[..., Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer that closes the connection while request bytes are still unread: a plain close makes
    the kernel reset the connection and drop the answer's unsent tail; the worker closes gracefully."""
    monkeypatch.setattr(worker_module, "PREREAD_BYTES", 0)  # the app, not the worker, reads the body
    big = 3_000_000

    def refuse(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", str(big)), ("Connection", "close")])
        return [b"y" * big]

    server = serve(refuse)
    for _ in range(2):
        client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        time.sleep(0.1)
        client.sendall(b"x" * 100_000)  # never read by the app
        time.sleep(0.5)  # a slow reader: the answer is not all sent when the worker closes
        received = b""
        while chunk := client.recv(65536):
            received += chunk
        client.close()
        assert received.startswith(b"HTTP/1.1 200 ") and received.endswith(b"y" * 1000)
        assert len(received.partition(b"\r\n\r\n")[2]) == big


def test_without_keepalive_each_connection_is_answered_once(serve: Callable[..., Running]) -> None:
    server = serve(keepalive=0)
    assert get(server.connection()) == (200, b"hello", "close")


def test_a_body_trickling_in_holds_no_slot(
    serve: Callable[..., Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "REQUEST_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(worker_module, "REQUEST_DEADLINE_SECONDS", 3.0)
    server = serve(threads=1)
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    stop = threading.Event()

    def trickle() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                slow.sendall(b"x")  # each byte within the per-read timeout
                time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    time.sleep(0.3)
    other = server.connection()
    other.timeout = 2
    assert get(other)[0] == 200  # the one slot is free: the trickling body is read before taking it
    started = time.monotonic()
    # And the trickler is cut off at the request deadline: an end of stream, or a reset when a trickled
    # byte arrived after the server's last read (TCP answers a close with unread data by RST).
    # A trickler that is not cut off makes recv time out after 10 s and fails the test.
    try:
        answer = slow.recv(1024)
    except ConnectionResetError:
        answer = b""
    assert answer == b""
    assert time.monotonic() - started < 5
    stop.set()
    slow.close()


def test_after_the_parent_died_answers_announce_the_close(serve: Callable[..., Running]) -> None:
    server = serve()
    conn = server.connection()
    assert get(conn)[0] == 200
    server.worker.ppid = -1  # what a changed os.getppid() looks like to the worker
    time.sleep(1.5)  # the main loop has noticed; kept-alive connections linger 2 s
    assert get(conn) == (200, b"hello", "close")


def test_a_client_expecting_100_continue_gets_it_before_sending_its_body(
    serve: Callable[..., Running],
) -> None:
    server = serve()
    client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert client.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"  # not read ahead: it waits for this
    client.sendall(b"abc")
    answer = b""
    while not answer.endswith(b"helloabc") and (chunk := client.recv(4096)):
        answer += chunk  # headers and body may come in two segments
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"helloabc")
    client.close()
