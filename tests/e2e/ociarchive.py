"""Container images written as docker-archive tarballs, without a daemon or a registry.

``ctr -n k8s.io images import <tarball>`` loads them into containerd (docker save's format: ``manifest.json``,
one config JSON, one uncompressed tar per layer). Every tar is written deterministically (entries sorted,
mtime 0, uid/gid 0), so the same inputs give the same image ID.

Example, the e2e node's pause image::

    write_docker_archive(
        path, "localhost/confidential-pods-e2e/pause:3.10.2",
        layers=[[file("pause", source=bin_dir / "pause", mode=0o755)]],
        config=ImageConfig(entrypoint=("/pause",), user="65535:65535"),
    )
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One member of a layer. ``path`` is relative to the image's root (no leading ``/``)."""

    path: str
    kind: Literal["file", "dir", "symlink"]
    mode: int = 0o644
    data: bytes = b""
    #: For ``file``: read the content from here instead of ``data``.
    source: Path | None = None
    #: For ``symlink``: where it points.
    target: str = ""


def file(path: str, data: bytes = b"", *, source: Path | None = None, mode: int = 0o644) -> Entry:
    """A regular file, from ``data`` or from the file ``source``."""
    return Entry(path=path, kind="file", mode=mode, data=data, source=source)


def directory(path: str, mode: int = 0o755) -> Entry:
    """A directory."""
    return Entry(path=path, kind="dir", mode=mode)


def symlink(path: str, target: str) -> Entry:
    """A symbolic link ``path`` -> ``target``."""
    return Entry(path=path, kind="symlink", mode=0o777, target=target)


def tree(root: Path, prefix: str = "") -> list[Entry]:
    """Every file, directory and symlink under ``root``, placed under ``prefix`` in the image (modes kept)."""
    entries: list[Entry] = []
    for current, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            full = Path(current) / name
            relative = str(Path(prefix) / full.relative_to(root)) if prefix else str(full.relative_to(root))
            info = full.lstat()
            if stat.S_ISLNK(info.st_mode):
                entries.append(symlink(relative, os.readlink(full)))
            elif stat.S_ISDIR(info.st_mode):
                entries.append(directory(relative, stat.S_IMODE(info.st_mode)))
            elif stat.S_ISREG(info.st_mode):
                entries.append(file(relative, source=full, mode=stat.S_IMODE(info.st_mode)))
    return entries


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image's config (what a Dockerfile's ENTRYPOINT, CMD, ENV, USER, WORKDIR set)."""

    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    user: str = ""
    working_dir: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageArchive:
    """What :func:`write_docker_archive` wrote."""

    path: Path
    reference: str
    #: ``sha256:<hex>`` of the config: the image ID containerd and Kubernetes report.
    image_id: str


def write_docker_archive(
    path: Path,
    reference: str,
    layers: Sequence[Iterable[Entry]],
    config: ImageConfig | None = None,
    *,
    architecture: str = "amd64",
) -> ImageArchive:
    """Write a docker-archive tarball of one image named ``reference`` (e.g. ``localhost/e2e/busybox:1.0``).

    ``layers`` go bottom first; each is a list of entries (parents before children is not required: the
    entries are sorted). Layers are staged in temporary files beside ``path``, so large ones do not sit in
    memory.
    """
    config = config if config is not None else ImageConfig()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".layers-") as staging:
        layer_files: list[tuple[Path, str]] = []
        for index, entries in enumerate(layers):
            layer_path = Path(staging) / f"{index}.tar"
            _write_layer(layer_path, entries)
            layer_files.append((layer_path, _sha256_file(layer_path)))
        config_json = _canonical(
            _config_document(config, [digest for _, digest in layer_files], architecture)
        )
        config_digest = hashlib.sha256(config_json).hexdigest()
        manifest = [
            {
                "Config": f"{config_digest}.json",
                "RepoTags": [reference],
                "Layers": [f"{digest}/layer.tar" for _, digest in layer_files],
            }
        ]
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
            _add_bytes(archive, f"{config_digest}.json", config_json)
            for layer_path, digest in layer_files:
                _add_dir(archive, digest)
                info = _info(f"{digest}/layer.tar", tarfile.REGTYPE, 0o644)
                info.size = layer_path.stat().st_size
                with layer_path.open("rb") as stream:
                    archive.addfile(info, stream)
            _add_bytes(archive, "manifest.json", _canonical(manifest))
    return ImageArchive(path=path, reference=reference, image_id=f"sha256:{config_digest}")


def _config_document(config: ImageConfig, diff_ids: list[str], architecture: str) -> dict[str, Any]:
    runtime: dict[str, Any] = {"Env": list(config.env)}
    if config.entrypoint:
        runtime["Entrypoint"] = list(config.entrypoint)
    if config.cmd:
        runtime["Cmd"] = list(config.cmd)
    if config.user:
        runtime["User"] = config.user
    if config.working_dir:
        runtime["WorkingDir"] = config.working_dir
    if config.labels:
        runtime["Labels"] = dict(config.labels)
    return {
        "architecture": architecture,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/e2e/ociarchive.py"}]
        * len(diff_ids),
    }


def _write_layer(path: Path, entries: Iterable[Entry]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as layer:
        for entry in sorted(entries, key=lambda e: e.path):
            name = entry.path.strip("/")
            if entry.kind == "dir":
                layer.addfile(_info(name, tarfile.DIRTYPE, entry.mode))
            elif entry.kind == "symlink":
                info = _info(name, tarfile.SYMTYPE, entry.mode)
                info.linkname = entry.target
                layer.addfile(info)
            elif entry.source is not None:
                info = _info(name, tarfile.REGTYPE, entry.mode)
                info.size = entry.source.stat().st_size
                with entry.source.open("rb") as stream:
                    layer.addfile(info, stream)
            else:
                info = _info(name, tarfile.REGTYPE, entry.mode)
                info.size = len(entry.data)
                layer.addfile(info, io.BytesIO(entry.data))


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _info(name, tarfile.REGTYPE, 0o644)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _add_dir(archive: tarfile.TarFile, name: str) -> None:
    archive.addfile(_info(name, tarfile.DIRTYPE, 0o755))


def _canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
