"""The images tests/e2e/images/build.sh builds, run as a container runtime runs them: each tarball is a valid
docker-archive (manifest, config, layers whose digests are the config's diff_ids) with a non-root user and its
entrypoint; each image's root filesystem, unpacked layer by layer, runs under ``chroot`` as 65532:65532 on
a read-only bind mount with /proc, /dev and a tmpfs /tmp (the manifests' emptyDir), as
``readOnlyRootFilesystem`` has it.

e2e tests: they need the built images (`build.sh`; .ci/run builds them) and root (mount namespaces, chroot).
Without either they skip, or fail where e2e is required (tests/e2e/gate.py).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.e2e import gate
from tests.e2e.images import aesm
from tests.e2e.images.built import (
    BUILD_SCRIPT,
    ImagesMissingError,
    extract_rootfs,
    layer_digests,
    locate,
    read_archive,
)
from tests.e2e.images.rootfs import MOUNT_POINTS, Rootfs
from tests.e2e.ociarchive import ImageArchive
from tests.e2e.pki import CertificateAuthority
from tests.machine import free_port, stop

pytestmark = pytest.mark.e2e

NONROOT = "65532:65532"
ENTRYPOINTS = {
    "confidential-pods": ["confidential-pods"],
    "kube-scheduler": ["/usr/local/bin/kube-scheduler"],
    "aesmd-standin": ["/usr/local/bin/aesmd-standin"],
    "pccs-standin": ["/usr/local/bin/pccs-standin"],
}
PCCS = "/sgx/certification/v4/"


def _unavailable(config: pytest.Config, reason: str) -> None:
    if gate.required(config):
        pytest.fail(f"{reason} [e2e is required here]", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def images(request: pytest.FixtureRequest) -> dict[str, ImageArchive]:
    try:
        return locate()
    except ImagesMissingError as exc:
        _unavailable(request.config, str(exc))
        raise


@pytest.fixture(scope="module")
def as_root(request: pytest.FixtureRequest) -> None:
    if os.geteuid() != 0:
        _unavailable(request.config, "running an image's root filesystem needs root (mounts, chroot)")


@pytest.fixture(scope="module")
def rootfs(images: dict[str, ImageArchive], as_root: None) -> Iterator[dict[str, Rootfs]]:
    """Every image unpacked once for the module, with the mount points a runtime creates."""
    with tempfile.TemporaryDirectory(prefix="e2e-images-") as workdir:
        unpacked = {}
        for name, image in images.items():
            path = Path(workdir) / name
            contents = extract_rootfs(image.path, path)
            for mount_point in MOUNT_POINTS:
                (path / mount_point).mkdir(exist_ok=True)
            unpacked[name] = Rootfs(path=path, config=contents.config["config"])
        yield unpacked


def test_build_script_reuses_current_images(images: dict[str, ImageArchive], as_root: None) -> None:
    before = {name: image.path.stat().st_mtime_ns for name, image in images.items()}
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert {name: image.path.stat().st_mtime_ns for name, image in images.items()} == before
    assert locate() == images


@pytest.mark.parametrize("name", sorted(ENTRYPOINTS))
def test_archive_is_a_docker_archive_of_a_nonroot_image(images: dict[str, ImageArchive], name: str) -> None:
    image = images[name]
    contents = read_archive(image.path)
    assert contents.references == [image.reference]
    assert contents.config_name.removesuffix(".json") == image.image_id.removeprefix("sha256:")
    assert hashlib.sha256(contents.config_bytes).hexdigest() == image.image_id.removeprefix("sha256:")
    config = contents.config
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["rootfs"]["type"] == "layers"
    assert layer_digests(image.path, contents) == config["rootfs"]["diff_ids"]
    assert config["config"]["User"] == NONROOT
    assert config["config"]["Entrypoint"] == ENTRYPOINTS[name]


def test_product_image_runs_on_a_read_only_root_as_nonroot(rootfs: dict[str, Rootfs]) -> None:
    image = rootfs["confidential-pods"]
    assert image.command == ["confidential-pods", "--help"]

    helped = image.run(image.command)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: confidential-pods")

    simulated = image.run(["confidential-pods", "simulate"])
    assert simulated.returncode == 0, simulated.stderr
    assert simulated.stdout.startswith("Built-in example cluster")
    assert "placed" in simulated.stdout

    who = image.run(["python3", "-c", "import os, sys; print(os.getuid(), os.getgid(), sys.prefix)"])
    assert who.stdout.split() == ["65532", "65532", "/opt/confidential-pods"], who.stderr
    scratch = image.run(["sh", "-c", "echo written >/tmp/probe && cat /tmp/probe"])
    assert scratch.stdout == "written\n", scratch.stderr


def test_product_image_root_is_really_read_only(rootfs: dict[str, Rootfs]) -> None:
    """Even root cannot write to the root filesystem the other tests run on: they prove read-only use."""
    written = rootfs["confidential-pods"].run(["touch", "/probe"], user="0:0")
    assert written.returncode != 0
    assert "Read-only file system" in written.stderr


def test_kube_scheduler_image_runs(rootfs: dict[str, Rootfs]) -> None:
    image = rootfs["kube-scheduler"]
    version = image.run([*image.command, "--version"])
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("Kubernetes v")


def _wait_for(condition: Any, what: str, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            pytest.fail(f"exited {process.returncode} before {what}:\n{output}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.1)


@pytest.fixture
def aesmd(rootfs: dict[str, Rootfs], tmp_path: Path) -> Iterator[tuple[Rootfs, Path]]:
    """The aesmd stand-in serving in its image, its socket directory an emptyDir-like 0777 host directory."""
    image = rootfs["aesmd-standin"]
    socket_dir = tmp_path / "aesmd"
    socket_dir.mkdir()
    socket_dir.chmod(0o777)
    process = subprocess.Popen(
        image.run_argv(image.command, binds=[(socket_dir, "/var/run/aesmd", False)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for((socket_dir / "aesm.socket").is_socket, "AESM socket", process)
        yield image, socket_dir
    finally:
        assert stop(process, timeout=10) == 0
    assert not (socket_dir / "aesm.socket").exists(), "the socket outlived SIGTERM"


def test_aesmd_standin_answers_on_its_socket(aesmd: tuple[Rootfs, Path]) -> None:
    _, socket_dir = aesmd
    socket_path = socket_dir / "aesm.socket"
    assert socket_path.stat().st_uid == 65532
    assert socket_path.stat().st_mode & 0o777 == 0o777

    answer = aesm.get_supported_att_key_id_num(socket_path)
    assert answer == aesm.AttKeyIDNum(error_code=0, att_key_id_num=1)

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.connect(str(socket_path))
        # A request needing a quoting enclave: answered in its own field, AESM_SERVICE_UNAVAILABLE.
        quote = aesm.parse(aesm.transact(connection, aesm.request(aesm.INIT_QUOTE_EX)))
        assert list(quote) == [aesm.INIT_QUOTE_EX]
        assert aesm.parse(bytes(quote[aesm.INIT_QUOTE_EX])) == {1: 30}
        # Not a request aesmd knows (Request has no field 20): the connection is closed, as aesmd does.
        connection.sendall(aesm.frame(aesm.request(20)))
        assert connection.recv(16) == b""


def test_aesmd_probe_command_runs_in_the_image(aesmd: tuple[Rootfs, Path]) -> None:
    """The AESM DaemonSet's probes: `/bin/sh -c "test -S /var/run/aesmd/aesm.socket"`."""
    image, socket_dir = aesmd
    binds = [(socket_dir, "/var/run/aesmd", True)]
    present = image.run(["/bin/sh", "-c", "test -S /var/run/aesmd/aesm.socket"], binds=binds)
    assert present.returncode == 0, present.stderr
    absent = image.run(["/bin/sh", "-c", "test -S /var/run/aesmd/other.socket"], binds=binds)
    assert absent.returncode == 1, absent.stderr


