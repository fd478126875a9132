"""A real TLS server on 127.0.0.1 serving given certificate files, and a client handshake helper."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tls_server(cert: Path, key: Path) -> Iterator[int]:
    """Serve TLS on 127.0.0.1 with ``cert``/``key``; yield the port. Each connection gets b"ok"."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(None)

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # listener closed
            with contextlib.suppress(OSError, ssl.SSLError):
                connection.settimeout(5)
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(b"ok")
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        listener.close()
        thread.join(timeout=5)


def handshake(port: int, cafile: Path, server_hostname: str) -> bytes:
    """Connect with hostname checking against ``server_hostname``; return the peer certificate (DER).

    Raises ``ssl.SSLCertVerificationError`` when the chain or the name does not verify.
    """
    context = ssl.create_default_context(cafile=str(cafile))
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        peer = tls.getpeercert(binary_form=True)
        assert tls.recv(2) == b"ok"
        assert peer is not None
        return peer
