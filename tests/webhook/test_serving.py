"""The webhook served for real: `confidential-pods webhook serve` on 127.0.0.1 over TLS."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from confidential_pods import tlscontext
from tests.commands import webhook_serve
from tests.machine import fetch, fetch_chunked, free_port, stop
from tests.webhook import samples
from tests.webhook.tls import Authority, ServingPair, issue_serving_pair, make_authority
from webhook.metrics import WebhookMetrics

CONFIG = "aesm: host\nruntimeClass: none\n"
#: An OpenSSL configuration that allows TLS 1.0+ (Debian's refuses < 1.2 on its own): the server runs
#: under it, so a TLS 1.1 handshake refused with a protocol-version alert comes from the serving
#: context's own minimum version (a lax minimum shows up as a cipher handshake failure instead).
PERMISSIVE_OPENSSL_CONF = """\
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1
CipherString = DEFAULT:@SECLEVEL=0
"""
REVIEWS_METRIC = "confidential_pods_webhook_reviews"
CERTIFICATE_EXPIRY_METRIC = "confidential_pods_webhook_certificate_expiry_timestamp_seconds"


# ---------------------------------------------------------------- helpers


def write_pair(directory: Path, pair: ServingPair) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(pair.cert_pem)
    (directory / "tls.key").write_bytes(pair.key_pem)
    return directory / "tls.crt", directory / "tls.key"


class SecretVolume:
    """A directory laid out as kubelet projects a Secret: tls.crt -> ..data/tls.crt, ..data -> ..<version>."""

    def __init__(self, root: Path, pair: ServingPair) -> None:
        self.root = root
        self.version = 0
        root.mkdir(parents=True)
        self.publish(pair)
        (root / "tls.crt").symlink_to("..data/tls.crt")
        (root / "tls.key").symlink_to("..data/tls.key")

    @property
    def cert(self) -> Path:
        return self.root / "tls.crt"

    @property
    def key(self) -> Path:
        return self.root / "tls.key"

    def publish(self, pair: ServingPair) -> None:
        """kubelet's atomic update: write a new timestamped dir, swap the ..data symlink with a rename."""
        self.version += 1
        write_pair(self.root / f"..v{self.version}", pair)
        staging = self.root / "..data_tmp"
        staging.symlink_to(f"..v{self.version}")
        os.replace(staging, self.root / "..data")


