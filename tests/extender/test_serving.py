"""The extender served for real: `confidential-pods extender serve --snapshot` on 127.0.0.1, plain and TLS."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from tests import machine
from tests.commands import extender_serve
from tests.extender import scheduler_json as sj
from tests.machine import free_port
from tests.webhook.tls import issue_serving_pair, make_authority


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    context: ssl.SSLContext | None = None

    def connection(self) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=10)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def call(
        self, conn: http.client.HTTPConnection, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if response.getheader(
            "Content-Type"
        ) == "application/json" else data


def cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    docs = [
        {"kind": "Node", **sj.node("sgx-a", 93)},
        {"kind": "Node", **sj.node("sgx-b", 93)},
        {"kind": "Node", **sj.node("plain", None)},
        {"kind": "Node", **sj.node("race", 50)},
        {"kind": "Pod", **sj.pod("running", epc_mib=61, node_name="sgx-b", phase="Running")},
    ]
    path.write_text(yaml.safe_dump_all(docs))
    return path


def start(args: list[str], tmp_path: Path, context: ssl.SSLContext | None = None) -> Served:
    port = free_port()
    log = tmp_path / f"extender-{port}.log"
    command = extender_serve(port, "--threads", "4", *args)
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    served = Served(process=process, port=port, log=log, context=context)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise AssertionError(f"extender exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError):
            conn = served.connection()
            try:
                if served.call(conn, "GET", "/healthz")[0] == 200:
                    return served
            finally:
                conn.close()
        if time.monotonic() > deadline:
            stop(served)
            raise AssertionError(f"extender did not come up:\n{log.read_text()}")
        time.sleep(0.1)


def stop(served: Served) -> int:
    return machine.stop(served.process)


@pytest.fixture(scope="module", params=["http", "https"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp(request.param)
    args = ["--snapshot", str(cluster_file(tmp_path))]
    context = None
    if request.param == "https":
        ca = make_authority()
        pair = issue_serving_pair(ca, "extender.test")
        (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
        (tmp_path / "tls.key").write_bytes(pair.key_pem)
        args += ["--cert", str(tmp_path / "tls.crt"), "--key", str(tmp_path / "tls.key")]
        context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    server = start(args, tmp_path, context)
    yield server
    assert stop(server) == 0, server.log.read_text()


def test_scheduling_cycle_over_one_keep_alive_connection(served: Served) -> None:
    """filter, prioritize, bind as kube-scheduler sends them, then the reservation is visible."""
    conn = served.connection()
    try:
        assert served.call(conn, "GET", "/readyz") == (200, {"status": "ready"})
        pod = sj.pod("cycle", epc_mib=40)
        status, filtered = served.call(
            conn, "POST", "/filter", sj.args_with_names(pod, ["sgx-a", "sgx-b", "plain"])
        )
        assert status == 200
        assert filtered["NodeNames"] == ["sgx-a"]
        assert filtered["FailedNodes"] == {
            "sgx-b": "insufficient SGX EPC: pod requests 40Mi, node has 32Mi free of 93Mi"
        }
        status, scores = served.call(conn, "POST", "/prioritize", sj.args_with_names(pod, ["sgx-a"]))
        assert (status, scores) == (200, [{"Host": "sgx-a", "Score": 5}])
        assert served.call(conn, "POST", "/bind", sj.binding_args(pod, "sgx-a")) == (200, {"Error": ""})
        status, node = served.call(conn, "GET", "/inspect/sgx-a")
        # In snapshot mode a bind is final: the pod holds its EPC at once (nothing would confirm it).
        assert (node["used"], node["reserved"]) == (40 * 1024 * 1024, 0)
        assert "cycle" in [p["name"] for p in node["pods"]]
        # whole Node objects in, whole Node objects out
        second = sj.pod("second", epc_mib=40)
        nodes = [sj.node("sgx-a", 93), sj.node("sgx-b", 93)]
        _, by_nodes = served.call(conn, "POST", "/filter", sj.args_with_nodes(second, nodes))
        assert by_nodes["Nodes"]["items"] == [nodes[0]] and by_nodes["NodeNames"] is None
        status, metrics = served.call(conn, "GET", "/metrics")
        assert (
            status == 200
            and b'confidential_pods_extender_requests_total{outcome="ok",verb="bind"} 1.0' in metrics
        )
        assert served.call(conn, "POST", "/filter", "nonsense")[0] == 400
        assert served.call(conn, "GET", "/nowhere")[0] == 404
    finally:
        conn.close()


def test_no_peer_may_set_proxy_headers(served: Served) -> None:
    """gunicorn's defaults trust a local peer's scheme headers (conflicting ones: 400) and SCRIPT_NAME;
    ours trust nobody's, so they change nothing."""
    conn = served.connection()
    headers = {"Content-Type": "application/json", "X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "off",
               "Script-Name": "/elsewhere"}  # fmt: skip
    conn.request("POST", "/filter", json.dumps(sj.args_with_names(sj.pod(epc_mib=8), ["sgx-a"])), headers)
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())["NodeNames"]) == (200, ["sgx-a"])
    conn.close()


