"""``confidential-pods node-probe`` in the product image, as a DaemonSet container would run it: as 65532 on a
read-only root, the node's parts mounted in (device nodes, the AESM socket's directory, the QCNL file, the
PCCS's CA). Needs the built images and root, as tests/e2e/images/test_images.py."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import gate
from tests.e2e.images.built import ImagesMissingError, extract_rootfs, locate
from tests.e2e.images.rootfs import MOUNT_POINTS, Rootfs
from tests.nodeprobe.standins import ROOT_CA_CRL, aesmd, answer_keys, make_pki, pccs

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> Iterator[Rootfs]:
    reason = "running an image's root filesystem needs root (mounts, chroot)" if os.geteuid() != 0 else None
    try:
        archive = locate()["confidential-pods"]
    except ImagesMissingError as exc:
        reason = str(exc)
    if reason is not None:
        if gate.required(request.config):
            pytest.fail(f"{reason} [e2e is required here]", pytrace=False)
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="e2e-node-probe-image-") as workdir:
        path = Path(workdir) / "confidential-pods"
        contents = extract_rootfs(archive.path, path)
        for mount_point in MOUNT_POINTS:
            (path / mount_point).mkdir(exist_ok=True)
        yield Rootfs(path=path, config=contents.config["config"])


def test_node_probe_runs_in_the_image_as_nonroot(image: Rootfs, tmp_path: Path) -> None:
    dev, aesm_dir, etc, cgroup = (tmp_path / d for d in ("dev", "aesmd", "etc", "cgroup"))
    for directory in (dev, aesm_dir, etc, cgroup):
        directory.mkdir(mode=0o755)
    for device in ("sgx_enclave", "sgx_provision"):
        os.mknod(dev / device, 0o600 | stat.S_IFCHR, os.makedev(10, 125))
    (cgroup / "misc.capacity").write_text("sgx_epc 134217728\n")
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    (etc / "ca.crt").write_bytes(pki.ca.read_bytes())  # only the CA goes to the node
    with aesmd(aesm_dir / "aesm.socket", answer_keys(1)) as standin, pccs(pki) as server:
        os.chmod(standin.path, 0o777)  # as aesmd makes it: every container user may connect
        (etc / "sgx_default_qcnl.conf").write_text(
            f'{{"pccs_url": "{server.url()}", "use_secure_cert": true}}'
        )
        done = image.run(
            [
                "confidential-pods", "node-probe", "--once", "--dev-dir", "/host/dev",
                "--aesm-socket", "/run/aesmd/aesm.socket",
                "--qcnl-config", "/host/etc/sgx_default_qcnl.conf", "--pccs-ca", "/host/etc/ca.crt",
                "--cgroup-root", "/host/sys/fs/cgroup",
            ],
            binds=[
                (dev, "/host/dev", True),
                (aesm_dir, "/run/aesmd", True),  # /var/run links to /run in the image
                (etc, "/host/etc", True),
                (cgroup, "/host/sys/fs/cgroup", True),
            ],
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("AllChecksPassed: sgx_enclave and sgx_provision present in /host/dev; ")
    assert (
        "ok  epcCgroup SGXEPCCgroupAvailable: /host/sys/fs/cgroup/misc.capacity: sgx_epc 134217728"
        in done.stderr
    )
    assert server.requests == [ROOT_CA_CRL]