def client_context(ca: Authority) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.cert_pem.decode())


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    ca: Authority
    log: Path
    tmpdir: Path

    def connection(self, host: str = "127.0.0.1") -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(host, self.port, context=client_context(self.ca), timeout=10)

    def get(self, path: str) -> tuple[int, bytes]:
        return fetch(self.connection(), "GET", path)

    def post_review(self, review: dict[str, Any], conn: http.client.HTTPSConnection | None = None) -> Any:
        own = conn is None
        conn = conn or self.connection()
        try:
            conn.request(
                "POST", "/mutate", body=json.dumps(review), headers={"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, body
            return json.loads(body)
        finally:
            if own:
                conn.close()

    def peer_certificate(self) -> x509.Certificate:
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
            client_context(self.ca).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)

    def peer_serial(self) -> int:
        return self.peer_certificate().serial_number

    def reviews_counted(self) -> float:
        status, body = self.get("/metrics")
        assert status == 200
        total = 0.0
        for family in text_string_to_metric_families(body.decode()):
            if family.name == REVIEWS_METRIC:
                total += sum(s.value for s in family.samples if s.name == REVIEWS_METRIC + "_total")
        return total

    def worker_pids(self) -> set[int]:
        """Children of the gunicorn master, read from /proc."""
        children = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.process.pid:
                children.add(int(entry.name))
        return children

    def metric_files_pids(self) -> set[int]:
        """Worker pids that wrote counter files into the server's PROMETHEUS_MULTIPROC_DIR."""
        pids = set()
        for db in self.tmpdir.glob("confidential-pods-metrics-*/counter_*.db"):
            pids.add(int(db.stem.split("_", 1)[1]))
        return pids


def start_server(
    tmp_path: Path,
    ca: Authority,
    cert: Path,
    key: Path,
    *,
    workers: int = 2,
    threads: int = 2,
    drain_seconds: float | None = None,
    config_text: str = CONFIG,
) -> Server:
    """`confidential-pods webhook serve …`, or serve() itself when a drain period is asked for."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    log = tmp_path / "server.log"
    command = webhook_serve(cert, key, port, config=config, workers=workers, threads=threads)
    if drain_seconds is not None:
        command = [
            sys.executable,
            "-c",
            "import logging, sys; logging.basicConfig(level=logging.INFO);"
            "from confidential_pods.settings import load_settings; from webhook.serving import serve;"
            f"sys.exit(serve(load_settings({str(config)!r}), cert={str(cert)!r}, key={str(key)!r},"
            f" host='127.0.0.1', port={port}, workers={workers}, threads={threads},"
            f" drain_seconds={drain_seconds}))",
        ]
    openssl_conf = tmp_path / "openssl.cnf"
    openssl_conf.write_text(PERMISSIVE_OPENSSL_CONF)
    env = {**os.environ, "TMPDIR": str(tmpdir), "OPENSSL_CONF": str(openssl_conf)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = Server(process=process, port=port, ca=ca, log=log, tmpdir=tmpdir)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError):
            if server.get("/healthz")[0] == 200 and len(server.worker_pids()) >= workers:
                return server
        if time.monotonic() > deadline:
            stop_server(server)
            raise AssertionError(f"server did not come up:\n{log.read_text()}")
        time.sleep(0.1)


def stop_server(server: Server) -> int:
    return stop(server.process)


def confidential_review() -> dict[str, Any]:
    """A Deployment's pod (app + two sidecars) opted in, with ``app`` as its enclave container."""
    pod = samples.realistic_pod()
    assert pod["metadata"]["annotations"]["confidential-pods.io/confidential"] == "true"
    assert pod["metadata"]["annotations"]["confidential-pods.io/containers"] == "app"
    return samples.admission_review(pod)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ca() -> Authority:
    return make_authority()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ca: Authority) -> Iterator[Server]:
    tmp_path = tmp_path_factory.mktemp("serving")
    cert, key = write_pair(tmp_path / "certs", issue_serving_pair(ca))
    running = start_server(tmp_path, ca, cert, key)
    yield running
    assert stop_server(running) == 0, running.log.read_text()


# ---------------------------------------------------------------- TLS


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_handshake_verifies_against_the_ca(server: Server, host: str) -> None:
    with (
        socket.create_connection((host, server.port), timeout=10) as raw,
        client_context(server.ca).wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_a_client_trusting_another_ca_is_refused(server: Server) -> None:
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client_context(make_authority()).wrap_socket(raw, server_hostname="127.0.0.1")


def _client_up_to(version: ssl.TLSVersion, ca: Authority) -> ssl.SSLContext:
    context = client_context(ca)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = version
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer what old peers offer
    return context


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused_by_the_server_and_1_2_accepted(server: Server) -> None:
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        pytest.raises(ssl.SSLError) as refused,
    ):
        _client_up_to(ssl.TLSVersion.TLSv1_1, server.ca).wrap_socket(raw, server_hostname="127.0.0.1")
    # The server's alert, not a client that could not offer TLS 1.1.
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"

    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        _client_up_to(ssl.TLSVersion.TLSv1_2, server.ca).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == "TLSv1.2"
        cipher = tls.cipher()
        assert cipher is not None
        assert cipher[0].startswith("ECDHE-ECDSA-") and ("GCM" in cipher[0] or "CHACHA20" in cipher[0])


# ---------------------------------------------------------------- HTTP


