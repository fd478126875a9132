"""``kube.RawApi``: the raw POST the extender binds with, against a server that records what arrives."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from confidential_pods.kube import RawApi


@dataclass
class Recorder:
    """What arrived: request line target and headers, in order."""

    url: str = ""
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@contextmanager
def recording() -> Iterator[Recorder]:
    """A plain-HTTP server answering every POST ``201 {}`` (kept alive), recording each request."""
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            recorder.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            body = b"{}"
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Configuration()`` reads the proxy variables: a proxy of the machine must not carry these requests."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rotating_token_client(host: str) -> tuple[client.ApiClient, list[int]]:
    """A client whose refresh hook hands out a new token on every call, as a rotated ServiceAccount
    token would be read again; the list counts the calls."""
    configuration = client.Configuration()
    configuration.host = host
    calls: list[int] = []

    def refresh(config: client.Configuration) -> None:
        calls.append(1)
        config.api_key["BearerToken"] = f"Bearer token-{len(calls)}"

    configuration.refresh_api_key_hook = refresh
    configuration.api_key["BearerToken"] = "Bearer token-0"
    return client.ApiClient(configuration), calls


def test_credentials_are_asked_for_once_per_second_and_rotate() -> None:
    """The client's refresh hook re-applies its whole configuration (and re-reads the proxy variables
    from the process environment) on every call: at most once a second here, and a rotated token is
    sent from then on."""
    clock = Clock()
    with recording() as server:
        api, calls = rotating_token_client(server.url)
        raw = RawApi(api, clock=clock)
        for _ in range(20):
            assert raw.post("/api/v1/namespaces/ns/pods/p/binding", b"{}", timeout=5)[0] == 201
        assert len(calls) == 1
        clock.now += RawApi.AUTH_REFRESH_SECONDS - 0.01
        raw.post("/x", b"{}", timeout=5)
        assert len(calls) == 1
        clock.now += 0.01
        raw.post("/x", b"{}", timeout=5)
        assert len(calls) == 2
    tokens = [headers["authorization"] for _, headers in server.seen]
    assert tokens == ["Bearer token-1"] * 21 + ["Bearer token-2"]
    assert {headers["content-type"] for _, headers in server.seen} == {"application/json"}
    assert server.seen[0][0] == "/api/v1/namespaces/ns/pods/p/binding"


def test_no_credentials_sends_no_authorization() -> None:
    with recording() as server:
        configuration = client.Configuration()
        configuration.host = server.url
        RawApi(client.ApiClient(configuration)).post("/x", b"{}", timeout=5)
    assert "authorization" not in server.seen[0][1]


def test_a_path_prefix_of_the_host_is_kept() -> None:
    """An apiserver reached behind a path (``server: https://proxy.example/k8s/clusters/c-1``)."""
    with recording() as server:
        configuration = client.Configuration()
        configuration.host = server.url + "/k8s/clusters/c-1/"
        RawApi(client.ApiClient(configuration)).post("/api/v1/x", b"{}", timeout=5)
    assert server.seen[0][0] == "/k8s/clusters/c-1/api/v1/x"


def test_consecutive_posts_share_the_clients_kept_alive_connection() -> None:
    with recording() as server:
        configuration = client.Configuration()
        configuration.host = server.url
        api = client.ApiClient(configuration)
        raw = RawApi(api)
        for _ in range(5):
            assert raw.post("/x", b"{}", timeout=5) == (201, b"{}")
        pool = api.rest_client.pool_manager.connection_from_url(server.url)
        assert pool.num_connections == 1 and pool.num_requests == 5  # the client's own pool


def test_through_a_proxy_the_request_goes_to_the_proxy() -> None:
    """With ``proxy`` set (or HTTPS_PROXY in the environment) the client's ProxyManager sends it."""
    with recording() as proxy:
        configuration = client.Configuration()
        configuration.host = "http://apiserver.invalid:6443"
        configuration.proxy = proxy.url
        status, answer = RawApi(client.ApiClient(configuration)).post("/api/v1/x", b"{}", timeout=5)
    assert (status, json.loads(answer)) == (201, {})
    assert proxy.seen[0][0] == "http://apiserver.invalid:6443/api/v1/x"
