"""``confidential-pods`` command lines for tests that run it as a process, as users and the manifests do.

One place for the interpreter and the flags, so every suite starts the servers the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path


def cli(*args: str) -> list[str]:
    """``confidential-pods <args>``, run with this interpreter (the package installed in it)."""
    return [sys.executable, "-m", "confidential_pods", *args]


def webhook_serve(
    cert: Path,
    key: Path,
    port: int,
    *,
    host: str = "127.0.0.1",
    config: Path | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> list[str]:
    """``confidential-pods webhook serve`` on ``host:port`` with a certificate pair (defaults otherwise)."""
    command = cli(
        "webhook", "serve", "--cert", str(cert), "--key", str(key), "--host", host, "--port", str(port)
    )
    if workers is not None:
        command += ["--workers", str(workers)]
    if threads is not None:
        command += ["--threads", str(threads)]
    if config is not None:
        command += ["--config", str(config)]
    return command


def extender_serve(port: int, *args: str, host: str | None = "127.0.0.1") -> list[str]:
    """``confidential-pods extender serve --port <port> [--host <host>] <args>``; ``host=None``: default."""
    command = cli("extender", "serve", "--port", str(port))
    if host is not None:
        command += ["--host", host]
    return [*command, *args]


def certs_generate(
    out: Path, *, service: str, namespace: str, sans: tuple[str, ...] = ("127.0.0.1",)
) -> list[str]:
    """The arguments of ``confidential-pods certs generate`` for the webhook Service, plus ``sans``."""
    args = ["certs", "generate", "--service", service, "--namespace", namespace, "--out", str(out)]
    for san in sans:
        args += ["--san", san]
    return args


def kubectl_plugin(*args: str) -> list[str]:
    """``kubectl confidential-pods <args>``: the plugin executable the package installs beside this
    interpreter (kubectl only finds it on PATH and runs it with the same arguments)."""
    return [str(Path(sys.executable).parent / "kubectl-confidential_pods"), *args]