def test_keep_alive_reuses_one_connection(server: Server) -> None:
    conn = server.connection()
    try:
        conn.connect()
        first = conn.sock
        local = first.getsockname()
        for _ in range(5):
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            assert response.status == 200
            assert response.getheader("Connection", "").lower() != "close"
            response.read()
            assert conn.sock is first  # http.client drops the socket when the server closes
        assert conn.sock.getsockname() == local
        review = server.post_review(confidential_review(), conn)
        assert review["response"]["allowed"] is True
        assert conn.sock is first
    finally:
        conn.close()


def test_healthz_and_readyz(server: Server) -> None:
    assert server.get("/healthz") == (200, b'{"status":"ok"}')
    status, body = server.get("/readyz")
    assert status == 200
    assert json.loads(body) == {"status": "ready"}


def test_admission_review_round_trip(server: Server) -> None:
    review = confidential_review()
    pod = review["request"]["object"]
    answer = server.post_review(review)

    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    mutated = jsonpatch.apply_patch(pod, patch)
    assert "confidential-pods.io/status" in mutated["metadata"]["annotations"]
    epc = "alibabacloud.com/sgx_epc_MiB"
    for container in mutated["spec"]["containers"]:
        resources = container.get("resources", {})
        if container["name"] == "app":
            assert resources["requests"][epc] == resources["limits"][epc] == "64"
            assert {"name": "SGX_AESM_ADDR", "value": "1"} in container["env"]
        else:
            assert epc not in resources.get("requests", {})
    assert "runtimeClassName" not in mutated["spec"]  # runtimeClass: none in the config

    again = samples.admission_review(mutated)
    assert "patch" not in server.post_review(again)["response"]


