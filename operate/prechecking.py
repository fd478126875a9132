"""``confidential-pods precheck``: before anything is applied, what is left to set, and what in the cluster
would refuse the build.

Offline (:mod:`operate.precheck`): the configuration (``--config``) and the built manifests (``-f``) —
placeholders, keys other keys need, placeholder images. Then, unless ``--offline``, the cluster of the
kubeconfig's context, read-only (:func:`operate.cluster.gather_precheck`, judged by
:mod:`operate.clusterprecheck`): its SGX nodes' EPC resource, the Pod Security levels of opted-in
namespaces, its version against the build's kube-scheduler. One output, text or ``-o json`` (as the doctor's);
exit 0 nothing to do, 1 a warning, 2 something to set (or nothing could be checked).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from typing import Any

from confidential_pods.documents import load_document, load_documents, printable, read_text
from confidential_pods.errors import ConfidentialPodsError, MalformedInput
from confidential_pods.kube import CredentialsError, api_client
from confidential_pods.settings import Settings
from operate.commands import add_credentials, add_json_output
from operate.facts import EXIT_CODES, Finding, Status, render, worst
from operate.precheck import ToSet, built_configuration, check_config, check_objects, settings_of


@dataclass(frozen=True)
class Cluster:
    """What the cluster side found: where it read, the API server's version, the configuration it judged
    with, one finding per check."""

    host: str
    version: str
    configuration: str
    settings: Settings
    findings: list[Finding]


def register(subcommands: argparse._SubParsersAction[Any]) -> None:
    precheck = subcommands.add_parser(
        "precheck",
        help="before applying: what the configuration and the build leave to set, and what in the cluster "
        "would refuse them",
        description="Check, before anything is applied, what must be set: placeholders such as <region> in "
        "the configuration, keys its other keys need (aesmSidecarImage for a sandbox runtimeClass, "
        "dcap.pccsUrl for quote: in-process), placeholder images (*.invalid/...) in the build; then, "
        "read-only from the cluster of the kubeconfig's context: which EPC resource its SGX nodes advertise "
        "against the configured profile, opted-in namespaces whose Pod Security level refuses host-mode "
        "pods, and its version against the build's kube-scheduler image (version skew policy). "
        "E.g. kustomize build manifests/overlays/alibaba | confidential-pods precheck -f -",
        epilog="exit codes: 0 nothing to do; 1 a warning; 2 something to set, or the files or the cluster "
        "could not be read",
    )
    precheck.add_argument(
        "--config", dest="config_file", metavar="FILE", help="configuration file (config.yaml) to check"
    )
    precheck.add_argument(
        "-f",
        "--filename",
        metavar="FILE",
        help="built manifests to check (kustomize build or helm template output; - for stdin): their "
        "configuration ConfigMap, every image, the kube-scheduler's version",
    )
    add_credentials(precheck)
    precheck.add_argument(
        "--offline", action="store_true", help="check the files alone, without reading any cluster"
    )
    add_json_output(precheck)
    precheck.set_defaults(handler=_precheck)


def _precheck(args: argparse.Namespace) -> int:
    from operate.cluster import Unreadable

    if not args.config_file and not args.filename:
        return _error(args, "confidential-pods precheck: give --config FILE, -f FILE, or both")
    try:
        to_set, objects, configuration = _offline(args)
        cluster = None if args.offline else _cluster(args, objects, configuration)
    except CredentialsError as exc:
        return _error(args, f"confidential-pods: {exc} (--offline checks the files without a cluster)")
    except (ConfidentialPodsError, Unreadable) as exc:
        return _error(args, f"confidential-pods: {exc}")
    findings = cluster.findings if cluster else []
    verdict: Status = "fail" if to_set else worst(findings)
    if args.output == "json":
        print(json.dumps(_document(to_set, cluster, verdict), indent=2))
    else:
        if cluster is not None:
            profile = cluster.settings.profile
            print(
                printable(
                    f"cluster: {cluster.host} (Kubernetes {cluster.version or 'unknown'}); configuration: "
                    f"{cluster.configuration}, profile {profile.name} ({profile.epc_resource})"
                )
            )
        for item in to_set:
            print(printable(str(item)))
        if not to_set:
            print("ok: nothing left to set")
        for line in render(findings).splitlines() if findings else ():
            print(printable(line))
    return EXIT_CODES[verdict]


def _offline(args: argparse.Namespace) -> tuple[list[ToSet], list[object], tuple[str, object] | None]:
    """What the files leave to set, the built objects, and the configuration the cluster is judged with
    (``--config``, else the build's ConfigMap)."""
    found: list[ToSet] = []
    objects: list[object] = []
    configuration: tuple[str, object] | None = None
    if args.config_file:
        data = load_document(read_text(args.config_file, "configuration file"), args.config_file) or {}
        found += check_config(data, args.config_file)
        configuration = (args.config_file, data)
    if args.filename:
        objects = [o for o in load_documents(read_text(args.filename, "manifests"), args.filename) if o]
        if not objects:  # a build that failed into the pipe: nothing checked is not "nothing to set"
            name = "stdin" if args.filename == "-" else args.filename
            raise MalformedInput(f"{name} holds no manifests: did the build (kustomize, helm template) fail?")
        found += check_objects(objects)
        configuration = configuration or built_configuration(objects)
    return found, objects, configuration


def _cluster(
    args: argparse.Namespace, objects: list[object], configuration: tuple[str, object] | None
) -> Cluster:
    from operate.cluster import Reader, gather_precheck
    from operate.clusterprecheck import PrecheckFacts, check_cluster, scheduler_image, with_built_namespaces

    source = configuration[0] if configuration else "the defaults (the build has no configuration ConfigMap)"
    settings = settings_of(configuration[1]) if configuration else Settings()
    reader = Reader(api_client(args.kubeconfig, args.context, retries=0))
    facts, version = gather_precheck(reader, settings or Settings())
    facts = replace(facts, namespaces=with_built_namespaces(facts.namespaces, objects))
    judged = PrecheckFacts(
        cluster=facts,
        configured=settings is not None,
        server_version=version,
        scheduler_image=scheduler_image(objects),
        built=bool(args.filename),
    )
    return Cluster(reader.host, version, source, settings or Settings(), check_cluster(judged))


def _document(to_set: list[ToSet], cluster: Cluster | None, verdict: Status) -> dict[str, Any]:
    document: dict[str, Any] = {
        "worst": verdict,
        "toSet": [{"what": t.what, "where": t.where, "message": t.message} for t in to_set],
        "checks": [f.as_json() for f in cluster.findings] if cluster else [],
    }
    if cluster is not None:
        profile = cluster.settings.profile
        document = {
            "cluster": cluster.host,
            "serverVersion": cluster.version,
            "configuration": cluster.configuration,
            "profile": profile.name,
            "epcResource": profile.epc_resource,
        } | document
    return document


def _error(args: argparse.Namespace, message: str) -> int:
    """Nothing could be checked: one line on stderr, or with ``-o json`` one object on stdout."""
    if args.output == "json":
        print(json.dumps({"error": message.removeprefix("confidential-pods: "), "exitCode": 2}, indent=2))
    else:
        print(printable(message), file=sys.stderr)
    return 2
