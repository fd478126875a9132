"""Read and write the material's files in a directory; every write is atomic (temp file + rename).

Keys (``ca.key``, ``tls.key``) are created with mode 0600, certificates with 0644. Only files whose
content changes are written, so a run that changes nothing leaves the directory byte-identical. Within one
run the order is ``ca.crt``, ``ca.key``, ``tls.key``, ``tls.crt``: trust first, and the certificate last so
that a server watching ``tls.crt`` finds the matching key already in place.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from certs.errors import MaterialError
from certs.material import CA_CERT, CA_KEY, KEY_FILES, TLS_CERT, TLS_KEY

WRITE_ORDER = (CA_CERT, CA_KEY, TLS_KEY, TLS_CERT)


def read_files(directory: Path) -> dict[str, bytes]:
    """The material files present in ``directory`` (absent ones are left out)."""
    files: dict[str, bytes] = {}
    for name in WRITE_ORDER:
        path = directory / name
        try:
            files[name] = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise MaterialError(f"cannot read {path}: {exc.strerror}") from exc
    return files


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a temporary file in the same directory, fsync it, then rename it over ``path``."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def file_mode(name: str) -> int:
    return 0o600 if name in KEY_FILES else 0o644


def write_files(directory: Path, files: Mapping[str, bytes], previous: Mapping[str, bytes]) -> list[str]:
    """Write the files of ``files`` that differ from ``previous``; return their names (in write order).

    An unchanged key file whose mode is looser than 0600 is tightened in place.
    """
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise MaterialError(f"cannot create {directory}: {exc.strerror}") from exc
    written: list[str] = []
    for name in WRITE_ORDER:
        if name not in files:
            continue
        path = directory / name
        try:
            if files[name] != previous.get(name):
                atomic_write(path, files[name], file_mode(name))
                written.append(name)
            elif name in KEY_FILES and path.stat().st_mode & 0o077:
                path.chmod(0o600)
        except OSError as exc:
            raise MaterialError(f"cannot write {path}: {exc.strerror}") from exc
    return written