def test_metrics_count_every_review_across_workers(server: Server) -> None:
    before = server.reviews_counted()
    sent = 0
    lock = threading.Lock()

    def send(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            server.post_review(confidential_review())  # fresh connection: any worker may accept it
            with lock:
                sent += 1

    deadline = time.monotonic() + 20
    while True:
        threads = [threading.Thread(target=send, args=(5,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if len(server.metric_files_pids() & server.worker_pids()) >= 2 or time.monotonic() > deadline:
            break
    assert len(server.metric_files_pids() & server.worker_pids()) >= 2, "one worker served everything"
    assert server.reviews_counted() - before == sent

    # A worker that dies is replaced; what it counted stays counted.
    victim = min(server.worker_pids())
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while victim in server.worker_pids() or len(server.worker_pids()) < 2:
        assert time.monotonic() < deadline, "the dead worker was not replaced"
        time.sleep(0.1)
    assert server.reviews_counted() - before == sent
    server.post_review(confidential_review())
    assert server.reviews_counted() - before == sent + 1


def test_metrics_show_when_the_served_certificate_expires(server: Server) -> None:
    status, body = server.get("/metrics")
    assert status == 200
    families = text_string_to_metric_families(body.decode())
    (family,) = (f for f in families if f.name == CERTIFICATE_EXPIRY_METRIC)
    assert family.type == "gauge"
    assert [s.value for s in family.samples] == [server.peer_certificate().not_valid_after_utc.timestamp()]


# ---------------------------------------------------------------- certificate reload


def test_renewed_certificate_is_served_without_restart(tmp_path: Path, ca: Authority) -> None:
    first, second, third = (issue_serving_pair(ca) for _ in range(3))
    volume = SecretVolume(tmp_path / "secret", first)
    server = start_server(tmp_path, ca, volume.cert, volume.key)
    failures: list[BaseException] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            try:
                server.post_review(confidential_review())
            except BaseException as exc:
                failures.append(exc)

    background = threading.Thread(target=keep_asking)
    background.start()
    try:
        pids = server.worker_pids()
        assert server.peer_serial() == first.serial
        kept_alive = server.connection()
        server.post_review(confidential_review(), kept_alive)

        # kubelet-style update: both files change at once through the ..data symlink swap.
        volume.publish(second)
        _wait_for_serial(server, second.serial)
        # Every worker follows, not only the one that happened to notice first.
        assert {server.peer_serial() for _ in range(20)} == {second.serial}

        # A half-written pair: the new certificate is there, its key is not. Keep the old pair.
        current = volume.root / f"..v{volume.version}"
        (current / "tls.crt").write_bytes(third.cert_pem)
        assert {server.peer_serial() for _ in range(20)} == {second.serial}
        (current / "tls.key").write_bytes(third.key_pem)
        _wait_for_serial(server, third.serial)

        # The connection opened before the renewals keeps working.
        assert server.post_review(confidential_review(), kept_alive)["response"]["allowed"] is True
        kept_alive.close()
        assert server.worker_pids() == pids  # no restart
    finally:
        stop.set()
        background.join()
        code = stop_server(server)
    assert failures == []
    assert code == 0
    log = server.log.read_text()
    assert "not reloading the serving certificate" in log
    assert f"serial {second.serial:x}" in log
    assert "Traceback" not in log


def _wait_for_serial(server: Server, serial: int) -> None:
    deadline = time.monotonic() + 10
    while server.peer_serial() != serial:
        assert time.monotonic() < deadline, f"still serving the old certificate, not {serial:x}"
        time.sleep(0.05)


def test_reloading_context_keeps_the_last_good_pair(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca = make_authority()
    first, second = issue_serving_pair(ca), issue_serving_pair(ca)
    cert, key = write_pair(tmp_path, first)
    tls = tlscontext.ReloadingContext(str(cert), str(key))
    original = tls.context()
    assert tls.context() is original  # unchanged files: same context, nothing re-read

    cert.write_bytes(second.cert_pem)  # key not yet written
    with caplog.at_level(logging.WARNING, logger="confidential_pods.tlscontext"):
        assert tls.context() is original
        assert tls.context() is original
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per change on disk, not once per connection
    assert "does not match" in warnings[0].getMessage()
    assert tls.pair.serial == first.serial

    key.write_bytes(second.key_pem)
    renewed = tls.context()
    assert renewed is not original
    assert tls.pair.serial == second.serial
    assert renewed.minimum_version == ssl.TLSVersion.TLSv1_2


def _not_after(pem: bytes) -> float:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


def test_certificate_expiry_metric_follows_the_served_file(tmp_path: Path) -> None:
    ca = make_authority(days=3)
    first, second = issue_serving_pair(ca, days=1), issue_serving_pair(ca, days=2)
    assert _not_after(first.cert_pem) != _not_after(second.cert_pem)
    volume = SecretVolume(tmp_path / "secret", first)
    tls = tlscontext.ReloadingContext(str(volume.cert), str(volume.key))
    metrics = WebhookMetrics()
    metrics.export_certificate_expiry(tls)

    def exported() -> float | None:
        return metrics.registry.get_sample_value(CERTIFICATE_EXPIRY_METRIC)

    assert exported() == _not_after(first.cert_pem)
    volume.publish(second)  # no connection in between: the scrape itself sees the new files
    assert exported() == _not_after(second.cert_pem)
    assert tls.pair.serial == second.serial


# ---------------------------------------------------------------- start-up errors and shutdown


def _serve_once(tmp_path: Path, cert: Path, key: Path, port: int) -> subprocess.CompletedProcess[str]:
    command = webhook_serve(cert, key, port)
    return subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=tmp_path)


def test_start_up_errors_are_clear(tmp_path: Path, ca: Authority) -> None:
    cert, key = write_pair(tmp_path / "good", issue_serving_pair(ca))
    other_cert, other_key = write_pair(tmp_path / "other", issue_serving_pair(ca))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (tmp_path / "missing.crt", key, "cannot read certificate file"),
        (cert, tmp_path / "missing.key", "cannot read key file"),
        (garbage, key, "holds no PEM certificate"),
        (cert, other_key, "does not match certificate file"),
        (other_cert, garbage, "holds no usable PEM private key"),
    ]
    for bad_cert, bad_key, message in cases:
        result = _serve_once(tmp_path, bad_cert, bad_key, free_port())
        assert result.returncode != 0
        assert message in result.stderr
        assert "Traceback" not in result.stderr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve_once(tmp_path, cert, key, port)
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_finishes_gracefully(tmp_path: Path, ca: Authority) -> None:
    cert, key = write_pair(tmp_path / "certs", issue_serving_pair(ca))
    server = start_server(tmp_path, ca, cert, key, workers=1, threads=2)
    conn = server.connection()
    server.post_review(confidential_review(), conn)  # a kept-alive connection is open
    metrics_dirs = list(server.tmpdir.glob("confidential-pods-metrics-*"))
    assert len(metrics_dirs) == 1

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=20) == 0
    conn.close()
    log = server.log.read_text()
    assert "Handling signal: term" in log
    assert "Traceback" not in log
    assert not metrics_dirs[0].exists()  # the multiprocess directory is removed at exit
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_drain_period_fails_readiness_but_keeps_serving(tmp_path: Path, ca: Authority) -> None:
    cert, key = write_pair(tmp_path / "certs", issue_serving_pair(ca))
    server = start_server(tmp_path, ca, cert, key, drain_seconds=3)
    assert server.get("/readyz")[0] == 200

    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2
    while server.get("/readyz")[0] != 503:
        assert time.monotonic() < deadline, "/readyz still succeeds after SIGTERM"
        time.sleep(0.05)
    # Not ready, yet still serving new connections while the endpoints catch up.
    assert server.post_review(confidential_review())["response"]["allowed"] is True
    assert server.get("/healthz")[0] == 200

    assert server.process.wait(timeout=20) == 0
    log = server.log.read_text()
    assert "/readyz now fails; serving 3.0 s more before stopping" in log
    assert "Traceback" not in log


def test_an_incomplete_configuration_starts_unready_with_one_line_naming_the_key(
    tmp_path: Path, ca: Authority
) -> None:
    """The alibaba overlay as shipped (runv, no aesmSidecarImage): the webhook starts, /readyz 503 with
    the key to set (no endpoint, so a rollout stops there), /healthz 200 (no restart loop)."""
    cert, key = write_pair(tmp_path / "certs", issue_serving_pair(ca))
    server = start_server(tmp_path, ca, cert, key, workers=2, config_text="runtimeClass: runv\n")
    try:
        status, body = server.get("/readyz")
        assert status == 503
        reason = json.loads(body)["reason"]
        assert reason.startswith("configuration incomplete: aesmSidecarImage: runtimeClass runv")
        assert server.get("/healthz")[0] == 200
        assert server.get("/readyz")[0] == 503  # stays unready, in every worker
    finally:
        assert stop_server(server) == 0
    lines = [line for line in server.log.read_text().splitlines() if "aesmSidecarImage" in line]
    assert len(lines) == 1, lines
    assert "ERROR" in lines[0] and "not ready (/readyz answers 503)" in lines[0]


# ---------------------------------------------------------------- hostile bodies


def test_chunked_body_over_the_limit_is_413_not_truncated(server: Server) -> None:
    # Cut off at 3 MiB, the start of this body is valid JSON up to a point: a truncated read answered 400.
    review = json.dumps(confidential_review()).encode()
    body = review[:-1] + b',"padding":"' + b"x" * (3 * 1024 * 1024) + b'"}'
    status, answer = fetch_chunked(server.connection(), "/mutate", body)
    assert status == 413 and b"larger than" in answer
    status, answer = fetch_chunked(server.connection(), "/mutate", json.dumps(confidential_review()).encode())
    assert status == 200 and json.loads(answer)["response"]["allowed"] is True


def test_deeply_nested_body_is_400_over_tls(server: Server) -> None:
    conn = server.connection()
    try:
        conn.request("POST", "/mutate", body=b"[" * 100_000, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        status, answer = response.status, response.read()
    finally:
        conn.close()
    assert status == 400 and b"nested too deeply" in answer
