"""The node's AESM socket, mounted read-only as the webhook mounts it, on the real node (issue 20, defect 4).

A host-mode pod gets the node's ``/var/run/aesmd`` as a hostPath, and every container but the socket's server
mounts it ``readOnly: true``: a root container must still ``connect()`` to ``aesm.socket`` (all a client
does), and must not be able to unlink it or plant a file of its own beside it for every tenant of the node.
tests/webhook/test_mounts.py proves the kernel's side on bind mounts; this proves it for the pod the webhook
writes, run by kubelet + containerd + runc. The pod is the webhook's own mutation (``mutate()`` with
``aesmHostPath`` pointing at a test directory) applied with jsonpatch; the socket's server is this test,
listening in that directory on the host. The client is a static C program (``connect``, one exchange) in
an image with busybox, since busybox's ``nc`` has no unix sockets.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import jsonpatch
import pytest

from confidential_pods.settings import settings_from_mapping
from tests.e2e.kube import JSON, Kube
from tests.e2e.node import Node
from tests.e2e.nodeimages import BUSYBOX
from tests.e2e.ociarchive import ImageConfig, directory, file, symlink, write_docker_archive
from tests.e2e.test_node import EPC_MIB, node, node_namespace, pod_log, wait_phase  # noqa: F401 (fixtures)
from webhook.mounts import AESM_MOUNT_PATH
from webhook.policy import mutate

pytestmark = pytest.mark.e2e

CLIENT_IMAGE = "localhost/confidential-pods-e2e/aesm-client:e2e"
#: connect() to the socket, send one line, print the answer: what an AESM client does, no more.
CLIENT_SOURCE = r"""
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <errno.h>
int main(int argc, char **argv) {
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    char answer[64] = {0};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    strncpy(address.sun_path, argv[1], sizeof address.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        printf("connect failed: %s\n", strerror(errno));
        return 1;
    }
    if (write(fd, "hello\n", 6) != 6 || read(fd, answer, sizeof answer - 1) <= 0) {
        printf("exchange failed: %s\n", strerror(errno));
        return 1;
    }
    printf("connected: %s", answer);
    return 0;
}
"""
CHECK = (
    f"aesm-connect {AESM_MOUNT_PATH}/aesm.socket; "
    f"rm -f {AESM_MOUNT_PATH}/aesm.socket 2>&1; "
    f"touch {AESM_MOUNT_PATH}/aesm.socket.planted 2>&1; "
    f"grep ' {AESM_MOUNT_PATH} ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1 | sed 's/^/mount: /'; "
    "echo SGX_AESM_ADDR=$SGX_AESM_ADDR"
)


@pytest.fixture(scope="module")
def client_image(node: Node, tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: F811
    """busybox (a link per applet) plus the static client in /usr/local/bin, imported into the node."""
    out = tmp_path_factory.mktemp("aesm-client")
    (out / "client.c").write_text(CLIENT_SOURCE)
    binary = out / "aesm-connect"
    subprocess.run(
        ["gcc", "-static", "-Os", "-o", str(binary), str(out / "client.c")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True, timeout=30
    ).stdout.split()
    entries = [directory(d) for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "var", "usr/local/bin")]
    entries.append(file("bin/busybox", source=BUSYBOX, mode=0o755))
    entries.extend(symlink(f"bin/{name}", "busybox") for name in applets if name != "busybox")
    entries.append(file("usr/local/bin/aesm-connect", source=binary, mode=0o755))
    archive = write_docker_archive(
        out / "aesm-client.tar",
        CLIENT_IMAGE,
        layers=[entries],
        config=ImageConfig(cmd=("sh",), env=("PATH=/usr/local/bin:/bin",)),
    )
    node.import_image(archive)
    return CLIENT_IMAGE


@pytest.fixture
def aesm_server(tmp_path: Path) -> Iterator[Path]:
    """The node's AESM directory: a unix socket this test serves (``pong: <line>``), as aesmd would."""
    directory_ = tmp_path / "aesmd"
    directory_.mkdir()
    os.chmod(tmp_path, 0o755)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(directory_ / "aesm.socket"))
    listener.listen(4)
    listener.settimeout(0.5)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection, contextlib.suppress(OSError):
                connection.settimeout(5)
                connection.sendall(b"pong: " + connection.recv(64))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield directory_
    finally:
        stop.set()
        server.join(timeout=5)
        listener.close()


def webhook_pod(host_path: Path, image: str, node_name: str) -> JSON:
    """A host-mode pod exactly as the webhook mutates it, then given the check to run on ``node_name``."""
    settings = settings_from_mapping(
        {"profile": "alibaba", "runtimeClass": "none", "aesmHostPath": str(host_path)}
    )
    pod: JSON = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "aesm-client",
            "annotations": {
                "confidential-pods.io/confidential": "true",
                "confidential-pods.io/aesm": "host",
                "confidential-pods.io/quote": "none",
                "confidential-pods.io/epc": f"{EPC_MIB // 8}Mi",
            },
        },
        "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": "Never"}]},
    }
    mutation = mutate(pod, namespace_opted_in=False, settings=settings)
    assert mutation.outcome == "mutated", mutation
    mutated: JSON = jsonpatch.apply_patch(pod, [dict(op) for op in mutation.patch])
    (app,) = mutated["spec"]["containers"]
    app["command"] = ["sh", "-c", CHECK]
    mutated["spec"].update(nodeName=node_name, restartPolicy="Never", terminationGracePeriodSeconds=0)
    return mutated


def test_a_host_mode_client_connects_through_its_read_only_mount_and_cannot_touch_the_socket(
    node: Node,  # noqa: F811
    node_namespace: str,  # noqa: F811
    kube: Kube,
    client_image: str,
    aesm_server: Path,
) -> None:
    node.start_device_plugin("alibaba", f"--epc-mib={EPC_MIB}")
    pod = webhook_pod(aesm_server, client_image, node.name)
    (mount,) = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == AESM_MOUNT_PATH]
    assert mount.get("readOnly") is True  # what the webhook wrote, run as written
    kube.create(f"/api/v1/namespaces/{node_namespace}/pods", pod)
    finished = wait_phase(kube, node_namespace, "aesm-client", ("Succeeded", "Failed"))
    log = pod_log(kube, node_namespace, "aesm-client")
    assert finished["status"]["phase"] == "Succeeded", log
    assert "connected: pong: hello" in log
    assert f"can't remove '{AESM_MOUNT_PATH}/aesm.socket': Read-only file system" in log
    assert f"{AESM_MOUNT_PATH}/aesm.socket.planted: Read-only file system" in log
    assert "mount: ro" in log and "SGX_AESM_ADDR=1" in log
    # And on the node: the socket is still the server's, nothing was planted beside it.
    assert sorted(path.name for path in aesm_server.iterdir()) == ["aesm.socket"]
    assert (aesm_server / "aesm.socket").is_socket()
