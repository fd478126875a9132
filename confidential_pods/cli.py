"""The ``confidential-pods`` command line: one entry point, a subcommand per job.

Each component registers its own subcommands (``webhook/commands.py``, ``extender/commands.py``,
``certs/commands.py``); this module only assembles them and maps errors to exit codes. It also gives every
command what the command line as a whole has: ``--log-level`` before or after the command, a group's help
when it is given without a command (on stderr, exit 2: a usage error, as kubectl treats a group without a
command), and shell completion (argcomplete: ``confidential-pods completion bash``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from confidential_pods import __version__
from confidential_pods.errors import ConfigError
from confidential_pods.settings import load_settings, problems


def build_parser() -> argparse.ArgumentParser:
    from certs import commands as certs_commands
    from extender import commands as extender_commands
    from nodeprobe import commands as nodeprobe_commands
    from operate import commands as operate_commands
    from webhook import commands as webhook_commands

    parser = argparse.ArgumentParser(
        prog="confidential-pods",
        description="SGX confidential pods for Kubernetes: admission webhook, scheduler extender and tools.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_log_level(parser, default="INFO")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    webhook_commands.register(subcommands)
    extender_commands.register(subcommands)
    certs_commands.register(subcommands)
    operate_commands.register(subcommands)
    nodeprobe_commands.register(subcommands)
    _add_completion(subcommands)
    finish(parser)
    return parser


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: The shells argcomplete writes a hook for.
SHELLS = ("bash", "zsh", "fish", "tcsh")
#: The executables the completion hook covers.
EXECUTABLES = ("confidential-pods", "kubectl-confidential_pods")


def add_log_level(parser: argparse.ArgumentParser, *, default: str | None) -> None:
    """``--log-level``; ``default`` None: only when given (a command's copy of the top-level option)."""
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS if default is None else default,
        help="log level (default INFO)",
    )


def finish(parser: argparse.ArgumentParser) -> None:
    """Every command takes ``--log-level`` where it is written; a parser without a command to run shows
    its own help (:func:`main` prints ``args.help_of``)."""
    parser.set_defaults(help_of=parser)
    for command in _commands(parser):
        if not any("--log-level" in a.option_strings for a in command._actions):
            add_log_level(command, default=None)
        if any(isinstance(a, argparse._SubParsersAction) for a in command._actions):
            command.set_defaults(help_of=command)


def _commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):  # an alias is the same parser
                yield command
                yield from _commands(command)


def _add_completion(subcommands: argparse._SubParsersAction[Any]) -> None:
    completion = subcommands.add_parser(
        "completion",
        help="print the shell completion hook (bash, zsh, fish, tcsh)",
        description="Print the shell code that completes confidential-pods and kubectl-confidential_pods "
        "(argcomplete). Load it in the shell's startup file, e.g. for bash: "
        'eval "$(confidential-pods completion bash)"',
    )
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(handler=_completion)


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request, and exit, when the hook asks (argcomplete's protocol);
    otherwise nothing (argcomplete is not even imported: the servers start without it)."""
    if "_ARGCOMPLETE" in os.environ:
        import argcomplete

        argcomplete.autocomplete(parser)


def _completion(args: argparse.Namespace) -> int:
    from argcomplete.shell_integration import shellcode

    sys.stdout.write(shellcode(list(EXECUTABLES), shell=args.shell))
    return 0


def component(subcommands: argparse._SubParsersAction[Any], name: str, what: str) -> Any:
    """``confidential-pods NAME COMMAND``: a component's group of subcommands (returns its subparsers)."""
    group = subcommands.add_parser(name, help=what)
    return group.add_subparsers(title=f"{name} commands", metavar="COMMAND")


def add_config_option(parser: argparse.ArgumentParser, *, complete: bool = False) -> None:
    """``--config FILE``: the configuration file, read by :func:`main` into ``args.settings``.

    ``complete``: the command mutates pods as the webhook would, so a configuration that leaves a key to
    set (:func:`~confidential_pods.settings.problems`) is a usage error (exit 2, one line per key), not a
    refusal of each pod."""
    parser.add_argument("--config", help="configuration file (default $CONFIDENTIAL_PODS_CONFIG)")
    parser.set_defaults(complete_config=complete)


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
    complete(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        args.help_of.print_help(sys.stderr)
        return 2
    try:
        if hasattr(args, "config"):  # every command that reads the configuration has --config
            args.settings = load_settings(args.config)
            if getattr(args, "complete_config", False):
                incomplete = problems(args.settings)
                for problem in incomplete:
                    print(
                        f"confidential-pods: configuration incomplete: {problem} "
                        f"(set {problem.key} in the --config file)",
                        file=sys.stderr,
                    )
                if incomplete:
                    return 2
        code: int = handler(args)
    except ConfigError as exc:
        print(f"confidential-pods: configuration error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
