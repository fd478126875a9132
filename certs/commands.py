"""``confidential-pods certs generate | install | rotate`` (registered into the main parser)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certs.authority import DEFAULT_CA_DAYS, DEFAULT_SERVING_DAYS, service_names
from certs.durations import parse_duration
from certs.errors import CertsError
from certs.planning import Lifetimes
from confidential_pods.cli import component

if TYPE_CHECKING:
    from certs.operations import Target


def register(subcommands: argparse._SubParsersAction[Any]) -> None:
    certs_sub = component(subcommands, "certs", "CA and serving certificates for the webhook")

    generate = certs_sub.add_parser(
        "generate",
        help="create (or keep, when still valid) a CA and a serving certificate in a directory",
        description="Write ca.crt, ca.key, tls.crt, tls.key into --out. Valid files are kept (idempotent); "
        "a serving certificate that is not valid is reissued from the existing CA.",
    )
    generate.add_argument("--service", required=True, help="name of the webhook's Service")
    generate.add_argument("--namespace", required=True, help="namespace of the webhook's Service")
    generate.add_argument("--out", required=True, type=Path, help="directory for the files")
    _add_names(generate)
    _add_lifetimes(generate)
    generate.add_argument("--force", action="store_true", help="issue a new CA and serving certificate")
    generate.set_defaults(handler=_generate)

    install = certs_sub.add_parser(
        "install",
        help="store the certificates in a Secret and the CA bundle in the MutatingWebhookConfiguration",
    )
    _add_cluster(install)
    install.add_argument("--dir", type=Path, default=Path("."), help="directory written by `certs generate`")
    install.add_argument(
        "--no-ca-secret", action="store_true", help="do not store the CA key (ca.key) in the cluster"
    )
    install.add_argument(
        "--force",
        action="store_true",
        help="install even if the new bundle does not trust the certificate the webhook serves now",
    )
    install.set_defaults(handler=_install)

    rotate = certs_sub.add_parser(
        "rotate",
        help="renew certificates that expire soon, CA included, without a window of distrust",
        description="Works on a directory (--dir) or on the Secrets and webhook configuration in the cluster "
        "(--secret/--webhook-config: what the CronJob runs). A new CA is first added to the bundle; the "
        "serving certificate moves to it on a later run, once the bundle carrying it is published.",
    )
    where = rotate.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", type=Path, help="rotate the files in this directory")
    _add_cluster(rotate, group=where)
    rotate.add_argument(
        "--service",
        help="webhook Service: issue for its names (default: the current SANs); needed on a first "
        "in-cluster run, which creates the CA and everything else",
    )
    _add_names(rotate)
    _add_lifetimes(rotate)
    rotate.add_argument("--force", action="store_true", help="reissue the serving certificate now")
    rotate.add_argument(
        "--rotate-ca", action="store_true", help="start a CA rotation even though the CA is not expiring"
    )
    rotate.set_defaults(handler=_rotate)


def _add_names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="NAME",
        help="extra subject alternative name (DNS name or IP address); repeatable",
    )


def _add_lifetimes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ca-days", type=int, default=DEFAULT_CA_DAYS, help="CA lifetime (default 3650)")
    parser.add_argument(
        "--days", type=int, default=DEFAULT_SERVING_DAYS, help="serving lifetime (default 365)"
    )
    parser.add_argument(
        "--renew-before",
        default="30d",
        help="renew what expires within this duration: 30d, 12h, 90m (default 30d)",
    )


def _add_cluster(
    parser: argparse.ArgumentParser, group: argparse._MutuallyExclusiveGroup | None = None
) -> None:
    (group or parser).add_argument(
        "--secret", required=group is None, help="kubernetes.io/tls Secret mounted by the webhook"
    )
    parser.add_argument(
        "--webhook-config", required=group is None, help="name of the MutatingWebhookConfiguration"
    )
    parser.add_argument(
        "--ca-secret",
        help="Opaque Secret for the CA key (default: <secret>-ca); only the certs Job reads it",
    )
    parser.add_argument(
        "--namespace",
        help="namespace of the Secrets and the Service (default: in-cluster namespace, else "
        "confidential-pods)",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")


def _now() -> datetime:
    return datetime.now(UTC)


def _lifetimes(args: argparse.Namespace) -> Lifetimes:
    return Lifetimes(
        ca_days=args.ca_days, serving_days=args.days, renew_before=parse_duration(args.renew_before)
    )


def _report(notes: tuple[str, ...], written: tuple[str, ...]) -> None:
    for line in (*notes, *written):
        print(line)
    if not written:
        print("nothing written")


def _fail(exc: CertsError) -> int:
    print(f"confidential-pods certs: error: {exc}", file=sys.stderr)
    return 1


def _generate(args: argparse.Namespace) -> int:
    from certs.operations import generate

    try:
        names = service_names(args.service, args.namespace, args.san)
        outcome = generate(args.out, names, now=_now(), lifetimes=_lifetimes(args), force=args.force)
    except CertsError as exc:
        return _fail(exc)
    _report(outcome.notes, tuple(f"wrote {args.out / name}" for name in outcome.written))
    return 0


def _target(args: argparse.Namespace) -> Target:
    from certs.cluster import default_namespace
    from certs.operations import Target

    if not args.webhook_config:
        raise CertsError("--webhook-config is required with --secret")
    ca_secret = None if getattr(args, "no_ca_secret", False) else (args.ca_secret or f"{args.secret}-ca")
    return Target(
        namespace=args.namespace or default_namespace(),
        secret=args.secret,
        webhook_configuration=args.webhook_config,
        ca_secret=ca_secret,
    )


def _install(args: argparse.Namespace) -> int:
    from certs.cluster import Cluster, connect
    from certs.operations import install

    try:
        target = _target(args)
        with connect(args.kubeconfig) as api:
            outcome = install(Cluster(api), target, args.dir, now=_now(), force=args.force)
    except CertsError as exc:
        return _fail(exc)
    _report(outcome.notes, outcome.written)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from certs.operations import rotate_cluster, rotate_directory

    try:
        lifetimes = _lifetimes(args)
        names: tuple[str, ...] = ()
        cluster_options = [
            option
            for option, value in (
                ("--webhook-config", args.webhook_config),
                ("--ca-secret", args.ca_secret),
                ("--kubeconfig", args.kubeconfig),
            )
            if value
        ]
        if args.dir is not None and cluster_options:
            raise CertsError(f"{', '.join(cluster_options)}: only with --secret (in-cluster), not with --dir")
        if args.san and not args.service:
            raise CertsError("--san needs --service (the full list of names to issue for)")
        if args.service:
            if not args.namespace and args.dir is not None:
                raise CertsError("--service needs --namespace")
            names = service_names(args.service, args.namespace or _target(args).namespace, args.san)
        if args.dir is not None:
            outcome = rotate_directory(
                args.dir,
                now=_now(),
                lifetimes=lifetimes,
                names=names,
                force=args.force,
                rotate_ca=args.rotate_ca,
            )
            written = tuple(f"wrote {args.dir / name}" for name in outcome.written)
        else:
            from certs.cluster import Cluster, connect

            target = _target(args)
            with connect(args.kubeconfig) as api:
                outcome = rotate_cluster(
                    Cluster(api),
                    target,
                    now=_now(),
                    lifetimes=lifetimes,
                    names=names,
                    force=args.force,
                    rotate_ca=args.rotate_ca,
                )
            written = outcome.written
    except CertsError as exc:
        return _fail(exc)
    _report(outcome.notes, written)
    return 0
