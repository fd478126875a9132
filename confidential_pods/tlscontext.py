"""The serving certificate: an ``ssl.SSLContext`` that follows the PEM files on disk.

gunicorn's threaded and sync workers wrap every accepted connection separately
(``gunicorn.sock.ssl_wrap_socket``) and ask the ``ssl_context`` server hook for a context each time;
:class:`ReloadingContext` is what that hook answers. It returns a cached context and rebuilds it when
the certificate or key file changes on disk (device, inode, size, mtime or ctime of the file the path
resolves to, so a kubelet Secret volume's atomic ``..data`` symlink swap and an in-place rewrite are
both seen). A pair that does not load (half written, key and certificate not matching, unreadable)
is not used: the previous pair keeps serving and a warning is logged once per change on disk.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from confidential_pods.errors import CertificateError

logger = logging.getLogger(__name__)

#: TLS 1.2 suites offered (TLS 1.3 suites are OpenSSL's defaults): forward secret, AEAD only.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


@dataclass(frozen=True)
class FileStamp:
    """Identity of the file a path resolves to now; changes when the file is replaced or rewritten."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True)
class PairStamp:
    cert: FileStamp | None
    key: FileStamp | None


@dataclass(frozen=True)
class LoadedPair:
    """A serving context and what was loaded into it."""

    context: ssl.SSLContext
    serial: int
    subject: str
    not_after: datetime


def stamp_pair(cert: str, key: str) -> PairStamp:
    return PairStamp(cert=_stamp(cert), key=_stamp(key))


def _stamp(path: str) -> FileStamp | None:
    try:
        st = os.stat(path)  # follows symlinks: a ..data swap changes the inode
    except OSError:
        return None
    return FileStamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def load_pair(cert: str, key: str) -> LoadedPair:
    """Build the server context from a PEM certificate (chain) and key, or raise CertificateError."""
    cert_pem = _read(cert, "certificate")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CertificateError(f"certificate file {cert} holds no PEM certificate") from None
    key_pem = _read(key, "key")
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertificateError(f"key file {key} is encrypted; a serving key must not be") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(f"key file {key} holds no usable PEM private key") from None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private_key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise CertificateError(
            f"key file {key} does not match certificate file {cert} (serial {leaf.serial_number:x})"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except (ssl.SSLError, OSError) as exc:
        # The files changed between our read and OpenSSL's, or OpenSSL refuses the key type.
        raise CertificateError(f"OpenSSL cannot load {cert} with {key}: {exc}") from None
    return LoadedPair(
        context=context,
        serial=leaf.serial_number,
        subject=leaf.subject.rfc4514_string(),
        not_after=leaf.not_valid_after_utc,
    )


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {what} file {path}: {exc.strerror}") from None


class ReloadingContext:
    """The current serving context; re-reads the pair when the files change, keeps the last good one.

    :meth:`context` is gunicorn's ``ssl_context`` hook's answer, called once per accepted
    connection from the worker's threads: two ``stat`` calls when nothing changed.
    """

    def __init__(self, cert: str, key: str, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self._cert = cert
        self._key = key
        self._now = now
        self._lock = threading.Lock()
        stamp = stamp_pair(cert, key)
        self._pair = load_pair(cert, key)
        self._stamp = stamp
        self._rejected: PairStamp | None = None
        self._warn_if_expired(self._pair)

    @property
    def pair(self) -> LoadedPair:
        return self._pair

    def current(self) -> LoadedPair:
        """The pair a connection accepted now is served: re-read first if the files changed."""
        self.context()
        return self._pair

    def context(self) -> ssl.SSLContext:
        stamp = stamp_pair(self._cert, self._key)
        if stamp == self._stamp or stamp == self._rejected:
            return self._pair.context
        with self._lock:
            if stamp in (self._stamp, self._rejected):
                return self._pair.context
            try:
                pair = load_pair(self._cert, self._key)
            except CertificateError as exc:
                self._rejected = stamp
                logger.warning(
                    "not reloading the serving certificate: %s; still serving serial %x",
                    exc,
                    self._pair.serial,
                )
                return self._pair.context
            if stamp_pair(self._cert, self._key) != stamp:
                # Changed while we read it: serve it for this connection, re-check on the next one.
                return pair.context
            self._pair, self._stamp, self._rejected = pair, stamp, None
        logger.info(
            "serving certificate reloaded from %s: serial %x, %s, valid until %s",
            self._cert,
            pair.serial,
            pair.subject,
            pair.not_after.isoformat(),
        )
        self._warn_if_expired(pair)
        return pair.context

    def _warn_if_expired(self, pair: LoadedPair) -> None:
        if pair.not_after <= self._now():
            logger.warning(
                "serving certificate %s (serial %x) expired at %s", self._cert, pair.serial, pair.not_after
            )
