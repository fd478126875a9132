"""``confidential-pods webhook serve`` and ``confidential-pods inject``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, get_args

from confidential_pods.cli import add_config_option, add_serving_options, component, serving_options
from confidential_pods.settings import Settings
from webhook.plan import PodSecurityLevel


def register(subcommands: argparse._SubParsersAction[Any]) -> None:
    webhook_sub = component(subcommands, "webhook", "the mutating admission webhook")
    serve = webhook_sub.add_parser("serve", help="serve AdmissionReviews over TLS (gunicorn)")
    add_serving_options(serve, port=8443, threads=4, workers=2, tls_required=True, verbs="reviews")
    serve.add_argument(
        "--kubeconfig",
        help="credentials to read namespaces' Pod Security levels (default: the in-cluster ServiceAccount, "
        "when there is one; otherwise levels are not read)",
    )
    serve.add_argument(
        "--no-namespace-lookup",
        action="store_true",
        help="never read namespaces (host-mode pods in baseline/restricted namespaces are then refused by "
        "Pod Security admission itself, with its own message)",
    )
    serve.set_defaults(handler=_serve)

    inject = subcommands.add_parser(
        "inject",
        help="mutate Pods and workload pod templates in YAML offline, as the webhook would",
        description="Mutate every Pod and workload pod template in a YAML or JSON file as the webhook "
        "would at admission; other kinds pass through unchanged. Namespaces in the input are read as the "
        "webhook reads them: confidential-pods.io/injection=enabled opts their pods in, disabled leaves them "
        "alone, pod-security.kubernetes.io/enforce is the level host-mode pods are judged by.",
        epilog="exit codes: 0 written; 1 an object was refused (its name and the reason on stderr, "
        "nothing written); 2 the input could not be read or parsed (not UTF-8, not YAML/JSON, excessive YAML "
        "aliasing, nested deeper than 100 levels) or the configuration is unusable or incomplete (one line "
        "per key to set)",
    )
    inject.add_argument("-f", "--filename", required=True, help="multi-document YAML file, or - for stdin")
    inject.add_argument("-o", "--output", help="write the result here instead of stdout")
    add_config_option(inject, complete=True)
    inject.add_argument(
        "--namespace-opted-in",
        action="store_true",
        help="treat objects as if their namespace were labelled confidential-pods.io/injection=enabled "
        "(a Namespace in the input speaks for its own objects: enabled, or disabled to leave them alone)",
    )
    inject.add_argument(
        "--pod-security",
        choices=get_args(PodSecurityLevel),
        help="the Pod Security level (pod-security.kubernetes.io/enforce) the objects' namespace enforces, "
        "as the webhook reads it: a host-mode pod is refused under baseline or restricted (a Namespace in "
        "the input speaks for its own objects; unsaid, the level is unknown and not judged)",
    )
    inject.set_defaults(handler=_inject)

    qcnl = subcommands.add_parser(
        "qcnl",
        help="write the quote library's sgx_default_qcnl.conf from the dcap configuration key",
        description="Render the dcap key of the configuration as the JSON sgx_default_qcnl.conf that the "
        "webhook gives quoting containers (the aesmd DaemonSet's init container runs this).",
        epilog="exit codes: 0 written; 2 dcap.pccsUrl is not set, or the configuration is unusable",
    )
    add_config_option(qcnl)
    qcnl.add_argument("-o", "--output", help="write here instead of stdout")
    qcnl.set_defaults(handler=_qcnl)


def _serve(args: argparse.Namespace) -> int:
    from webhook import serving

    return serving.serve(
        args.settings,
        **serving_options(args),
        kubeconfig=args.kubeconfig,
        namespace_lookup=not args.no_namespace_lookup,
    )


def _inject(args: argparse.Namespace) -> int:
    from webhook import offline

    return offline.run(
        args.settings,
        source=args.filename,
        output=args.output,
        namespace_opted_in=args.namespace_opted_in,
        namespace_level=args.pod_security,
    )


def _qcnl(args: argparse.Namespace) -> int:
    from confidential_pods import qcnl

    settings: Settings = args.settings
    if not settings.dcap.configured:
        print("confidential-pods qcnl: dcap.pccsUrl is not set in the configuration", file=sys.stderr)
        return 2
    text = qcnl.render(settings.dcap) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
