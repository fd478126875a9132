"""The ``confidential-pods`` command line: one entry point, a subcommand per job.

Each component registers its own subcommands (``webhook/commands.py``, ``extender/commands.py``,
``certs/commands.py``); this module only assembles them and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from confidential_pods import __version__
from confidential_pods.errors import ConfigError
from confidential_pods.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    from certs import commands as certs_commands
    from extender import commands as extender_commands
    from operate import commands as operate_commands
    from webhook import commands as webhook_commands

    parser = argparse.ArgumentParser(
        prog="confidential-pods",
        description="SGX confidential pods for Kubernetes: admission webhook, scheduler extender and tools.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    webhook_commands.register(subcommands)
    extender_commands.register(subcommands)
    certs_commands.register(subcommands)
    operate_commands.register(subcommands)
    return parser


def component(subcommands: argparse._SubParsersAction[Any], name: str, what: str) -> Any:
    """``confidential-pods NAME COMMAND``: a component's group of subcommands (returns its subparsers)."""
    group = subcommands.add_parser(name, help=what)
    return group.add_subparsers(title=f"{name} commands", metavar="COMMAND")


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``: the configuration file, read by :func:`main` into ``args.settings``."""
    parser.add_argument("--config", help="configuration file (default $CONFIDENTIAL_PODS_CONFIG)")


def add_serving_options(
    serve: argparse.ArgumentParser,
    *,
    port: int,
    threads: int,
    workers: int | None,
    tls_required: bool,
    verbs: str,
) -> None:
    """The options both ``serve`` commands share (sizing, TLS, configuration, drain); read back by
    :func:`serving_options`. ``workers`` None: one worker process, no ``--workers`` option."""
    serve.add_argument("--port", type=int, default=port, help=f"port to serve on (default {port})")
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    if workers is not None:
        serve.add_argument(
            "--workers", type=int, default=workers, help=f"worker processes (default {workers})"
        )
    per = "per worker" if workers is not None else "of the single worker"
    serve.add_argument(
        "--threads", type=int, default=threads, help=f"requests answered at once {per} (default {threads})"
    )
    serve.add_argument(
        "--worker-class",
        choices=("connection", "gthread"),
        default="connection",
        help="connection: a thread per connection, which answers its requests itself; gthread: gunicorn's "
        "threaded worker, kept-alive connections parked in a poller (default connection)",
    )
    add_config_option(serve)
    https = "" if tls_required else " to serve HTTPS"
    serve.add_argument(
        "--cert", required=tls_required, help=f"serving certificate (PEM){https}; re-read when it changes"
    )
    serve.add_argument("--key", required=tls_required, help="private key of --cert (PEM)")
    serve.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        help=f"after SIGTERM, answer /readyz with 503 for this long while still serving {verbs} (default 0)",
    )


def serving_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``serve()`` that :func:`add_serving_options` declared."""
    names = ("host", "port", "workers", "threads", "worker_class", "cert", "key", "drain_seconds")
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if hasattr(args, "config"):  # every command that reads the configuration has --config
            args.settings = load_settings(args.config)
        code: int = handler(args)
    except ConfigError as exc:
        print(f"confidential-pods: configuration error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
