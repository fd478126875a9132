"""The images the e2e node needs, built here (no registry is reachable): pause, and busybox to run checks.

- **pause**: kubernetes' ``build/pause/linux/pause.c`` of the pinned release, compiled static by
  ``tests/e2e/build.sh`` (``<bin dir>/pause``), in an image laid out as upstream's ``build/pause/Dockerfile``
  (``/pause``, user 65535, entrypoint ``/pause``). containerd's ``sandbox_image``.
- **busybox**: Debian's ``busybox-static`` (``/bin/busybox``) with a link per applet in ``/bin``: a shell,
  ``test``, ``stat``, ``ip``, ``sleep`` for the pods that look at what they were given.

Both are docker-archive tarballs (:mod:`tests.e2e.ociarchive`) that :meth:`tests.e2e.node.Node.import_image`
loads into the node's containerd.
"""

from __future__ import annotations

import subprocess
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

#: The tag of kubernetes' build/pause/Makefile at the pinned release (build.sh stamps it into the binary).
PAUSE_IMAGE = "localhost/confidential-pods-e2e/pause:3.10.2"
BUSYBOX_IMAGE = "localhost/confidential-pods-e2e/busybox:1.35.0"
#: Installed by Debian's busybox-static (a static binary: it runs in an image without a libc).
BUSYBOX = Path("/bin/busybox")


def pause_image(pause_binary: Path, out_dir: Path) -> ImageArchive:
    """The pause image, as upstream builds it: ``FROM scratch``, ``/pause``, ``USER 65535:65535``."""
    return write_docker_archive(
        out_dir / "pause.tar",
        PAUSE_IMAGE,
        layers=[[file("pause", source=pause_binary, mode=0o755)]],
        config=ImageConfig(entrypoint=("/pause",), user="65535:65535", env=()),
    )


def busybox_image(out_dir: Path, busybox: Path = BUSYBOX) -> ImageArchive:
    """busybox with every applet it lists linked in ``/bin``, and the directories a container expects."""
    applets = subprocess.run(
        [str(busybox), "--list"], check=True, capture_output=True, text=True, timeout=30
    ).stdout.split()
    entries: list[Entry] = [directory(d) for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "var")]
    entries.append(file("bin/busybox", source=busybox, mode=0o755))
    entries.extend(symlink(f"bin/{name}", "busybox") for name in applets if name != "busybox")
    entries.append(file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"))
    entries.append(file("etc/group", b"root:x:0:\nnogroup:x:65534:\n"))
    return write_docker_archive(
        out_dir / "busybox.tar", BUSYBOX_IMAGE, layers=[entries], config=ImageConfig(cmd=("sh",))
    )