def test_certificate_expiry_is_exported_when_serving_tls(served: Served) -> None:
    conn = served.connection()
    try:
        status, metrics = served.call(conn, "GET", "/metrics")
        peer = conn.sock.getpeercert(binary_form=True) if isinstance(conn.sock, ssl.SSLSocket) else None
    finally:
        conn.close()
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.decode())}
    expiry = families.get("confidential_pods_extender_certificate_expiry_timestamp_seconds")
    if peer is None:
        assert expiry is None  # plain HTTP: no certificate, no metric
    else:
        assert expiry is not None and expiry.type == "gauge"
        not_after = x509.load_der_x509_certificate(peer).not_valid_after_utc.timestamp()
        assert [s.value for s in expiry.samples] == [not_after]


def test_one_worker_shares_the_ledger_across_connections(served: Served) -> None:
    """A bind on one connection is seen by a filter on another (one ledger per server)."""
    first, second = served.connection(), served.connection()
    try:
        pod = sj.pod("shared", epc_mib=16)
        served.call(first, "POST", "/filter", sj.args_with_names(pod, ["sgx-b"]))
        assert served.call(first, "POST", "/bind", sj.binding_args(pod, "sgx-b")) == (200, {"Error": ""})
        _, filtered = served.call(
            second, "POST", "/filter", sj.args_with_names(sj.pod("next", epc_mib=17), ["sgx-b"])
        )
        assert filtered["FailedNodes"] == {
            "sgx-b": "insufficient SGX EPC: pod requests 17Mi, node has 16Mi free of 93Mi"
        }
    finally:
        first.close()
        second.close()


def test_concurrent_binds_over_http_never_overcommit(served: Served) -> None:
    """16 scheduling cycles at once on 16 connections for a node with room for 5 of them."""
    results: list[str] = []
    lock = threading.Lock()
    start_together = threading.Barrier(16)

    def cycle(index: int) -> None:
        conn = served.connection()
        try:
            pod = sj.pod(f"racer-{index}", epc_mib=10)
            start_together.wait()
            served.call(conn, "POST", "/filter", sj.args_with_names(pod, ["race"]))
            _, answer = served.call(conn, "POST", "/bind", sj.binding_args(pod, "race"))
            with lock:
                results.append(answer["Error"])
        finally:
            conn.close()

    threads = [threading.Thread(target=cycle, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 16
    assert sum(1 for error in results if not error) == 5
    assert all("insufficient SGX EPC" in error for error in results if error)
    conn = served.connection()
    try:
        node = served.call(conn, "GET", "/inspect/race")[1]
    finally:
        conn.close()
    racers = [p for p in node["pods"] if p["name"].startswith("racer-")]
    assert (node["used"], node["free"], len(racers), node["reserved"]) == (50 * 1024 * 1024, 0, 5, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--snapshot", "/nonexistent/cluster.yaml"], "cannot read snapshot /nonexistent/cluster.yaml"),
        (["--snapshot", "SNAP", "--cert", "/x.crt"], "--cert and --key go together"),
        (["--kubeconfig", "/nonexistent/kubeconfig"], "cannot load API server credentials from kubeconfig"),
    ],
)
def test_start_up_errors_are_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(cluster_file(tmp_path)) if a == "SNAP" else a for a in args]
    command = extender_serve(free_port(), *args, host=None)
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = extender_serve(port, "--snapshot", str(cluster_file(tmp_path)))
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr


def test_metrics_port_serves_metrics_and_nothing_else(tmp_path: Path) -> None:
    """``--metrics-port``: Prometheus can scrape the extender while the verbs stay on localhost."""
    metrics_port = free_port()
    served = start(
        ["--snapshot", str(cluster_file(tmp_path)), "--metrics-port", str(metrics_port), "--metrics-host",
         "127.0.0.1"],
        tmp_path,
    )  # fmt: skip
    try:
        status, body = machine.fetch(
            http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=10), "GET", "/metrics"
        )
        assert status == 200 and b"confidential_pods_extender_ledger_nodes 4.0" in body
        verb = json.dumps(sj.args_with_names(sj.pod(), ["sgx-a"])).encode()
        status, answer = machine.fetch(
            http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=10), "POST", "/filter", verb
        )
        assert status == 200 and b"NodeNames" not in answer and b"confidential_pods_extender" in answer
        status, answer = machine.fetch(
            http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=10), "GET", "/inspect"
        )
        assert b'"nodes"' not in answer  # the ledger's details are not there either
        # The verbs' port answers the filter as before.
        conn = served.connection()
        try:
            status, answer = served.call(conn, "POST", "/filter", json.loads(verb))
        finally:
            conn.close()
        assert status == 200 and answer["NodeNames"] == ["sgx-a"]
    finally:
        assert stop(served) == 0, served.log.read_text()


def test_metrics_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [
            "--snapshot",
            str(cluster_file(tmp_path)),
            "--metrics-port",
            str(port),
            "--metrics-host",
            "127.0.0.1",
        ]
        result = subprocess.run(
            extender_serve(free_port(), *args), capture_output=True, text=True, timeout=60, check=False
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr and "Traceback" not in result.stderr


def test_freeze_when_ready_freezes_once_after_ready() -> None:
    import gc

    from extender.serving import FreezeWhenReady

    state = {"ready": False}
    ready = FreezeWhenReady(lambda: state["ready"])
    gc.unfreeze()
    try:
        assert ready() is False
        assert gc.get_freeze_count() == 0
        state["ready"] = True
        assert ready() is True
        frozen = gc.get_freeze_count()
        assert frozen > 0
        gc.unfreeze()
        assert ready() is True
        assert gc.get_freeze_count() == 0  # only the first "ready" freezes
        state["ready"] = False
        assert ready() is False
    finally:
        gc.unfreeze()


def test_chunked_body_over_the_limit_is_413(tmp_path: Path) -> None:
    served = start(["--snapshot", str(cluster_file(tmp_path)), "--max-body", "65536"], tmp_path)
    try:
        big = json.dumps(sj.args_with_names(sj.pod(), ["sgx-a"] * 20_000)).encode()
        assert len(big) > 65536
        status, answer = machine.fetch_chunked(served.connection(), "/filter", big)
        assert status == 413 and b"body larger than 65536 bytes" in answer
        small = json.dumps(sj.args_with_names(sj.pod(), ["sgx-a"])).encode()
        status, answer = machine.fetch_chunked(served.connection(), "/filter", small)
        assert status == 200 and json.loads(answer)["NodeNames"] == ["sgx-a"]
    finally:
        assert stop(served) == 0, served.log.read_text()


def test_drain_period_fails_readiness_but_keeps_answering_verbs(tmp_path: Path) -> None:
    served = start(["--snapshot", str(cluster_file(tmp_path)), "--drain-seconds", "3"], tmp_path)
    conn = served.connection()
    try:
        assert served.call(conn, "GET", "/readyz")[0] == 200
        served.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 2
        while served.call(conn, "GET", "/readyz")[0] != 503:
            assert time.monotonic() < deadline, "/readyz still succeeds after SIGTERM"
            time.sleep(0.05)
        # Not ready for new traffic, yet the verbs kube-scheduler still sends are answered.
        status, filtered = served.call(
            conn, "POST", "/filter", sj.args_with_names(sj.pod(epc_mib=8), ["sgx-a"])
        )
        assert (status, filtered["NodeNames"]) == (200, ["sgx-a"])
    finally:
        conn.close()
    assert served.process.wait(timeout=30) == 0
    log = served.log.read_text()
    assert "/readyz now fails; serving 3.0 s more before stopping" in log and "Traceback" not in log


@pytest.mark.parametrize("worker_class", ["connection", "gthread"])
def test_either_worker_class_serves_the_verbs(tmp_path: Path, worker_class: str) -> None:
    served = start(["--snapshot", str(cluster_file(tmp_path)), "--worker-class", worker_class], tmp_path)
    conn = served.connection()
    try:
        for _ in range(3):  # one kept-alive connection
            status, filtered = served.call(
                conn, "POST", "/filter", sj.args_with_names(sj.pod(epc_mib=8), ["sgx-a", "plain"])
            )
            assert (status, filtered["NodeNames"]) == (200, ["sgx-a"])
    finally:
        conn.close()
        assert stop(served) == 0, served.log.read_text()
    assert f"(1 {worker_class} worker x 4 threads)" in served.log.read_text()
