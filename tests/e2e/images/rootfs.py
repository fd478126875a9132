"""An image's root filesystem run as a container runtime runs it, without one: for tests, as root.

:class:`Rootfs` is a directory :func:`tests.e2e.images.built.extract_rootfs` unpacked an image into, with the
image's config; :meth:`Rootfs.run_argv` runs a command there in a private mount namespace with the root
bind-mounted read-only (``readOnlyRootFilesystem``), ``/proc``, ``/dev``, a tmpfs ``/tmp`` (the manifests'
emptyDir) and any bind mounts, ``chroot``-ed as the image's user with the image's environment only.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Directories a runtime mounts over; created in the unpacked tree when the image lacks them.
MOUNT_POINTS = ("proc", "dev", "tmp")


@dataclass(frozen=True)
class Rootfs:
    """An image unpacked, and what its config says to run it with."""

    path: Path
    config: dict[str, Any]

    @property
    def command(self) -> list[str]:
        return [*(self.config.get("Entrypoint") or []), *(self.config.get("Cmd") or [])]

    def run_argv(
        self,
        command: Sequence[str],
        *,
        user: str | None = None,
        binds: Sequence[tuple[Path, str, bool]] = (),
    ) -> list[str]:
        """argv that runs ``command`` in this root filesystem as a runtime would with a read-only root:
        a private mount namespace, the root bind-mounted onto itself, /proc, /dev and a tmpfs /tmp, the
        ``binds`` (host path, path in the image, read-only), then the root remounted read-only and
        ``chroot`` as the image's user (or ``user``) with the image's environment only."""
        user = user or self.config.get("User") or "0:0"
        root = shlex.quote(str(self.path))
        steps = [
            f"mount --bind {root} {root}",
            f"mount -t proc proc {root}/proc",
            f"mount --rbind /dev {root}/dev",
            f"mount -t tmpfs -o mode=1777,size=16m tmpfs {root}/tmp",
        ]
        for source, target, read_only in binds:
            (self.path / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
            options = "-o bind,ro" if read_only else "--bind"
            mount_point = shlex.quote(str(self.path / target.lstrip("/")))
            steps.append(f"mount {options} {shlex.quote(str(source))} {mount_point}")
        steps += [f"mount -o remount,bind,ro {root}", 'exec "$@"']
        group = user.split(":")[1]
        chroot = [_tool("chroot"), f"--userspec={user}", f"--groups={group}", str(self.path)]
        environment = list(self.config.get("Env") or [])
        return [
            _tool("unshare"),
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-euc",
            " && ".join(steps),
            "contained",
            _tool("env"),
            "-i",
            *environment,
            *chroot,
            *command,
        ]

    def run(self, command: Sequence[str], **options: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.run_argv(command, **options), capture_output=True, text=True, timeout=120, check=False
        )


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found (util-linux / coreutils)")
    return path
