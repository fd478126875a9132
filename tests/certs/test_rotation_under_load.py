"""The webhook keeps serving while `certs rotate` renews its certificates: 0 failed requests.

`confidential-pods webhook serve` runs on 127.0.0.1 with certificates from `confidential-pods certs generate`;
client threads send AdmissionReviews over kept-alive connections and over a new connection per review,
while the main thread runs `confidential-pods certs rotate` (forced serving renewals and a CA rotation,
twice). The clients play the apiserver: they trust only the *published* bundle — the ``ca.crt`` as it was
before the current rotate run ("installed" after each run, as `certs install` would) — so a serving
certificate from a CA that is not yet published would fail their handshakes. New connections must end up
seeing each new serial.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from tests.commands import certs_generate, webhook_serve
from tests.commands import cli as command_line
from tests.machine import free_port, stop
from tests.webhook import samples

SERVICE, NAMESPACE = "confidential-pods-webhook", "confidential-pods"
HOSTNAMES = ("127.0.0.1", f"{SERVICE}.{NAMESPACE}.svc", f"{SERVICE}.{NAMESPACE}.svc.cluster.local")
CONFIG = "aesm: host\nruntimeClass: none\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command_line(*args), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


class Trust:
    """The bundle clients trust (what the apiserver has in caBundle); replaced after each rotate run."""

    def __init__(self, ca_file: Path) -> None:
        self._lock = threading.Lock()
        self.publish(ca_file)

    def publish(self, ca_file: Path) -> None:
        context = ssl.create_default_context(cadata=ca_file.read_text())
        with self._lock:
            self._context = context

    @property
    def context(self) -> ssl.SSLContext:
        with self._lock:
            return self._context


def open_connection(port: int, trust: Trust, hostname: str) -> tuple[http.client.HTTPConnection, int]:
    """A TLS connection to 127.0.0.1 verified for ``hostname``; returns it and the served serial."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        tls = trust.context.wrap_socket(raw, server_hostname=hostname)
    except BaseException:
        raw.close()
        raise
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.sock = tls  # HTTP over the socket we verified ourselves
    return connection, x509.load_der_x509_certificate(der).serial_number


def post_review(connection: http.client.HTTPConnection) -> None:
    review = samples.admission_review(samples.realistic_pod())
    connection.request(
        "POST", "/mutate", body=json.dumps(review), headers={"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    body = response.read()
    assert response.status == 200, body
    answer = json.loads(body)["response"]
    assert answer["uid"] == review["request"]["uid"] and answer["allowed"] is True, answer
    assert answer.get("patchType") == "JSONPatch"


@dataclass
class Load:
    """Client threads and what they saw."""

    port: int
    trust: Trust
    stop: threading.Event = field(default_factory=threading.Event)
    failures: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    #: (time, serial) of every new connection.
    serials: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _count(self, name: str) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + 1

    def _fail(self, name: str, exc: BaseException) -> None:
        with self.lock:
            self.failures.append(f"{name}: {type(exc).__name__}: {exc}")

    def keep_alive(self, name: str) -> None:
        connection, _ = open_connection(self.port, self.trust, HOSTNAMES[1])
        with contextlib.closing(connection):
            while not self.stop.is_set():
                try:
                    post_review(connection)
                    self._count(name)
                except BaseException as exc:
                    self._fail(name, exc)
                    return

    def new_connections(self, name: str) -> None:
        turn = 0
        while not self.stop.is_set():
            turn += 1
            try:
                connection, serial = open_connection(self.port, self.trust, HOSTNAMES[turn % len(HOSTNAMES)])
                with contextlib.closing(connection):
                    post_review(connection)
                with self.lock:
                    self.serials.append((time.monotonic(), serial))
                self._count(name)
            except BaseException as exc:
                self._fail(name, exc)
                time.sleep(0.05)

    def wait_for_serial(self, serial: int, timeout: float = 20) -> None:
        """Until new connections made from now on are served ``serial`` (several in a row)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            with self.lock:
                recent = [s for t, s in self.serials if t > start][-6:]
            if len(recent) == 6 and set(recent) == {serial}:
                return
            time.sleep(0.05)
        raise AssertionError(f"new connections are not served serial {serial:x}: {recent}")


@pytest.fixture
def webhook_server(tmp_path: Path) -> Iterator[tuple[Path, int, Path]]:
    certs = tmp_path / "certs"
    cli(*certs_generate(certs, service=SERVICE, namespace=NAMESPACE))
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    port = free_port()
    log = tmp_path / "server.log"
    command = webhook_serve(certs / "tls.crt", certs / "tls.key", port, config=config, workers=2, threads=4)
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env["TMPDIR"] = str(tmp_path)
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        trust = Trust(certs / "ca.crt")
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                connection, _ = open_connection(port, trust, HOSTNAMES[0])
                connection.close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield certs, port, log
    finally:
        stop(process)


def test_zero_failed_reviews_while_certificates_rotate(webhook_server: tuple[Path, int, Path]) -> None:
    certs, port, log = webhook_server
    load = Load(port, Trust(certs / "ca.crt"))
    threads = [threading.Thread(target=load.keep_alive, args=(f"keep-alive-{i}",)) for i in range(2)]
    threads += [
        threading.Thread(target=load.new_connections, args=(f"new-connection-{i}",)) for i in range(2)
    ]
    for thread in threads:
        thread.start()
    steps: list[tuple[str, ...]] = [
        ("--force",),  # serving renewal from the same CA
        ("--rotate-ca",),  # phase 1: new CA joins the bundle, served certificate unchanged
        (),  # phase 2: the serving certificate moves to the new (now published) CA
        ("--force",),
        ("--rotate-ca",),
        (),
    ]
    served_serials = [serial_of(certs / "tls.crt")]
    try:
        load.wait_for_serial(served_serials[0])
        for step in steps:
            before = (certs / "ca.crt").read_bytes()
            result = cli("certs", "rotate", "--dir", str(certs), "--renew-before", "30d", *step)
            after = (certs / "ca.crt").read_bytes()
            if step == ("--rotate-ca",):
                assert "waits until the new CA is published" in result.stdout
                assert after.count(b"BEGIN CERTIFICATE") == before.count(b"BEGIN CERTIFICATE") + 1
                assert serial_of(certs / "tls.crt") == served_serials[-1]
            else:
                assert after == before
                assert serial_of(certs / "tls.crt") != served_serials[-1]
                served_serials.append(serial_of(certs / "tls.crt"))
                load.wait_for_serial(served_serials[-1])
            load.trust.publish(certs / "ca.crt")  # `certs install`: the apiserver gets the new bundle
            time.sleep(0.3)  # some load on the published bundle before the next run
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)
    print(f"reviews per client thread: {load.counts}, new connections: {len(load.serials)}")
    assert load.failures == [], "\n".join(load.failures[:10])
    assert len(load.counts) == 4 and all(count > 0 for count in load.counts.values()), load.counts
    assert len(set(served_serials)) == 5
    assert (certs / "ca.crt").read_bytes().count(b"BEGIN CERTIFICATE") == 3  # no CA expired yet
    assert "Traceback" not in log.read_text()
