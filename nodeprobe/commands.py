"""``confidential-pods node-probe``: check this SGX node's attestation path, once or on an interval."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from datetime import timedelta
from typing import Any, Final

from certs.durations import parse_duration
from certs.errors import DurationError
from confidential_pods import kube
from confidential_pods.qcnl import QCNL_PATH
from nodeprobe.checks import AESM_SOCKET, CGROUP_ROOT, DEV_DIR, SKIPPABLE, ProbeConfig, run_checks, verdict
from nodeprobe.condition import READY

#: node-problem-detector's custom plugin exit codes (pkg/custompluginmonitor/types/types.go).
NPD_OK: Final = 0
NPD_NON_OK: Final = 1
NPD_UNKNOWN: Final = 2
NODE_NAME_ENV: Final = "NODE_NAME"


def register(subcommands: argparse._SubParsersAction[Any]) -> None:
    probe = subcommands.add_parser(
        "node-probe",
        help="check this node's SGX attestation path and publish the SGXAttestationReady condition",
        description="Check the SGX device nodes, the AESM socket (aesmd answers GetSupportedAttKeyIDNum), "
        "the QCNL configuration and its PCCS (a v4 collateral GET), and whether the kernel exposes the "
        "sgx_epc misc cgroup. Without --once: every --interval, publish the Node conditions "
        "SGXAttestationReady and SGXEPCCgroupAvailable through nodes/status, writing only on change and "
        "every --heartbeat. With --once: print one line and exit (a node-problem-detector custom plugin).",
        epilog="exit codes with --once: 0 ready, 1 not ready (NPD's OK and NonOK; the message is the one "
        "line on stdout, each check on stderr), 2 unknown or bad arguments. Without --once: runs until "
        "SIGTERM (exit 0); 2 for bad arguments or credentials.",
    )
    probe.add_argument("--node-name", help=f"the Node to publish on (default ${NODE_NAME_ENV})")
    probe.add_argument("--interval", type=_period, default=timedelta(seconds=30),
                       help="time between rounds (default 30s)")  # fmt: skip
    probe.add_argument("--heartbeat", type=_period, default=timedelta(minutes=5),
                       help="rewrite an unchanged condition this often (default 5m)")  # fmt: skip
    probe.add_argument("--once", action="store_true", help="one round, printed, nothing written")
    probe.add_argument("--timeout", type=_duration, default=timedelta(seconds=5),
                       help="bound of each network check: AESM, PCCS (default 5s)")  # fmt: skip
    probe.add_argument(
        "--dev-dir", default=DEV_DIR, help=f"where the SGX device nodes are (default {DEV_DIR})"
    )
    probe.add_argument("--aesm-socket", default=AESM_SOCKET, help=f"aesmd's socket (default {AESM_SOCKET})")
    probe.add_argument("--qcnl-config", default=QCNL_PATH,
                       help=f"the node's QCNL configuration (default {QCNL_PATH})")  # fmt: skip
    probe.add_argument("--pccs-ca", help="CA bundle to verify the PCCS with (default: the system's)")
    probe.add_argument("--cgroup-root", default=CGROUP_ROOT,
                       help=f"the host's cgroup root, for misc.capacity (default {CGROUP_ROOT})")  # fmt: skip
    probe.add_argument(
        "--skip",
        action="append",
        choices=SKIPPABLE,
        default=[],
        help="a check this node does not need (repeatable): aesm where pods bring an aesmd sidecar or quote "
        "in-process, pccs (and the QCNL configuration) where the node's quote library is not used",
    )
    probe.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account)")
    probe.set_defaults(handler=_node_probe)


def _duration(text: str) -> timedelta:
    try:
        value = parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than 0s")
    return value


#: Longest --interval and --heartbeat: the extender counts a condition not renewed for 15 minutes
#: (extender/readiness.py STALE_AFTER_SECONDS) as unknown, so a healthy node must be rewritten well within it.
MAX_PERIOD = timedelta(minutes=5)


def _period(text: str) -> timedelta:
    value = _duration(text)
    if value > MAX_PERIOD:
        raise argparse.ArgumentTypeError(
            f"{text!r} is longer than 5m: the extender counts a condition not renewed for 15m as unknown"
        )
    return value


def _config(args: argparse.Namespace) -> ProbeConfig:
    return ProbeConfig(
        dev_dir=args.dev_dir,
        aesm_socket=args.aesm_socket,
        qcnl_config=args.qcnl_config,
        cgroup_root=args.cgroup_root,
        timeout=args.timeout.total_seconds(),
        pccs_ca=args.pccs_ca,
        skip=frozenset(args.skip),
    )


def _node_probe(args: argparse.Namespace) -> int:
    if args.once:
        return once(_config(args))
    node = args.node_name or os.environ.get(NODE_NAME_ENV)
    if not node:
        print(f"confidential-pods: node-probe: --node-name or ${NODE_NAME_ENV} is required", file=sys.stderr)
        return 2
    return _loop(args, node)


def once(config: ProbeConfig) -> int:
    """One round: the verdict as NPD reads it (one stdout line, exit 0/1/2), each check on stderr."""
    try:
        results = run_checks(config)
    except Exception as exc:  # a bug here must still answer NPD: Unknown, with what happened
        print(f"ProbeFailed: {type(exc).__name__}: {exc}")
        return NPD_UNKNOWN
    for result in results:
        print(f"{'ok ' if result.ok else 'NOT'} {result.name:<9} {result.reason}: {result.message}",
              file=sys.stderr)  # fmt: skip
    found = verdict(results)
    print(f"{found.reason}: {found.message}")
    return {"True": NPD_OK, "False": NPD_NON_OK}.get(found.status, NPD_UNKNOWN)


def _loop(args: argparse.Namespace, node: str) -> int:
    from nodeprobe.publishing import ApiNodeStatus, Publisher, run, verdicts

    try:
        api = kube.api_client(args.kubeconfig, retries=0)  # the next round is the retry
    except kube.CredentialsError as exc:
        print(f"confidential-pods: node-probe: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    config = _config(args)
    publisher = Publisher(ApiNodeStatus(api, node), heartbeat=args.heartbeat)
    run(lambda: verdicts(config), publisher, args.interval, stop)
    return 0


__all__ = ["READY", "once", "register"]
