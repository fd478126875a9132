"""The webhook's volumes and mounts against the pod's own (docs/annotations.md, "Volumes and mounts").

Every case applies the patch with jsonpatch to the original and looks at the resulting pod: which volume
each injected mount names, whether it is read-only, and what a pod that would redirect them is told.
"""

from __future__ import annotations

import copy
import errno
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from confidential_pods.settings import Settings, settings_from_mapping
from tests.webhook.samples import CONFIDENTIAL, container, pod
from webhook.offline import InjectRefused, inject_documents
from webhook.policy import STATUS, mutate

PCCS = "https://pccs.example.internal:8081/sgx/certification/v4/"
BASE = {"profile": "intel", "aesmSidecarImage": "registry.example/aesmd:2.25", "dcap": {"pccsUrl": PCCS}}
HOST = {**BASE, "runtimeClass": "none", "aesm": "host"}
KATA = {**BASE, "runtimeClass": "kata"}
IN_PROCESS = {"confidential-pods.io/quote": "in-process"}
QCNL_ANNOTATION = "metadata.annotations['confidential-pods.io/qcnl']"
SOCKET_DIR = "/var/run/aesmd"
SOCKET_VOLUME = "confidential-pods-aesmd-socket"
SOCKET_FILE = "/var/run/aesmd/aesm.socket"


def settings(keys: dict[str, Any]) -> Settings:
    return settings_from_mapping(keys)


