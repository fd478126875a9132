"""The images tests/e2e/images/build.sh built, as the e2e node imports them and the tests look into them.

``images.json`` in the output directory (``$E2E_IMAGES_DIR``, default ``.cache/e2e-images``) maps each image's
name to its reference, tarball and image ID::

    {"confidential-pods": {"reference": "localhost/confidential-pods-e2e/confidential-pods:0.1.0",
                           "archive": "confidential-pods.tar", "id": "sha256:..."}, ...}

:func:`locate` reads it as :class:`tests.e2e.ociarchive.ImageArchive` values (what the node imports);
:func:`read_archive` and :func:`extract_rootfs` open a docker-archive tarball as a runtime would.

    python -m tests.e2e.images.built --write DIR REFERENCE...   (build.sh writes images.json this way)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from tests.e2e.ociarchive import ImageArchive

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = Path(__file__).with_name("build.sh")
IMAGES_DIR_ENV = "E2E_IMAGES_DIR"
INDEX = "images.json"
_CHUNK = 1 << 20
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


class ImagesMissingError(Exception):
    """The images are not built, or not for the sources as they are (the message says what to run)."""


def images_dir() -> Path:
    """Where build.sh puts the tarballs."""
    configured = os.environ.get(IMAGES_DIR_ENV)
    return Path(configured) if configured else REPO_ROOT / ".cache" / "e2e-images"


def locate(directory: Path | None = None, *, current: bool = True) -> dict[str, ImageArchive]:
    """The built images by name (``confidential-pods``, ``kube-scheduler``, ``aesmd-standin``,
    ``pccs-standin``). With ``current``, build.sh --check must also find every image built from the sources
    as they are now."""
    directory = directory or images_dir()
    hint = f"run {BUILD_SCRIPT.relative_to(REPO_ROOT)} (as root; docs/images.md)"
    if current:
        check = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--check"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, IMAGES_DIR_ENV: str(directory)},
            check=False,
        )
        if check.returncode != 0:
            raise ImagesMissingError(f"{(check.stdout + check.stderr).strip()} [{hint}]")
    try:
        index = json.loads((directory / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ImagesMissingError(f"no {directory / INDEX}: {hint}") from exc
    images = {
        name: ImageArchive(directory / entry["archive"], reference=entry["reference"], image_id=entry["id"])
        for name, entry in index.items()
    }
    for image in images.values():
        if not image.path.is_file():
            raise ImagesMissingError(f"{image.path} is missing: {hint}")
    return images


@dataclass(frozen=True)
class ArchiveContents:
    """The parts of a docker-archive tarball (``docker save``'s format) a runtime reads."""

    references: list[str]
    config_name: str
    config_bytes: bytes
    layer_names: list[str]

    @property
    def config(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.config_bytes))

    @property
    def image_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config_bytes).hexdigest()


def read_archive(path: Path) -> ArchiveContents:
    """The single image of a docker-archive tarball: its tags, config and layer member names."""
    with tarfile.open(path) as archive:
        manifest = json.loads(_member(archive, "manifest.json"))
        if not isinstance(manifest, list) or len(manifest) != 1:
            raise ValueError(f"{path}: manifest.json must list exactly one image")
        entry = manifest[0]
        return ArchiveContents(
            references=list(entry.get("RepoTags") or []),
            config_name=entry["Config"],
            config_bytes=_member(archive, entry["Config"]),
            layer_names=list(entry["Layers"]),
        )


def layer_digests(path: Path, contents: ArchiveContents) -> list[str]:
    """``sha256:<hex>`` of each layer tar, in order: a valid image has its config's ``rootfs.diff_ids``."""
    digests = []
    with tarfile.open(path) as archive:
        for name in contents.layer_names:
            stream = archive.extractfile(name)
            if stream is None:
                raise ValueError(f"{path}: layer {name} is not a file")
            digest = hashlib.sha256()
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
            digests.append("sha256:" + digest.hexdigest())
    return digests


def extract_rootfs(path: Path, destination: Path) -> ArchiveContents:
    """Unpack the image's layers in order into ``destination``, applying whiteouts as overlay runtimes do
    (``.wh.<name>`` deletes ``<name>``, ``.wh..wh..opq`` empties its directory). Owners are kept when root."""
    contents = read_archive(path)
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path) as archive:
        for name in contents.layer_names:
            stream = archive.extractfile(name)
            if stream is None:
                raise ValueError(f"{path}: layer {name} is not a file")
            with tarfile.open(fileobj=stream, mode="r|") as layer:
                for member in layer:
                    _apply(layer, member, destination)
    return contents


def _apply(layer: tarfile.TarFile, member: tarfile.TarInfo, destination: Path) -> None:
    parent, _, base = member.name.rstrip("/").rpartition("/")
    if base == _OPAQUE:
        for child in (destination / parent).iterdir():
            _remove(child)
    elif base.startswith(_WHITEOUT):
        _remove(destination / parent / base.removeprefix(_WHITEOUT))
    else:
        target = destination / member.name
        if target.is_symlink() or (target.exists() and not (target.is_dir() and member.isdir())):
            _remove(target)
        # Our own images: keep modes, owners and absolute symlinks as they are.
        layer.extract(member, destination, numeric_owner=True, filter="fully_trusted")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    stream = archive.extractfile(name)
    if stream is None:
        raise ValueError(f"{name} is not a file")
    return stream.read()


def write_index(directory: Path, references: Sequence[str]) -> Path:
    """images.json for the tarballs ``<name>.tar`` of ``references`` (name: the repository's last part)."""
    index = {}
    for reference in references:
        name = reference.rsplit("/", 1)[-1].split(":", 1)[0]
        contents = read_archive(directory / f"{name}.tar")
        if contents.references != [reference]:
            raise ValueError(f"{name}.tar is tagged {contents.references}, not {reference}")
        index[name] = {"reference": reference, "archive": f"{name}.tar", "id": contents.image_id}
    path = directory / INDEX
    path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="write images.json for build.sh's tarballs")
    parser.add_argument("--write", type=Path, required=True, metavar="DIR")
    parser.add_argument("references", nargs="+")
    args = parser.parse_args(argv)
    write_index(args.write, args.references)


if __name__ == "__main__":
    main()
