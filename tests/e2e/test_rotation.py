"""`certs rotate` as the CronJob runs it, while pods are being created: no admission fails.

The rotation works on the cluster, as in production: ``certs rotate --secret … --webhook-config …`` with the
certs ServiceAccount's token (the manifests' RBAC) renews the serving Secret and the caBundle of the
MutatingWebhookConfiguration. A stand-in for the kubelet projects the Secret into the webhook's certificate
directory the way the kubelet updates a Secret volume (a new timestamped directory, then ``..data`` swapped
atomically; ``tls.crt``/``tls.key``/``ca.crt`` are symlinks through ``..data``), and the webhook picks the new
pair up on new connections. Meanwhile client threads create confidential pods through the apiserver, which
calls the webhook with whatever caBundle it has at that moment. Every create must come back mutated.

The creates are dry runs (``dryRun=All``): the apiserver runs the whole admission chain, webhook included
(``sideEffects: None``), but nothing is stored, so the scheduler is not kept busy by thousands of pods.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import pytest
from cryptography import x509

from tests.e2e.kube import JSON, ApiError, Kube
from tests.e2e.processes import wait_until
from tests.e2e.product import (
    NAMESPACE,
    TLS_SECRET,
    WEBHOOK_CONFIGURATION,
    WEBHOOK_CONFIGURATIONS,
    Installation,
    certs_kubeconfig,
    run_cli,
)

pytestmark = pytest.mark.e2e

PROJECTED = ("tls.crt", "tls.key", "ca.crt")
CLIENTS = 3
#: Each rotate run of the test, as in tests/certs/test_rotation_under_load.py: a serving renewal, the two
#: phases of a CA rotation, and a renewal from the new CA.
STEPS: tuple[tuple[str, ...], ...] = (("--force",), ("--rotate-ca",), (), ("--force",))


class SecretVolume:
    """The kubelet's Secret volume update, for the files in ``directory`` (kubelet's AtomicWriter layout)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.version = 0

    def project(self, files: dict[str, bytes]) -> None:
        """Write ``files`` into a new ``..<n>`` directory and swap ``..data`` to it in one rename."""
        self.version += 1
        target = self.directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{self.version}"
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
        previous = (self.directory / "..data").resolve() if (self.directory / "..data").is_symlink() else None
        staging = self.directory / "..data_tmp"
        staging.unlink(missing_ok=True)
        staging.symlink_to(target.name)
        os.rename(staging, self.directory / "..data")
        for name in files:
            link = self.directory / name
            if not link.is_symlink():
                temporary = self.directory / f".{name}.link"
                temporary.unlink(missing_ok=True)
                temporary.symlink_to(f"..data/{name}")
                os.rename(temporary, link)
        if previous is not None and previous != target:
            for old in previous.iterdir():
                old.unlink()
            previous.rmdir()


def secret_files(kube: Kube) -> dict[str, bytes]:
    data = kube.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/{TLS_SECRET}")["data"]
    return {name: base64.b64decode(data[name]) for name in PROJECTED}


@dataclass
class Kubelet:
    """Polls the serving Secret and projects every change into the webhook's certificate directory."""

    kube: Kube
    volume: SecretVolume
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    synced: dict[str, bytes] = field(default_factory=dict)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                files = secret_files(self.kube)
                if files != self.synced:
                    self.volume.project(files)
                    self.synced = files
            except (ApiError, OSError) as exc:
                self.errors.append(repr(exc))
            self.stop.wait(0.2)


@dataclass
class Load:
    """Client threads creating confidential pods (dry run) and recording every failure."""

    kube: Kube
    namespace: str
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    admitted: int = 0
    failures: list[str] = field(default_factory=list)

    def admitted_at_least(self, count: int) -> bool:
        return self.admitted >= count

    def run(self) -> None:
        while not self.stop.is_set():
            name = f"rotating-{uuid.uuid4().hex[:10]}"
            pod: JSON = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "annotations": {"confidential-pods.io/confidential": "true"},
                },
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/enclave-app:1"}]},
            }
            try:
                created = self.kube.request(
                    "POST", f"/api/v1/namespaces/{self.namespace}/pods", body=pod, params={"dryRun": "All"}
                )
            except (ApiError, OSError) as exc:
                with self.lock:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {exc}")
                continue
            with self.lock:
                if "confidential-pods.io/status" in created["metadata"].get("annotations", {}):
                    self.admitted += 1
                else:
                    self.failures.append(f"{name} created without mutation")


def served_serial(port: int) -> int:
    """Serial of the certificate the webhook serves on a new connection (no verification: just look)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def bundle_sizes(kube: Kube) -> list[int]:
    """Number of CAs in each webhook entry's caBundle."""
    configuration = kube.get(f"{WEBHOOK_CONFIGURATIONS}/{WEBHOOK_CONFIGURATION}")
    return [
        base64.b64decode(entry["clientConfig"]["caBundle"]).count(b"BEGIN CERTIFICATE")
        for entry in configuration["webhooks"]
    ]


class Worker(Protocol):
    stop: threading.Event

    def run(self) -> None: ...


@contextlib.contextmanager
def running(*targets: tuple[Worker, int]) -> Iterator[None]:
    """Start ``count`` threads of each worker's ``run``; on the way out set its ``stop`` and join them."""
    threads = [
        threading.Thread(target=worker.run, daemon=True) for worker, count in targets for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for worker, _ in targets:
            worker.stop.set()
        for thread in threads:
            thread.join(timeout=60)


def test_no_admission_fails_while_certs_rotate(
    installation: Installation, kube: Kube, namespace: str
) -> None:
    kubelet = Kubelet(kube, SecretVolume(installation.cert_dir))
    kubelet.volume.project(secret_files(kube))  # the webhook's files become the Secret volume from now on
    kubelet.synced = secret_files(kube)
    port = installation.webhook.port
    load = Load(kube, namespace)
    certs = str(certs_kubeconfig(installation.plane.api))
    serials = [served_serial(port)]
    with running((kubelet, 1), (load, CLIENTS)):
        wait_until(partial(load.admitted_at_least, 20), timeout=60, what="the first admissions")
        for step in STEPS:
            bundle_before = bundle_sizes(kube)
            admitted_before = load.admitted
            result = run_cli(
                "certs", "rotate", "--secret", TLS_SECRET, "--webhook-config", WEBHOOK_CONFIGURATION,
                "--namespace", NAMESPACE, "--kubeconfig", certs, "--renew-before", "30d", *step,
            )  # fmt: skip
            if step == ("--rotate-ca",):
                # Phase 1: the new CA joins every caBundle; the served certificate stays.
                assert "waits until the new CA is published" in result.stdout, result.stdout
                assert bundle_sizes(kube) == [size + 1 for size in bundle_before]
                time.sleep(2)
                assert served_serial(port) == serials[-1]
            else:
                # A new serving certificate reaches the webhook through the Secret volume.
                wait_until(
                    lambda: served_serial(port) != serials[-1],
                    timeout=60,
                    what="the webhook to serve the new certificate",
                )
                serials.append(served_serial(port))
            # Some load on each state before the next run.
            wait_until(partial(load.admitted_at_least, admitted_before + 30), timeout=60, what="admissions")
    assert load.failures == [], "\n".join(load.failures[:10])
    assert kubelet.errors == [], kubelet.errors[:5]
    assert len(set(serials)) == 4
    assert bundle_sizes(kube) == [2, 2]
    print(
        f"admitted {load.admitted} pods (dry run) across {len(STEPS)} rotate runs; serving serials {serials}"
    )