@pytest.fixture
def pccs(rootfs: dict[str, Rootfs], tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The PCCS stand-in serving in its image with a certificate from a test CA, mounted as a TLS Secret."""
    ca = CertificateAuthority.create(tmp_path / "ca")
    tls = tmp_path / "tls"
    ca.issue(
        tls, "tls", common_name="pccs", dns_names=("pccs.test",), ip_addresses=("127.0.0.1",), server=True
    )
    (tls / "tls.key").chmod(0o644)  # a Secret volume's defaultMode
    image = rootfs["pccs-standin"]
    port = free_port()
    process = subprocess.Popen(
        image.run_argv([*image.command, f"-listen=127.0.0.1:{port}"], binds=[(tls, "/etc/pccs/tls", True)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    try:
        _wait_for(listening, f"PCCS on port {port}", process)
        yield port, ca.files.cert
    finally:
        stop(process, timeout=10)


def _get(port: int, cafile: Path, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    context = ssl.create_default_context(cafile=str(cafile))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def _chain(header: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(urllib.parse.unquote(header).encode())


def _common_name(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def test_pccs_standin_serves_root_ca_crl(pccs: tuple[int, Path]) -> None:
    status, headers, body = _get(*pccs, PCCS + "rootcacrl")
    assert status == 200
    assert headers["Content-Type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(bytes.fromhex(body.decode()))
    assert _common_name(crl.issuer) == "Intel SGX Root CA"


@pytest.mark.parametrize("ca", ["processor", "platform"])
def test_pccs_standin_serves_pck_crls_with_their_chain(pccs: tuple[int, Path], ca: str) -> None:
    status, headers, body = _get(*pccs, PCCS + f"pckcrl?ca={ca}")
    assert status == 200
    assert headers["Content-Type"] == "application/x-pem-file"
    crl = x509.load_der_x509_crl(bytes.fromhex(body.decode()))
    issuer, root = _chain(headers["SGX-PCK-CRL-Issuer-Chain"])
    assert _common_name(issuer.subject) == f"Intel SGX PCK {ca.capitalize()} CA"
    assert crl.issuer == issuer.subject
    assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    issuer.verify_directly_issued_by(root)

    status, headers, der = _get(*pccs, PCCS + f"pckcrl?ca={ca}&encoding=der")
    assert (status, headers["Content-Type"]) == (200, "application/pkix-crl")
    assert x509.load_der_x509_crl(der).issuer == issuer.subject


@pytest.mark.parametrize(("route", "enclave"), [("qe/identity", "QE"), ("qve/identity", "QVE")])
def test_pccs_standin_serves_signed_enclave_identities(
    pccs: tuple[int, Path], route: str, enclave: str
) -> None:
    status, headers, body = _get(*pccs, PCCS + route)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    document = json.loads(body)
    assert document["enclaveIdentity"]["id"] == enclave
    assert document["enclaveIdentity"]["tcbLevels"]
    signing, root = _chain(headers["SGX-Enclave-Identity-Issuer-Chain"])
    assert _common_name(signing.subject) == "Intel SGX TCB Signing"
    signing.verify_directly_issued_by(root)
    # The signature covers the identity's exact bytes as sent (r || s, 32 bytes each).
    signed = body[len(b'{"enclaveIdentity":') : body.rindex(b',"signature":')]
    signature = bytes.fromhex(document["signature"])
    der = encode_dss_signature(int.from_bytes(signature[:32]), int.from_bytes(signature[32:]))
    public_key = signing.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(der, signed, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (PCCS + "pckcrl?ca=bogus", 400),
        (PCCS + "qe/identity?update=later", 400),
        (PCCS + "pckcert?qeid=00&pceid=0000", 404),  # needs platform data: not served
        (PCCS + "tcb?fmspc=00606A000000", 404),
        ("/sgx/certification/v3/rootcacrl", 404),
        ("/", 404),
    ],
)
def test_pccs_standin_refuses_what_it_does_not_serve(pccs: tuple[int, Path], path: str, status: int) -> None:
    assert _get(*pccs, path)[0] == status


def test_pccs_standin_is_trusted_only_through_the_test_ca(pccs: tuple[int, Path], tmp_path: Path) -> None:
    port, _ = pccs
    other = CertificateAuthority.create(tmp_path / "other-ca")
    with pytest.raises(ssl.SSLCertVerificationError):
        _get(port, other.files.cert, PCCS + "rootcacrl")


def test_images_json_is_what_the_node_imports(images: dict[str, ImageArchive]) -> None:
    assert set(images) == set(ENTRYPOINTS)
    for image in images.values():
        assert image.reference.startswith("localhost/confidential-pods-e2e/")
        assert image.image_id == read_archive(image.path).image_id
