"""A small fake kube-apiserver on 127.0.0.1 for Nodes and Pods: list (paginated) and watch (chunked).

It speaks the same HTTP as the real one to the real ``kubernetes`` client: ``GET /api/v1/nodes`` and
``GET /api/v1/pods`` with ``limit``/``continue``, ``watch=true`` with ``resourceVersion``,
``allowWatchBookmarks`` and ``timeoutSeconds``, and the ``spec.nodeName!=`` field selector. Objects
carry real resourceVersions; :meth:`FakeApiServer.compact` forgets history, so that a watch from an
older version gets the apiserver's ``ERROR`` event with a 410 ``Expired`` Status. Faults are injected
per kind: :meth:`fail_request` (the next list or watch request answers an HTTP error Status) and
:meth:`disturb_stream` (the open watch drops the connection mid-chunk, or sends ERROR 410 and ends).
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import kubernetes.client

Kind = Literal["Node", "Pod"]
StreamFault = Literal["drop", "gone", "end"]
PATHS: dict[str, Kind] = {"/api/v1/nodes": "Node", "/api/v1/pods": "Pod"}


def _key(kind: Kind, obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return meta["name"] if kind == "Node" else f"{meta['namespace']}/{meta['name']}"


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}  # fmt: skip


class FakeApiServer:
    """Cluster state, event history and injected faults, served over HTTP/1.1."""

    def __init__(self, bookmark_interval: float = 0.2) -> None:
        self.cond = threading.Condition()
        self.rv = 1000
        self.objects: dict[Kind, dict[str, dict[str, Any]]] = {"Node": {}, "Pod": {}}
        self.history: dict[Kind, list[tuple[int, str, dict[str, Any]]]] = {"Node": [], "Pod": []}
        self.compacted: dict[Kind, int] = {"Node": 0, "Pod": 0}
        self.request_faults: dict[Kind, deque[int]] = {"Node": deque(), "Pod": deque()}
        self.stream_faults: dict[Kind, deque[StreamFault]] = {"Node": deque(), "Pod": deque()}
        self.requests: list[tuple[Kind, dict[str, str]]] = []
        self.continues: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self.bookmark_interval = bookmark_interval
        self.closed = False
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # --- life cycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api_client(self) -> kubernetes.client.ApiClient:
        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        return kubernetes.client.ApiClient(configuration)

    def start(self) -> FakeApiServer:
        self._thread.start()
        return self

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # --- cluster changes --------------------------------------------------------------------------

    def put(self, kind: Kind, obj: dict[str, Any]) -> None:
        """Create or update an object (ADDED or MODIFIED), stamping a new resourceVersion."""
        obj = copy.deepcopy(obj)
        with self.cond:
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            key = _key(kind, obj)
            kind_of_event = "MODIFIED" if key in self.objects[kind] else "ADDED"
            self.objects[kind][key] = obj
            self.history[kind].append((self.rv, kind_of_event, obj))
            self.cond.notify_all()

    def delete(self, kind: Kind, key: str) -> None:
        with self.cond:
            obj = copy.deepcopy(self.objects[kind].pop(key))
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.history[kind].append((self.rv, "DELETED", obj))
            self.cond.notify_all()

    def compact(self, kind: Kind) -> None:
        """Forget the history: watches from any version before now get 410 Gone."""
        with self.cond:
            self.compacted[kind] = self.rv + 1
            self.history[kind] = []

    def fail_request(self, kind: Kind, code: int) -> None:
        """The next list or watch request of ``kind`` is answered with an HTTP ``code`` Status."""
        with self.cond:
            self.request_faults[kind].append(code)

    def disturb_stream(self, kind: Kind, fault: StreamFault) -> None:
        """The open (or next) watch of ``kind``: ``drop`` the connection mid-chunk, send ERROR
        410 (``gone``) or ``end`` normally."""
        with self.cond:
            self.stream_faults[kind].append(fault)
            self.cond.notify_all()

    def watches(self, kind: Kind) -> list[dict[str, str]]:
        with self.cond:
            return [q for k, q in self.requests if k == kind and q.get("watch") == "true"]

    def lists(self, kind: Kind) -> list[dict[str, str]]:
        with self.cond:
            return [q for k, q in self.requests if k == kind and q.get("watch") != "true"]

    # --- serving ----------------------------------------------------------------------------------

    def matches(self, kind: Kind, obj: dict[str, Any], query: dict[str, str]) -> bool:
        selector = query.get("fieldSelector", "")
        if selector == "spec.nodeName!=":
            return bool(obj.get("spec", {}).get("nodeName"))
        assert selector == "", f"fake apiserver does not know field selector {selector!r}"
        return True

    def list_page(self, kind: Kind, query: dict[str, str]) -> dict[str, Any]:
        token = query.get("continue")
        with self.cond:
            if token:
                rv, items = self.continues.pop(token)
            else:
                rv = self.rv
                items = [copy.deepcopy(o) for _, o in sorted(self.objects[kind].items())]
                items = [o for o in items if self.matches(kind, o, query)]
            limit = int(query.get("limit", "0") or 0)
            page, rest = (items[:limit], items[limit:]) if limit else (items, [])
            metadata: dict[str, Any] = {"resourceVersion": str(rv)}
            if rest:
                next_token = f"{kind}-{rv}-{len(self.continues)}-{len(rest)}"
                self.continues[next_token] = (rv, rest)
                metadata["continue"] = next_token
        return {"kind": f"{kind}List", "apiVersion": "v1", "metadata": metadata, "items": page}

    def stream(self, kind: Kind, query: dict[str, str]) -> Iterator[bytes | StreamFault]:
        """Watch events as JSON lines, or a fault to act on."""
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + int(query.get("timeoutSeconds") or 3600)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        if since < self.compacted[kind] - 1:
            message = f"too old resource version: {since} ({self.compacted[kind] - 1})"
            yield _line({"type": "ERROR", "object": status(410, "Expired", message)})
            return
        sent = since
        last_bookmark = time.monotonic()
        while True:
            with self.cond:
                while True:
                    pending = [e for e in self.history[kind] if e[0] > sent]
                    if pending or self.stream_faults[kind] or self.closed or time.monotonic() >= deadline:
                        break
                    if bookmarks and time.monotonic() - last_bookmark >= self.bookmark_interval:
                        break
                    self.cond.wait(0.02)
                fault = self.stream_faults[kind].popleft() if self.stream_faults[kind] else None
                current = self.rv
            if self.closed or time.monotonic() >= deadline:
                return
            for rv, kind_of_event, obj in pending:
                sent = rv
                if self.matches(kind, obj, query):
                    yield _line({"type": kind_of_event, "object": obj})
            if fault is not None:
                yield fault
                if fault != "drop":
                    return
            if bookmarks and time.monotonic() - last_bookmark >= self.bookmark_interval:
                last_bookmark = time.monotonic()
                sent = max(sent, current)
                bookmark = {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": str(current)}}
                yield _line({"type": "BOOKMARK", "object": bookmark})


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hang up on watches all the time (that is the point of these tests)


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode() + b"\n"


def _handler(api: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            kind = PATHS.get(url.path)
            if kind is None:
                self._json(404, status(404, "NotFound", f"{url.path} not found"))
                return
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            with api.cond:
                api.requests.append((kind, query))
                code = api.request_faults[kind].popleft() if api.request_faults[kind] else None
            if code is not None:
                reason = "Expired" if code == 410 else "InternalError"
                self._json(code, status(code, reason, f"injected fault {code}"))
                return
            if query.get("watch") != "true":
                self._json(200, api.list_page(kind, query))
                return
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
                        item = _line({"type": "ERROR", "object": status(410, "Expired", "injected 410")})
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
    api = FakeApiServer().start()
    try:
        yield api
    finally:
        api.close()