def mutated(original: dict[str, Any], keys: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    config = settings(keys)
    mutation = mutate(original, namespace_opted_in=False, settings=config)
    assert mutation.outcome == "mutated", mutation.message
    result = jsonpatch.apply_patch(original, [dict(op) for op in mutation.patch])
    kubernetes_validate.validate(result, "1.33.0", strict=True)
    return result, mutation.warnings


def denied(original: dict[str, Any], keys: dict[str, Any]) -> str:
    mutation = mutate(original, namespace_opted_in=False, settings=settings(keys))
    assert mutation.outcome == "denied", mutation
    return mutation.message


def containers(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = document["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def injected_mounts(original: dict[str, Any], result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(container, mount) for every mount the patch added (injected containers: all their mounts)."""
    before = containers(original)
    added = []
    for name, each in containers(result).items():
        kept = before.get(name, {}).get("volumeMounts", [])
        added += [(name, mount) for mount in each.get("volumeMounts", []) if mount not in kept]
    return added


def volume(document: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [v for v in document["spec"].get("volumes", []) if v["name"] == name]
    return found


# --- defect 3: an injected mount never binds to the pod's own volume -------------------------------------

HOST_ETC = {"hostPath": {"path": "/etc"}}
#: (id, settings, pod with a volume of its own named like the webhook's former volumes)
OWN_VOLUMES = [
    (
        "sandboxed-sidecar-own-qcnl-config",  # issue 20: the sidecar mounted the pod's /etc as its QCNL file
        KATA,
        pod(annotations=CONFIDENTIAL, volumes=[{"name": "qcnl-config", **HOST_ETC}]),
    ),
    (
        "sandboxed-sidecar-own-aesmd-socket",
        KATA,
        pod(annotations=CONFIDENTIAL, volumes=[{"name": "aesmd-socket", **HOST_ETC}]),
    ),
    (
        "host-own-aesmd-socket-mounted-elsewhere",
        HOST,
        pod(
            annotations=CONFIDENTIAL,
            containers=[container("app", volumeMounts=[{"name": "aesmd-socket", "mountPath": "/host"}])],
            volumes=[{"name": "aesmd-socket", **HOST_ETC}],
        ),
    ),
    (
        "in-process-own-qcnl-config",
        HOST,
        pod(
            annotations={**CONFIDENTIAL, **IN_PROCESS, "confidential-pods.io/aesm": "host"},
            volumes=[
                {"name": "qcnl-config", "configMap": {"name": "mine"}},
                {"name": "aesmd-socket", **HOST_ETC},
            ],
        ),
    ),
]


@pytest.mark.parametrize(
    ("keys", "original"), [case[1:] for case in OWN_VOLUMES], ids=[case[0] for case in OWN_VOLUMES]
)
def test_injected_mounts_name_only_the_webhooks_volumes(
    keys: dict[str, Any], original: dict[str, Any]
) -> None:
    result, _ = mutated(copy.deepcopy(original), keys)
    own = {v["name"]: v for v in original["spec"]["volumes"]}
    added = injected_mounts(original, result)
    assert added
    for name, mount in added:
        assert mount["name"] not in own, (name, mount)
        source = volume(result, mount["name"])
        if mount["mountPath"] == "/var/run/aesmd":
            expected = (
                {"emptyDir": {"medium": "Memory"}}
                if keys is KATA
                else {"hostPath": {"path": "/var/run/aesmd", "type": "DirectoryOrCreate"}}
            )
            assert {k: v for k, v in source.items() if k != "name"} == expected, (name, source)
        else:  # the QCNL file: the downward-API file of the annotation the webhook wrote
            assert mount["subPath"] == "sgx_default_qcnl.conf"
            (item,) = source["downwardAPI"]["items"]
            assert item["fieldRef"]["fieldPath"] == QCNL_ANNOTATION, (name, source)
            assert PCCS in result["metadata"]["annotations"]["confidential-pods.io/qcnl"]
    assert [v for v in result["spec"]["volumes"] if v["name"] in own] == list(own.values())  # left alone


#: (id, settings, pod, fragments of the refusal)
RESERVED = [
    (
        "volume-named-like-the-qcnl-volume",
        KATA,
        pod(annotations=CONFIDENTIAL, volumes=[{"name": "confidential-pods-qcnl", **HOST_ETC}]),
        ["spec.volumes[0]", "confidential-pods-qcnl", "reserved", "rename the volume"],
    ),
    (
        "volume-named-like-the-socket-volume",
        HOST,
        pod(annotations=CONFIDENTIAL, volumes=[{"name": "confidential-pods-aesmd-socket", **HOST_ETC}]),
        ["spec.volumes[0]", "confidential-pods-aesmd-socket", "reserved"],
    ),
    (
        "socket-volume-of-the-other-mode",  # a sidecar's emptyDir where the pod gets the host's socket
        HOST,
        pod(
            annotations=CONFIDENTIAL,
            volumes=[{"name": "confidential-pods-aesmd-socket", "emptyDir": {"medium": "Memory"}}],
        ),
        ["confidential-pods-aesmd-socket", "not one of them as the webhook writes it"],
    ),
    (
        "any-name-under-the-prefix",
        HOST,
        pod(annotations=CONFIDENTIAL, volumes=[{"name": "confidential-pods-cache", "emptyDir": {}}]),
        ["spec.volumes[0]", "confidential-pods-cache", "confidential-pods-…"],
    ),
    (
        "mount-of-the-qcnl-volume-as-something-else",
        HOST,
        pod(
            annotations={**CONFIDENTIAL, **IN_PROCESS},
            containers=[
                container(
                    "app",
                    volumeMounts=[
                        {"name": "confidential-pods-qcnl", "mountPath": "/etc/passwd", "subPath": "x"}
                    ],
                )
            ],
        ),
        ["spec.containers[0].volumeMounts[0]", "container app", "confidential-pods-qcnl", "reserved"],
    ),
    (
        "mount-of-the-socket-volume-elsewhere-in-another-container",
        HOST,
        pod(
            annotations={**CONFIDENTIAL, "confidential-pods.io/containers": "app"},
            containers=[
                container("app"),
                container(
                    "helper", volumeMounts=[{"name": "confidential-pods-aesmd-socket", "mountPath": "/s"}]
                ),
            ],
        ),
        ["spec.containers[1].volumeMounts[0]", "container helper", "confidential-pods-aesmd-socket"],
    ),
    (
        "writable-socket-mount-in-a-client",  # only the socket's server, the aesmd container, may write it
        HOST,
        pod(
            annotations=CONFIDENTIAL,
            containers=[container("app", volumeMounts=[{"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR}])],
        ),
        ["spec.containers[0].volumeMounts[0]", "container app", "confidential-pods-aesmd-socket"],
    ),
]


@pytest.mark.parametrize(
    ("keys", "original", "fragments"), [case[1:] for case in RESERVED], ids=[case[0] for case in RESERVED]
)
def test_a_pods_use_of_a_reserved_volume_name_is_refused(
    keys: dict[str, Any], original: dict[str, Any], fragments: list[str]
) -> None:
    message = denied(original, keys)
    for fragment in fragments:
        assert fragment in message, message
    with pytest.raises(InjectRefused, match="reserved"):  # inject: the same core, the same refusal
        inject_documents([original], settings(keys), namespace_opted_in=False)


#: (id, settings, pod whose own mount lies inside a path the webhook mounts, fragments of the refusal)
INSIDE = [
    (
        "inside-the-socket-directory",
        HOST,
        pod(
            annotations=CONFIDENTIAL,
            containers=[container("app", volumeMounts=[{"name": "x", "mountPath": "/var/run/aesmd/extra"}])],
            volumes=[{"name": "x", "emptyDir": {}}],
        ),
        ["container app", "x at /var/run/aesmd/extra", "inside /var/run/aesmd", "AESM socket directory"],
    ),
    (
        "inside-the-socket-directory-through-run",  # /var/run is /run in most images
        KATA,
        pod(
            annotations=CONFIDENTIAL,
            containers=[container("app", volumeMounts=[{"name": "x", "mountPath": "/run/aesmd/x/"}])],
            volumes=[{"name": "x", "emptyDir": {}}],
        ),
        ["container app", "/run/aesmd/x/", "inside /var/run/aesmd"],
    ),
    (
        "inside-the-qcnl-file",
        HOST,
        pod(
            annotations={**CONFIDENTIAL, **IN_PROCESS},
            containers=[
                container("app", volumeMounts=[{"name": "x", "mountPath": "/etc/sgx_default_qcnl.conf/x"}])
            ],
            volumes=[{"name": "x", "emptyDir": {}}],
        ),
        ["container app", "inside /etc/sgx_default_qcnl.conf", "quote library's configuration"],
    ),
]


@pytest.mark.parametrize(
    ("keys", "original", "fragments"), [case[1:] for case in INSIDE], ids=[case[0] for case in INSIDE]
)
def test_a_pods_mount_inside_a_webhook_mount_is_refused(
    keys: dict[str, Any], original: dict[str, Any], fragments: list[str]
) -> None:
    message = denied(original, keys)
    for fragment in fragments:
        assert fragment in message, message


#: (id, settings, pod, container, its mounts after the patch, warnings)
BESIDE = [
    (
        "own-socket-directory-kept",
        HOST,
        pod(
            annotations=CONFIDENTIAL,
            containers=[container("app", volumeMounts=[{"name": "mine", "mountPath": "/var/run/aesmd/"}])],
            volumes=[{"name": "mine", "emptyDir": {}}],
        ),
        "app",
        [{"name": "mine", "mountPath": "/var/run/aesmd/"}],
        ["container app mounts its own /var/run/aesmd: kept (the webhook's AESM socket unused)"],
    ),
    (
        "own-socket-file-kept",  # Alibaba's hello_world sample: the node's socket file, mounted by itself
        HOST,
        pod(
            annotations=CONFIDENTIAL,
            containers=[container("app", volumeMounts=[{"name": "aesmsocket", "mountPath": SOCKET_FILE}])],
            volumes=[{"name": "aesmsocket", "hostPath": {"path": SOCKET_FILE, "type": "Socket"}}],
        ),
        "app",
        [{"name": "aesmsocket", "mountPath": SOCKET_FILE}],
        [
            f"container app mounts its own AESM socket at {SOCKET_FILE}: kept "
            "(the webhook's /var/run/aesmd not mounted over it)"
        ],
    ),
    (
        "own-socket-file-through-run-kept-in-a-sandbox",  # /run is /var/run; the sidecar still gets its own
        KATA,
        pod(
            annotations=CONFIDENTIAL,
            containers=[
                container("app", volumeMounts=[{"name": "s", "mountPath": "/run/aesmd/aesm.socket"}])
            ],
            volumes=[{"name": "s", "hostPath": {"path": SOCKET_FILE, "type": "Socket"}}],
        ),
        "app",
        [{"name": "s", "mountPath": "/run/aesmd/aesm.socket"}],
        [
            "container app mounts its own AESM socket at /run/aesmd/aesm.socket: kept (the webhook's "
            "/var/run/aesmd not mounted over it)"
        ],
    ),
    (
        "own-run-directory-above-the-socket",  # /var/run as an emptyDir is common: ours goes on top
        HOST,
        pod(
            annotations=CONFIDENTIAL,
            containers=[container("app", volumeMounts=[{"name": "run", "mountPath": "/var/run"}])],
            volumes=[{"name": "run", "emptyDir": {}}],
        ),
        "app",
        [
            {"name": "run", "mountPath": "/var/run"},
            {"name": "confidential-pods-aesmd-socket", "mountPath": "/var/run/aesmd", "readOnly": True},
        ],
        [],
    ),
]


@pytest.mark.parametrize(
    ("keys", "original", "name", "mounts", "warnings"),
    [case[1:] for case in BESIDE],
    ids=[case[0] for case in BESIDE],
)
def test_a_pods_own_mounts_at_or_above_a_webhook_path(
    keys: dict[str, Any], original: dict[str, Any], name: str, mounts: list[Any], warnings: list[str]
) -> None:
    result, given = mutated(original, keys)
    assert containers(result)[name]["volumeMounts"] == mounts
    assert list(given) == warnings
    used = {m["name"] for c in containers(result).values() for m in c.get("volumeMounts", [])}
    assert {v["name"] for v in result["spec"]["volumes"]} <= used  # no volume added for nobody


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}, "annotations": CONFIDENTIAL},
            "spec": {"containers": [container("app"), container("worker")]},
        },
    },
}


@pytest.mark.parametrize(
    ("keys", "annotations"),
    [
        (HOST, {}),
        (KATA, {}),
        (HOST, IN_PROCESS),
        (KATA, IN_PROCESS),
        (HOST, {"confidential-pods.io/aesm": "none"}),
    ],
    ids=["host", "sidecar", "in-process-host", "in-process-kata", "no-socket"],
)
def test_inject_twice_is_idempotent(keys: dict[str, Any], annotations: dict[str, str]) -> None:
    document = copy.deepcopy(DEPLOYMENT)
    document["spec"]["template"]["metadata"]["annotations"].update(annotations)
    config = settings(keys)
    (once,) = inject_documents([document], config, namespace_opted_in=False).documents
    assert inject_documents([once], config, namespace_opted_in=False).documents == [once]
    # Without the marker (a template copied without it): the webhook's own volumes and mounts are its own.
    unmarked = copy.deepcopy(once)
    del unmarked["spec"]["template"]["metadata"]["annotations"][STATUS]
    assert inject_documents([unmarked], config, namespace_opted_in=False).documents == [once]


# --- defect 4: the socket directory is read-only but for its server -------------------------------------

INTEL_HOST = {"profile": "intel", "runtimeClass": "none", "aesm": "host"}
QUOTE_PROVIDER = {"sgx.intel.com/quote-provider": "aesmd"}
INTEL_EPC = {"limits": {"sgx.intel.com/epc": "1Mi"}}
#: (id, settings, pod, {container: its socket mount is writable}; no other container mounts it)
SOCKET_USERS = [
    ("host-app", HOST, pod(annotations=CONFIDENTIAL), {"app": False}),
    (
        "host-two-apps",
        HOST,
        pod(annotations=CONFIDENTIAL, containers=[container("app"), container("worker")]),
        {"app": False, "worker": False},
    ),
    ("sandboxed-injected-sidecar", KATA, pod(annotations=CONFIDENTIAL), {"app": False, "aesmd": True}),
    (
        "pods-own-aesmd-sidecar",
        {**HOST, "aesm": "sidecar"},
        pod(
            annotations={**CONFIDENTIAL, "confidential-pods.io/containers": "app,aesmd"},
            init=[container("aesmd", restartPolicy="Always")],
        ),
        {"app": False, "aesmd": True},
    ),
    (
        "intel-aesmd-daemonset-serves-the-node",  # Intel's deployments/sgx_aesmd through the webhook
        INTEL_HOST,
        pod(
            annotations={**CONFIDENTIAL, **QUOTE_PROVIDER},
            containers=[container("aesmd", resources=INTEL_EPC)],
        ),
        {"aesmd": True},
    ),
    (
        "intel-aesmd-sidecar",
        INTEL_HOST,
        pod(
            annotations={**CONFIDENTIAL, **QUOTE_PROVIDER},
            containers=[container("test", resources=INTEL_EPC), container("aesmd", resources=INTEL_EPC)],
        ),
        {"test": False, "aesmd": True},
    ),
]


@pytest.mark.parametrize(
    ("keys", "original", "writable"),
    [case[1:] for case in SOCKET_USERS],
    ids=[case[0] for case in SOCKET_USERS],
)
def test_socket_clients_mount_read_only_and_its_server_writable(
    keys: dict[str, Any], original: dict[str, Any], writable: dict[str, bool]
) -> None:
    result, _ = mutated(original, keys)
    for name, each in containers(result).items():
        mounts = [m for m in each.get("volumeMounts", []) if m["mountPath"] == SOCKET_DIR]
        if name not in writable:
            assert mounts == [], name
            continue
        expected = {"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR}
        assert mounts == [expected if writable[name] else {**expected, "readOnly": True}], name


def test_the_aesmd_daemonsets_own_socket_mount_stays_writable() -> None:
    # The DaemonSet we ship (the chart renders the same object: tests/manifests/test_helm.py) creates the
    # node's socket, so its mount is writable; even opted in, the webhook keeps that mount as it is.
    path = Path(__file__).parents[2] / "manifests" / "components" / "aesmd" / "daemonset.yaml"
    (daemonset,) = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    aesmd, probe = daemonset["spec"]["template"]["spec"]["containers"]
    assert (aesmd["name"], probe["name"]) == ("aesmd", "node-probe")
    own = [m for m in aesmd["volumeMounts"] if m["mountPath"] == SOCKET_DIR]
    assert own == [{"name": "aesmd-socket", "mountPath": SOCKET_DIR}]
    probes = [m for m in probe["volumeMounts"] if m["mountPath"] == SOCKET_DIR]
    assert probes == [{"name": "aesmd-socket", "mountPath": SOCKET_DIR, "readOnly": True}]  # it only connects
    config = settings({**INTEL_HOST, "dcap": {"pccsUrl": PCCS}})
    (result,) = inject_documents([daemonset], config, namespace_opted_in=True).documents
    after, probe_after = result["spec"]["template"]["spec"]["containers"]
    assert [m for m in after["volumeMounts"] if m["mountPath"] == SOCKET_DIR] == own
    assert [m for m in probe_after["volumeMounts"] if m["mountPath"] == SOCKET_DIR] == probes


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_a_client_connects_through_a_read_only_bind_mount(tmp_path: Path) -> None:
    """What a read-only socket mount means, on real mounts: connect() and talk, but no unlink, no planting.

    The kubelet bind-mounts a volume and remounts it read-only for ``readOnly: true``; the kernel checks
    write permission on the socket inode for connect(), not on the mount (EROFS is for files, directories
    and links: fs/namei.c, ``sb_permission``/``mnt_want_write``).
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to bind-mount (CI runs as root: there it runs)")
    served, client_dir = tmp_path / "aesmd", tmp_path / "ro"
    served.mkdir()
    client_dir.mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(served / "aesm.socket"))
    server.listen(1)
    bound = _run("mount", "--bind", str(served), str(client_dir))
    if bound.returncode != 0:
        server.close()
        pytest.skip(f"mount --bind is not permitted here (no CAP_SYS_ADMIN?): {bound.stderr.strip()}")
    try:
        remounted = _run("mount", "-o", "remount,bind,ro", str(client_dir))
        assert remounted.returncode == 0, remounted.stderr
        assert os.statvfs(client_dir).f_flag & os.ST_RDONLY
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(client_dir / "aesm.socket"))
            connection, _ = server.accept()
            with connection:
                client.sendall(b"GetQuote")
                assert connection.recv(16) == b"GetQuote"
                connection.sendall(b"quote")
                assert client.recv(16) == b"quote"
        planted = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        attempts = {
            "unlink the socket": lambda: (client_dir / "aesm.socket").unlink(),
            "plant a socket": lambda: planted.bind(str(client_dir / "planted.socket")),
            "rename the socket": lambda: (client_dir / "aesm.socket").rename(client_dir / "old.socket"),
            "create a file": lambda: (client_dir / "aesm.socket.new").write_bytes(b""),
        }
        for what, attempt in attempts.items():
            with pytest.raises(OSError) as refused:
                attempt()
            assert refused.value.errno == errno.EROFS, what
        planted.close()
        assert sorted(p.name for p in served.iterdir()) == ["aesm.socket"]  # still there for every client
    finally:
        unmounted = _run("umount", str(client_dir))
        server.close()
        assert unmounted.returncode == 0, unmounted.stderr


# --- defect 5: $QCNL_CONF_PATH over a path the webhook mounts -----------------------------------------------


def qcnl_pod(path: str, aesm: str = "host") -> dict[str, Any]:
    """A pod that quotes in-process, its app reading the QCNL file at ``path``, with the socket or not."""
    env = [{"name": "QCNL_CONF_PATH", "value": path}]
    annotations = {**CONFIDENTIAL, **IN_PROCESS, "confidential-pods.io/aesm": aesm}
    return pod(annotations=annotations, containers=[container("app", env=env)])


def own_aesmd_pod(path: str) -> dict[str, Any]:
    """A pod with its own aesmd sidecar (it quotes, serves the socket) reading its QCNL file at ``path``."""
    aesmd = container("aesmd", restartPolicy="Always", env=[{"name": "QCNL_CONF_PATH", "value": path}])
    annotations = {**CONFIDENTIAL, "confidential-pods.io/containers": "app,aesmd"}
    return pod(annotations=annotations, init=[aesmd])


#: (id, settings, pod, the container named in the refusal, the value)
QCNL_OVER = [
    *[
        (f"app-{path}", HOST, qcnl_pod(path), "app", path)
        for path in (
            "/var/run/aesmd",  # issue 20: the file replaced the socket directory, SGX_AESM_ADDR=1 stayed
            "/var/run/aesmd/",
            "//var/run/aesmd",
            "/var/run/aesmd/x.conf",
            "/var/run/aesmd/../aesmd/q.conf",
            "/run/aesmd/qcnl.json",  # /var/run is /run in most images
            "/var/run",
            "/var",
            "/",
            "/dev/sgx_provision",
            "/dev/sgx/provision",
            "/dev/sgx_enclave",
            "/dev",
        )
    ],
    (
        "own-aesmd-sidecar",
        {**HOST, "aesm": "sidecar"},
        own_aesmd_pod("/var/run/aesmd/q.conf"),
        "aesmd",
        "/var/run/aesmd/q.conf",
    ),
    (
        "devices-without-socket",
        HOST,
        qcnl_pod("/dev/sgx_provision", aesm="none"),
        "app",
        "/dev/sgx_provision",
    ),
]


@pytest.mark.parametrize(
    ("keys", "original", "name", "value"),
    [case[1:] for case in QCNL_OVER],
    ids=[case[0] for case in QCNL_OVER],
)
def test_qcnl_conf_path_over_a_webhook_path_is_refused(
    keys: dict[str, Any], original: dict[str, Any], name: str, value: str
) -> None:
    message = denied(original, keys)
    assert f"container {name}: QCNL_CONF_PATH={value} is at, inside or above" in message, message
    with pytest.raises(InjectRefused, match=f"container {name}: QCNL_CONF_PATH"):
        inject_documents([original], settings(keys), namespace_opted_in=False)


#: (id, settings, pod, where the app's QCNL file goes, the app gets the socket)
QCNL_BESIDE = [
    ("elsewhere", HOST, qcnl_pod("/opt/app/qcnl.json"), "/opt/app/qcnl.json", True),
    (
        "etc-directory",
        HOST,
        qcnl_pod("/etc/qcnl/sgx_default_qcnl.conf"),
        "/etc/qcnl/sgx_default_qcnl.conf",
        True,
    ),
    ("prefix-but-not-below", HOST, qcnl_pod("/var/run/aesmd2/q.conf"), "/var/run/aesmd2/q.conf", True),
    ("devices-prefix", HOST, qcnl_pod("/devices.conf"), "/devices.conf", True),
    (
        "no-socket-in-the-pod",
        HOST,
        qcnl_pod("/var/run/aesmd/q.conf", aesm="none"),
        "/var/run/aesmd/q.conf",
        False,
    ),
]


@pytest.mark.parametrize(
    ("keys", "original", "target", "socket_too"),
    [case[1:] for case in QCNL_BESIDE],
    ids=[case[0] for case in QCNL_BESIDE],
)
def test_qcnl_conf_path_beside_the_socket_gets_both(
    keys: dict[str, Any], original: dict[str, Any], target: str, socket_too: bool
) -> None:
    result, _ = mutated(original, keys)
    app = containers(result)["app"]
    qcnl = {"name": "confidential-pods-qcnl", "mountPath": target, "subPath": "sgx_default_qcnl.conf"}
    expected = [{**qcnl, "readOnly": True}]
    if socket_too:
        expected.append({"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR, "readOnly": True})
    assert app["volumeMounts"] == expected
    # Never half-configured: SGX_AESM_ADDR only where the socket is mounted.
    assert ({"name": "SGX_AESM_ADDR", "value": "1"} in app.get("env", [])) is socket_too
