"""The tests' one fake kube-apiserver: :class:`tests.fakecluster.FakeCluster` over HTTP/1.1 on 127.0.0.1.

The real ``kubernetes`` client talks to it as to the real one (the extender's watches and binder, the certs
commands): JSON bodies, ``Status`` errors, watches as chunked JSON lines. What it knows and the faults it
injects are described in :mod:`tests.fakecluster`.

The extender benchmark serves its clusters itself (benchmarks/extender_bench.py): 150,000 pods generated
from a template in another process, streamed faster than a store of deep copies behind one lock can.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes.client

from tests.fakecluster import RESOURCES, FakeCluster, Kind, Request, event_line, status

ROUTE = re.compile(
    r"^/(?:api|apis/(?P<group>[^/]+))/v1(?:/namespaces/(?P<namespace>[^/]+))?/(?P<plural>[a-z]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<subresource>binding))?)?$"
)


class FakeApiServer(FakeCluster):
    """A :class:`FakeCluster` on 127.0.0.1:<free port>; a context manager, or start() and close()."""

    def __init__(self, bookmark_interval: float = 0.2) -> None:
        super().__init__(bookmark_interval)
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api_client(self) -> kubernetes.client.ApiClient:
        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        return kubernetes.client.ApiClient(configuration)

    def kubeconfig(self, directory: Path) -> Path:
        """A kubeconfig for this server (a token user), written as ``<directory>/kubeconfig``."""
        return write_kubeconfig(directory / "kubeconfig", self.url, token="test-token")

    def start(self) -> FakeApiServer:
        self._thread.start()
        return self

    def close(self) -> None:
        super().close()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_kubeconfig(path: Path, server: str, *, token: str | None = None) -> Path:
    """A kubeconfig for a plain-HTTP apiserver at ``server``, its user with ``token`` or no credentials."""
    user = {"token": token} if token is not None else {}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "user"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))
    return path


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hang up on watches all the time (that is the point of the watch tests)


def _handler(api: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def do_PATCH(self) -> None:
            self._handle()

        def _handle(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            route = ROUTE.match(url.path)
            resource = RESOURCES.get(route["plural"]) if route else None
            if route is None or resource is None or (route["group"] or "") != resource.group:
                self._json(404, status(404, "NotFound", f"the server could not find {url.path}"))
                return
            request = Request(self.command, url.path, resource.kind, route["name"], route["subresource"],
                              query, self.headers.get("Content-Type"), copy.deepcopy(body))  # fmt: skip
            with api.cond:
                api.requests.append(request)
                code = api.take_fault(api.request_faults[resource.kind], query)
            if code is not None:
                reason = "Expired" if code == 410 else "InternalError"
                self._json(code, status(code, reason, f"injected fault {code}"))
            elif self.command == "GET" and query.get("watch") == "true":
                self._watch(resource.kind, query)
            else:
                self._json(*api.answer(request, route["namespace"]))

        def _watch(self, kind: Kind, query: dict[str, str]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for item in api.stream(kind, query):
                    if item == "drop":
                        # Half a chunk, then the connection dies: urllib3 raises ProtocolError.
                        self.wfile.write(b"400\r\n" + b'{"type": "MODIFIED", "obj')
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    if item == "gone":
                        item = event_line({"type": "ERROR", "object": status(410, "Expired", "injected 410")})
                    if item == "end":
                        break
                    assert isinstance(item, bytes)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(item), item))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _json(self, code: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def serving() -> Iterator[FakeApiServer]:
    with FakeApiServer() as api:
        yield api
