"""The images of tests/e2e/images/build.sh that are one static binary ``FROM scratch``: kube-scheduler and the
two stand-ins, written with :mod:`tests.e2e.ociarchive` (entries sorted, mtime 0, owner 0:0: the same inputs
give the same image ID). Each runs as 65532:65532 and writes nothing to its root filesystem.

    python -m tests.e2e.images.scratch NAME REFERENCE TARBALL --binary PATH [--busybox PATH]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from tests.e2e.ociarchive import (
    Entry,
    ImageArchive,
    ImageConfig,
    directory,
    file,
    symlink,
    write_docker_archive,
)

#: The user of every image we build (distroless' ``nonroot``; the manifests' ``runAsUser``).
NONROOT = "65532:65532"
BIN_DIR = "usr/local/bin"


def _binary_layer(name: str, binary: Path) -> list[Entry]:
    return [
        directory("usr"),
        directory("usr/local"),
        directory(BIN_DIR),
        file(f"{BIN_DIR}/{name}", source=binary, mode=0o755),
    ]


def kube_scheduler(binary: Path, reference: str, path: Path) -> ImageArchive:
    """kube-scheduler where upstream's image has it (``/usr/local/bin``, the manifests' ``command``)."""
    return write_docker_archive(
        path,
        reference,
        layers=[_binary_layer("kube-scheduler", binary)],
        config=ImageConfig(
            entrypoint=(f"/{BIN_DIR}/kube-scheduler",), env=(f"PATH=/{BIN_DIR}",), user=NONROOT
        ),
    )


def aesmd_standin(binary: Path, busybox: Path, reference: str, path: Path) -> ImageArchive:
    """The aesmd stand-in, and busybox as ``/bin/sh``: the AESM DaemonSet's probes run
    ``/bin/sh -c "test -S /var/run/aesmd/aesm.socket"``."""
    layer = _binary_layer("aesmd-standin", binary)
    layer += [directory("bin"), file("bin/busybox", source=busybox, mode=0o755), symlink("bin/sh", "busybox")]
    return write_docker_archive(
        path,
        reference,
        layers=[layer],
        config=ImageConfig(
            entrypoint=(f"/{BIN_DIR}/aesmd-standin",), env=(f"PATH=/{BIN_DIR}:/bin",), user=NONROOT
        ),
    )


def pccs_standin(binary: Path, reference: str, path: Path) -> ImageArchive:
    """The PCCS stand-in; its serving certificate is mounted at ``/etc/pccs/tls`` (a TLS Secret)."""
    return write_docker_archive(
        path,
        reference,
        layers=[_binary_layer("pccs-standin", binary)],
        config=ImageConfig(entrypoint=(f"/{BIN_DIR}/pccs-standin",), env=(f"PATH=/{BIN_DIR}",), user=NONROOT),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=["kube-scheduler", "aesmd-standin", "pccs-standin"])
    parser.add_argument("reference")
    parser.add_argument("tarball", type=Path)
    parser.add_argument("--binary", type=Path, required=True)
    parser.add_argument("--busybox", type=Path, default=Path("/bin/busybox"))
    args = parser.parse_args(argv)
    if args.name == "kube-scheduler":
        image = kube_scheduler(args.binary, args.reference, args.tarball)
    elif args.name == "aesmd-standin":
        image = aesmd_standin(args.binary, args.busybox, args.reference, args.tarball)
    else:
        image = pccs_standin(args.binary, args.reference, args.tarball)
    print(f"{image.reference} {image.image_id} {image.path}")


if __name__ == "__main__":
    main()
