"""``confidential-pods extender serve`` and ``confidential-pods simulate``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from confidential_pods.cli import add_config_option, add_serving_options, component, serving_options
from confidential_pods.settings import SCORING_STRATEGIES, Settings
from extender.modes import MODES


def register(subcommands: argparse._SubParsersAction[Any]) -> None:
    extender_sub = component(subcommands, "extender", "the kube-scheduler extender (places pods by free EPC)")
    serve = extender_sub.add_parser(
        "serve",
        help="serve /filter, /prioritize and /bind for kube-scheduler (gunicorn, one worker)",
        description="Serve the extender. The ledger comes from --snapshot, else --kubeconfig, "
        "else the in-cluster service account.",
    )
    source = serve.add_mutually_exclusive_group()
    source.add_argument("--snapshot", help="Nodes and Pods (v1 List or multi-doc YAML/JSON); no API server")
    source.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account)")
    add_serving_options(serve, port=8444, threads=8, workers=None, tls_required=False, verbs="verbs")
    serve.add_argument(
        "--metrics-port",
        type=int,
        help="also serve /metrics alone on this port (on --metrics-host): for Prometheus, while the verbs "
        "stay on --host (default: no separate listener)",
    )
    serve.add_argument(
        "--metrics-host", default="0.0.0.0", help="address of the --metrics-port listener (default 0.0.0.0)"
    )
    serve.add_argument(
        "--max-body",
        type=int,
        default=None,
        help="largest request body in bytes, chunked or not (default 128 MiB: 5,000 whole Nodes fit)",
    )
    serve.add_argument(
        "--scheduler-config",
        help="kube-scheduler's configuration file (as the scheduler's pod mounts it), read once for the "
        "scheduling mode: in native mode /filter leaves EPC to kube-scheduler's NodeResourcesFit; without "
        'it, or when the file contradicts its mode, /filter counts EPC itself (docs/extender.md "Modes")',
    )
    serve.set_defaults(handler=_serve)

    simulate = subcommands.add_parser(
        "simulate",
        help="place pending pods on a snapshot as the webhook, kube-scheduler and the extender would",
        description="Place pending pods and workloads from files, in file order, as they would be "
        "placed: the webhook's mutation first (with --config, as inject), then kube-scheduler's own "
        "filters (cordons, taints and tolerations, nodeSelector, required node affinity), then the "
        "extender's filter, then the scheduling mode's score and bind: native (the default) scores as "
        "kube-scheduler's NodeResourcesFit scores EPC (0-100; cpu and memory not modelled) and binds as "
        "kube-scheduler does, ledger uses the extender's prioritize (0-10) and bind. The report's first "
        "line says which. Pods with spec.nodeName hold EPC; Deployments, "
        "StatefulSets, ReplicaSets, Jobs and CronJobs become their pods, a DaemonSet one pod per eligible "
        "node; Namespaces count as the webhook counts them. What kube-scheduler checks besides is named "
        "in the report. With no files, a built-in example cluster is used.",
        epilog="exit codes: 0 report printed (unschedulable and refused pods included); 2 an option's value "
        "is unknown (one line after the usage), a file could not "
        "be read or parsed (not UTF-8, not YAML/JSON, excessive YAML aliasing, nesting deeper than 100 "
        "levels, objects that are not Nodes, Pods, Namespaces or workloads) or the configuration is unusable "
        "or incomplete (one line per key to set)",
    )
    simulate.add_argument("--nodes", help="file with Nodes (and possibly Pods): v1 List or multi-doc YAML")
    simulate.add_argument("--pods", help="file with Pods, workloads, Namespaces (and possibly Nodes)")
    add_config_option(simulate, complete=True)
    simulate.add_argument(
        "--strategy",
        choices=SCORING_STRATEGIES,
        help="override scoringStrategy (native mode: as NodeResourcesFit's scoringStrategy type)",
    )
    simulate.add_argument(
        "--mode",
        choices=MODES,
        default="native",
        help="who scores and binds: native, kube-scheduler (NodeResourcesFit, 0-100; the shipped default), "
        "or ledger, the extender (prioritize 0-10, bind); default native",
    )
    simulate.set_defaults(handler=_simulate)


def _serve(args: argparse.Namespace) -> int:
    from extender import serving

    return serving.serve(
        args.settings,
        **serving_options(args),
        snapshot=args.snapshot,
        kubeconfig=args.kubeconfig,
        max_body=args.max_body,
        metrics_address=(args.metrics_host, args.metrics_port) if args.metrics_port else None,
        scheduler_config=args.scheduler_config,
    )


def _simulate(args: argparse.Namespace) -> int:
    from extender.simulate import example_facts, render, simulate
    from extender.snapshot import SnapshotError, SnapshotFacts, load_snapshot_facts

    settings: Settings = args.settings
    try:
        if args.nodes is None and args.pods is None:
            facts = example_facts(settings)
            print("Built-in example cluster (pass --nodes/--pods for your own)\n")
        else:
            facts = SnapshotFacts()
            for path in (args.nodes, args.pods):
                if path is not None:
                    facts = facts + load_snapshot_facts(path, settings.profile, keep_pending=True)
    except SnapshotError as exc:
        print(f"confidential-pods simulate: {exc}", file=sys.stderr)
        return 2
    result = simulate(facts, settings, args.strategy, args.mode)
    sys.stdout.write(render(result))
    return 0
