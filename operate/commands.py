"""``confidential-pods doctor`` and the ``kubectl confidential-pods`` plugin (``nodes``, ``why``, ``doctor``).

The plugin is the executable ``kubectl-confidential_pods`` the package installs: kubectl finds it on
PATH and runs it for ``kubectl confidential-pods …``, passing the rest of the command line. It takes
kubectl's own flags where kubectl users put them, before or after the command: ``--kubeconfig`` (else
``$KUBECONFIG`` / ``~/.kube/config``, else the in-cluster account), ``--context``, ``-n`` (else the
context's namespace), ``-A``, and ``--version``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from datetime import timedelta
from http.client import HTTPException
from typing import TYPE_CHECKING, Any

from certs.durations import format_duration, parse_duration
from certs.errors import DurationError
from confidential_pods import __version__
from confidential_pods.documents import printable
from confidential_pods.errors import ConfidentialPodsError, ConfigError, MalformedInput
from confidential_pods.kube import CredentialsError, api_client, default_namespace
from confidential_pods.settings import Settings, load_settings

if TYPE_CHECKING:
    from operate.facts import Finding

DEFAULT_NAMESPACE = "confidential-pods"


#: ``why`` with ``-A``: kubectl refuses a name across all namespaces (``kubectl get pod NAME -A``) too.
ACROSS_NAMESPACES = (
    "a pod cannot be looked up by name across all namespaces (kubectl refuses it too): "
    "drop -A, and give -n NAMESPACE unless the pod is in the context's namespace"
)


def register(subcommands: argparse._SubParsersAction[Any]) -> None:
    """``confidential-pods doctor`` (the same command as ``kubectl confidential-pods doctor``) and
    ``confidential-pods precheck`` (before anything is applied: ``operate/prechecking.py``)."""
    from operate import prechecking

    _add_doctor(subcommands, defaults=True)
    prechecking.register(subcommands)


def _add_doctor(
    subcommands: argparse._SubParsersAction[Any], *, defaults: bool, kubectl: bool = False
) -> None:
    doctor = subcommands.add_parser(
        "doctor",
        help="check an installation against the live cluster (read-only)",
        description="Check that nodes advertise the EPC resource, the webhook configuration trusts the "
        "served certificate, the webhook and the scheduler are ready, host-mode AESM has a source, opted-in "
        "namespaces allow it, every pod holding EPC was placed by the confidential scheduler and no node is "
        "overcommitted. One line per check: ok, warn or fail, why, and what to do.",
        epilog="exit codes: 0 every check ok; 1 a warning; 2 a failure, or the cluster or configuration "
        "could not be read",
    )
    _add_cluster_options(doctor, defaults=defaults, kubectl=kubectl)
    add_json_output(doctor)
    doctor.add_argument(
        "--wait",
        metavar="DURATION",
        help=f"re-run the checks every {POLL_SECONDS:g}s until none fails (e.g. 90s, 5m; at most "
        f"{format_duration(MAX_WAIT)}); when the time is up, report what is not ready",
    )
    doctor.set_defaults(handler=_doctor)


def _add_cluster_options(parser: argparse.ArgumentParser, *, defaults: bool, kubectl: bool = False) -> None:
    """The options that say which cluster and installation to read. The plugin declares them on its own
    parser (``defaults``) and again on each command without defaults, so that they are taken before or
    after the command, as kubectl takes its flags; ``kubectl`` adds ``-n`` and ``-A``."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    add_credentials(parser, defaults=defaults)
    parser.add_argument(
        "--install-namespace",
        default=default(DEFAULT_NAMESPACE),
        help=f"namespace confidential-pods is installed in (default {DEFAULT_NAMESPACE})",
    )
    parser.add_argument(
        "--config",
        dest="config_file",
        default=default(None),
        help="configuration file to check against (default: the ConfigMap the webhook Deployment mounts)",
    )
    if kubectl:
        parser.add_argument(
            "-n",
            "--namespace",
            default=default(None),
            help="the pod's namespace for why (default: the kubeconfig context's namespace, else default)",
        )
        parser.add_argument(
            "-A",
            "--all-namespaces",
            action="store_true",
            default=default(False),
            help="nodes and doctor read every namespace anyway; why refuses it, as kubectl refuses a name "
            "across all namespaces",
        )


