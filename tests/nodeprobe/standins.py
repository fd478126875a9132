"""Stand-ins for the node probe's tests, real where the probe talks to real things: an aesmd on a unix
socket speaking its framing, a PCCS over HTTPS on 127.0.0.1 with a certificate from a test CA, and an
HTTP server recording what the kubernetes client sends for the Node.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from certs.authority import certificate_pem, issue_authority, issue_serving, key_pem
from nodeprobe import aesm

#: What the aesmd stand-in does with a request: given the request's bytes, the raw bytes to send back
#: (framing included), or None to close without answering.
Behaviour = Callable[[bytes], bytes | None]


def answer_keys(count: int, error_code: int = aesm.AESM_SUCCESS) -> Behaviour:
    """Answer GetSupportedAttKeyIDNum as aesmd does (the Go stand-in's answer: errorCode, att_key_id_num)."""

    def behaviour(request: bytes) -> bytes | None:
        fields = aesm.fields(request)
        if not isinstance(fields.get(aesm.GET_SUPPORTED_ATT_KEY_ID_NUM), bytes):
            return None  # aesmd closes on a request it does not know
        inner = _varint_field(1, error_code) + _varint_field(2, count)
        return aesm.frame(
            aesm.varint(aesm.GET_SUPPORTED_ATT_KEY_ID_NUM << 3 | 2) + aesm.varint(len(inner)) + inner
        )

    return behaviour


def send(raw: bytes) -> Behaviour:
    """Answer any request with ``raw`` as it is."""
    return lambda request: raw


def _varint_field(number: int, value: int) -> bytes:
    return aesm.varint(number << 3) + aesm.varint(value)


@dataclass
class AesmStandIn:
    """An aesmd on a unix socket, one request per connection; records what it received."""

    path: Path
    behaviour: Behaviour
    stall: float = 0.0  # seconds to wait after sending the answer's first byte
    received: list[bytes] = field(default_factory=list)


@contextlib.contextmanager
def aesmd(path: Path, behaviour: Behaviour, *, stall: float = 0.0) -> Iterator[AesmStandIn]:
    standin = AesmStandIn(path, behaviour, stall)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)  # a stale socket is replaced, as aesmd replaces it
    listener.bind(str(path))
    listener.listen(8)

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection, contextlib.suppress(OSError):
                connection.settimeout(5)
                (size,) = struct.unpack("=I", _read(connection, 4))
                request = _read(connection, size)
                standin.received.append(request)
                reply = behaviour(request)
                if reply and stall:
                    connection.sendall(reply[:1])
                    time.sleep(stall)
                    reply = reply[1:]
                if reply:
                    connection.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            socket.socket(socket.AF_UNIX).connect(str(path))  # wake accept()
        thread.join(timeout=5)


def _read(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


@dataclass(frozen=True)
class Pki:
    """A test CA (``ca``: its PEM file) and a serving certificate it signed (``cert``, ``key``)."""

    ca: Path
    cert: Path
    key: Path


def make_pki(directory: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Pki:
    now = datetime.now(UTC)
    authority = issue_authority(now=now, days=1)
    serving = issue_serving(authority, names, now=now, days=1)
    paths = Pki(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    paths.ca.write_bytes(certificate_pem(authority.certificate))
    paths.cert.write_bytes(certificate_pem(serving.certificate))
    paths.key.write_bytes(key_pem(serving.key))
    return paths


#: What the PCCS stand-in serves: path → (status, body). Anything else is 404, as PCCS answers.
ROOT_CA_CRL = "/sgx/certification/v4/rootcacrl"


@dataclass
class PccsStandIn:
    port: int
    routes: dict[str, tuple[int, bytes]]
    requests: list[str] = field(default_factory=list)

    def url(self, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}/sgx/certification/v4/"


@contextlib.contextmanager
def pccs(
    pki: Pki, routes: dict[str, tuple[int, bytes]] | None = None, delay: float = 0.0
) -> Iterator[PccsStandIn]:
    """An HTTPS PCCS on 127.0.0.1 answering ``routes`` (default: rootcacrl, a hex CRL), after ``delay``."""
    standin = PccsStandIn(0, routes if routes is not None else {ROOT_CA_CRL: (200, b"3082012e30")})

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            standin.requests.append(self.path)
            time.sleep(delay)
            status, body = standin.routes.get(self.path, (404, b""))
            self.send_response(status)
            self.send_header("Content-Type", "application/pkix-crl")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert, pki.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    standin.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Recorded:
    method: str
    path: str
    content_type: str
    body: Any


@dataclass
class NodeApi:
    """An apiserver stand-in for one Node: GET returns ``node``; PATCH of /status is recorded and answered
    with ``patch_status`` (200: the node)."""

    url: str
    node: dict[str, Any]
    requests: list[Recorded] = field(default_factory=list)
    patch_status: int = 200


@contextlib.contextmanager
def node_api(node: dict[str, Any]) -> Iterator[NodeApi]:
    api = NodeApi("", node)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            api.requests.append(Recorded("GET", self.path, "", None))
            self._answer(200, api.node)

        def do_PATCH(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            api.requests.append(Recorded("PATCH", self.path, self.headers.get("Content-Type", ""), body))
            if api.patch_status != 200:
                status = {
                    "kind": "Status",
                    "status": "Failure",
                    "message": "nodes is forbidden",
                    "code": api.patch_status,
                }
                self._answer(api.patch_status, status)
                return
            self._answer(200, api.node)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
