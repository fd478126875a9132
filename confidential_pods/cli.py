"""The ``confidential-pods`` command line: one entry point, a subcommand per job.

Each component registers its own subcommands (``webhook/commands.py``, ``extender/commands.py``,
``certs/commands.py``); this module only assembles them and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from confidential_pods import __version__
from confidential_pods.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    from certs import commands as certs_commands
    from extender import commands as extender_commands
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
    return parser


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
        code: int = handler(args)
    except ConfigError as exc:
        print(f"confidential-pods: configuration error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
