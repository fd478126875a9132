"""Listen addresses for the two servers (webhook, extender): resolve, probe or bind, with one clear error.

Both commands take ``--host``/``--port``; what can go wrong with them — a name that does not resolve, a port
in use, a privileged port, an address not on this machine — is said the same way by both.
"""

from __future__ import annotations

import errno
import socket

from confidential_pods.errors import ServingError


def resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """The address family and socket address to listen on for ``host:port``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServingError(f"cannot resolve --host {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    return family, (str(address[0]), int(address[1]))


def listen_error(exc: OSError, host: str, port: int) -> ServingError:
    """What a failed bind of ``host:port`` means, for the person who chose them."""
    if exc.errno == errno.EADDRINUSE:
        return ServingError(f"port {port} on {host} is already in use")
    if exc.errno == errno.EACCES:
        return ServingError(f"not allowed to listen on port {port} on {host}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ServingError(f"{host} is not an address of this machine")
    return ServingError(f"cannot listen on {host}:{port}: {exc.strerror}")


def check_address(host: str, port: int) -> str:
    """Probe that ``host:port`` can be listened on; the gunicorn bind string for it.

    The probe does not set SO_REUSEPORT, so it also fails when another server shares the port that way.
    """
    family, address = resolve(host, port)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise listen_error(exc, host, port) from None
    ip = address[0]
    return f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"


def bind_listener(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The listening socket itself, bound now so that an unusable address is one clear error."""
    family, address = resolve(host, port)
    try:
        return socket.create_server(address, family=family, backlog=backlog)
    except OSError as exc:
        raise listen_error(exc, host, port) from None