def add_json_output(parser: argparse.ArgumentParser) -> None:
    """``-o text|json`` of the checking commands (doctor, precheck): JSON on every exit, errors included."""
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object on every exit, errors included ({error, exitCode})",
    )


def add_credentials(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """``--kubeconfig`` and ``--context``, as kubectl takes them (``defaults``: see _add_cluster_options)."""
    parser.add_argument(
        "--kubeconfig",
        default=None if defaults else argparse.SUPPRESS,
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)",
    )
    parser.add_argument(
        "--context",
        default=None if defaults else argparse.SUPPRESS,
        help="kubeconfig context to use (default: the current context)",
    )


def _connect(args: argparse.Namespace) -> tuple[Any, Settings, str]:
    from operate.cluster import Reader, read_settings

    reader = Reader(api_client(args.kubeconfig, args.context, retries=0))
    if args.config_file:
        return reader, load_settings(args.config_file), args.config_file
    settings, source = read_settings(reader, args.install_namespace)
    return reader, settings, source


def _fail(exc: Exception) -> int:
    print(f"confidential-pods: {exc}", file=sys.stderr)
    return 2


#: ``doctor --wait``: seconds between rounds of checks, and the longest wait accepted.
POLL_SECONDS = 3.0
MAX_WAIT = timedelta(hours=24)


def wait_for(duration: str) -> float:
    """``--wait DURATION`` in seconds: a whole number and a unit (``90s``, ``5m``, ``1h``), at most a day."""
    try:
        if len(duration) > 12:  # before int(): a long digit string is not a duration anyone means
            raise DurationError(f"{duration[:12]!r}…")
        wait = parse_duration(duration)
    except DurationError:
        raise ConfigError(f"--wait: {duration[:40]!r} is not a duration such as 90s, 5m or 1h") from None
    if wait > MAX_WAIT:
        raise ConfigError(f"--wait: {duration} is longer than {format_duration(MAX_WAIT)}")
    return wait.total_seconds()


def _doctor(args: argparse.Namespace) -> int:
    from operate.cluster import Unreadable
    from operate.doctor import EXIT_CODES, render, worst

    try:
        wait = wait_for(args.wait) if args.wait else None
        outcome = _examine(args) if wait is None else _examine_until_ready(args, wait)
    except (ConfidentialPodsError, Unreadable) as exc:
        return _doctor_error(args, exc)
    source, settings, findings, waited = outcome
    verdict = worst(findings)
    failing = [f.check for f in findings if f.status == "fail"]
    if args.output == "json":
        document: dict[str, Any] = {
            "configuration": source,
            "worst": verdict,
            "checks": [f.as_json() for f in findings],
        }
        if waited is not None:
            document |= {"ready": not failing, "waitedSeconds": round(waited)}
        print(json.dumps(document, indent=2))
    else:
        print(f"configuration: {source}, profile {settings.profile.name} ({settings.profile.epc_resource})")
        if waited is not None:
            print(_waited(failing, waited))
        print(render(findings), end="")
    return EXIT_CODES[verdict]


def _waited(failing: list[str], waited: float) -> str:
    if not failing:
        return f"ready after {waited:.0f}s"
    return f"not ready after {waited:.0f}s: {', '.join(failing)} failing"


Outcome = tuple[str, Settings, list["Finding"], float | None]


def _examine(args: argparse.Namespace) -> Outcome:
    from operate.cluster import gather
    from operate.doctor import diagnose

    reader, settings, source = _connect(args)
    return source, settings, diagnose(gather(reader, settings, args.install_namespace)), None


def _examine_until_ready(
    args: argparse.Namespace,
    seconds: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Re-run :func:`_examine` every :data:`POLL_SECONDS` until no check fails or ``seconds`` pass; the
    last round's outcome (or, when the last round could not read the cluster, its error). A configuration
    or credentials that cannot be read fail at once: waiting does not fix them."""
    from operate.cluster import Unreadable

    start = clock()
    deadline = start + seconds
    shown: list[str] | None = None
    while True:
        try:
            source, settings, findings, _ = _examine(args)
            failing = [f.check for f in findings if f.status == "fail"]
            error: Exception | None = None
        except (CredentialsError, MalformedInput):
            raise
        except ConfigError as exc:
            if args.config_file:
                raise
            error, failing = exc, ["configuration"]  # read from the cluster: e.g. not installed yet
        except Unreadable as exc:
            error, failing = exc, ["api-server"]
        now = clock()
        if not failing or now >= deadline:
            if error is not None:
                raise Unreadable(f"not ready after {now - start:.0f}s: {error}")
            return source, settings, findings, now - start
        if failing != shown and args.output == "text":
            print(f"waiting: {', '.join(failing)} failing", file=sys.stderr)
            shown = failing
        sleep(min(POLL_SECONDS, deadline - now))


def _doctor_error(args: argparse.Namespace, exc: Exception) -> int:
    """The doctor could not check at all: one line on stderr, or with ``-o json`` one object on stdout."""
    if args.output == "json":
        print(json.dumps({"error": str(exc), "exitCode": 2}, indent=2))
        return 2
    return _fail(exc)


def _nodes(args: argparse.Namespace) -> int:
    from operate.cluster import Unreadable, ledger_of
    from operate.inspection import MAX_INSPECT_BYTES, read_inspect
    from operate.views import render_nodes, rows_from_ledger

    try:
        reader, settings, _ = _connect(args)
        if args.extender:
            url = args.extender.rstrip("/") + "/inspect"
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read(MAX_INSPECT_BYTES + 1)
            rows, source = read_inspect(body, printable(url)), f"the extender at {args.extender}"
        else:
            rows, source = rows_from_ledger(ledger_of(reader, settings)), "the stored pods (no reservations)"
    except (ConfidentialPodsError, Unreadable, OSError, ValueError, HTTPException) as exc:
        return _fail(exc)  # ValueError: a URL urllib cannot use; HTTPException: an answer that is not HTTP
    if args.output == "json":
        print(json.dumps([{**row.__dict__, "free": row.free} for row in rows], indent=2))
    else:
        print(render_nodes(rows, settings.profile.epc_resource, source), end="")
    return 0


def _why(args: argparse.Namespace) -> int:
    from operate.cluster import Unreadable, ledger_of
    from operate.views import render_why, why

    if args.all_namespaces:
        return _fail(ConfidentialPodsError(ACROSS_NAMESPACES))
    try:
        namespace = args.namespace or default_namespace(args.kubeconfig, args.context)
        reader, settings, _ = _connect(args)
        pod = reader.get(reader.core.read_namespaced_pod, args.pod, namespace)
        if pod is None:
            return _fail(ConfidentialPodsError(f"pod {namespace}/{args.pod} not found"))
        events = list(
            reader.items(
                reader.core.list_namespaced_event,
                namespace,
                field_selector=f"involvedObject.name={args.pod},reason=FailedScheduling",
            )
        )
        answer = why(pod, ledger_of(reader, settings), settings)
    except (ConfidentialPodsError, Unreadable) as exc:
        return _fail(exc)
    print(render_why(answer, events, settings), end="")
    return 0


def plugin_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl confidential-pods",
        description="SGX EPC of the cluster as confidential-pods sees it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_cluster_options(parser, defaults=True, kubectl=True)
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    nodes = subcommands.add_parser("nodes", help="EPC per SGX node: a bar, used, reserved, free, nominated")
    _add_cluster_options(nodes, defaults=False, kubectl=True)
    nodes.add_argument(
        "--extender",
        metavar="URL",
        help="read the extender's /inspect at URL (e.g. after kubectl -n confidential-pods port-forward "
        "deploy/confidential-scheduler 8444): shows its reservations too",
    )
    nodes.add_argument("-o", "--output", choices=("text", "json"), default="text")
    nodes.set_defaults(handler=_nodes)
    why_parser = subcommands.add_parser("why", help="why a pod is pending: the extender's reasons and events")
    why_parser.add_argument("pod", help="pod name")
    _add_cluster_options(why_parser, defaults=False, kubectl=True)
    why_parser.set_defaults(handler=_why)
    _add_doctor(subcommands, defaults=False, kubectl=True)
    return parser


def plugin_main(argv: Sequence[str] | None = None) -> int:
    """``kubectl-confidential_pods``: the kubectl plugin's entry point."""
    from confidential_pods.cli import complete

    parser = plugin_parser()
    complete(parser)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    code: int = handler(args)
    return code
