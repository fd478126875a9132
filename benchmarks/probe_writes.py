"""What the node probe costs the apiserver: its requests for one Node over a steady hour, counted by the
apiserver itself, and what that makes at 5,000 nodes.

On the e2e control plane (tests/e2e/build.sh), one Node as a kubelet registers it and the real
``confidential-pods node-probe`` process publishing on it as a ServiceAccount holding only ``get`` on nodes
and ``patch`` on nodes/status (the chart's grant). The node's parts are the probe's stand-ins
(tests/nodeprobe/standins.py): SGX device nodes made with mknod (root; without it ``--skip=devices``), an
aesmd on a unix socket, a PCCS over HTTPS with a test CA; the misc cgroup root is an empty directory, so
SGXEPCCgroupAvailable is False throughout. Every check runs, every round.

Phases, each measured from the apiserver's ``/metrics`` (``apiserver_request_total`` and
``apiserver_request_body_size_bytes`` of resource ``nodes``) at its start and end: **start** (probe started →
the first True seen), **steady** (the first half of ``--duration``), **flip** (the aesmd stand-in stopped →
False seen → started again → True seen), **steady** again (the second half). The benchmark's own reads of the
Node (to see the flips) are counted and taken off the GETs; the apiserver's own WATCHes of nodes (its
informers re-opening theirs) are shown but are not the probe's, whose grant has no ``watch``.
``--no-flip`` runs one steady phase.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from certs.durations import parse_duration
from tests.commands import cli
from tests.e2e.harness import Binaries, ControlPlane
from tests.e2e.kube import Kube, create_namespace, create_node
from tests.e2e.processes import Process, wait_until
from tests.e2e.product import Samples, metric_samples, sum_matching
from tests.machine import load_average, memory_kib, tree_cpu_seconds
from tests.nodeprobe.standins import aesmd, answer_keys, make_pki, pccs

NODE = "sgx-node-0"
NAMESPACE = "probe-bench"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
READY = "SGXAttestationReady"
#: The scale the issue asks about (issue 22: "so 5,000 nodes do not load the apiserver").
CLUSTER_NODES = 5_000


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    #: The probe's requests on nodes by "verb subresource" (the benchmark's own GETs taken off).
    requests: dict[str, float] = field(default_factory=dict)
    #: Bytes of the probe's PATCH bodies (apiserver_request_body_size_bytes of nodes, patch).
    patch_body_bytes: float = 0.0
    probe_cpu_s: float = 0.0
    loadavg_start: str = ""
    loadavg_end: str = ""


class Counted:
    """The apiserver's counters for nodes, read at the start and end of each phase."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.probe: Process | None = None  # started inside the first phase, so its first requests count
        self.own_gets = 0  # the benchmark's reads of the Node, not the probe's

    def node_condition(self) -> dict[str, Any] | None:
        self.own_gets += 1
        conditions = self.kube.get(f"/api/v1/nodes/{NODE}").get("status", {}).get("conditions") or []
        return next((c for c in conditions if c.get("type") == READY), None)

    def wait_status(self, status: str, timeout: float) -> None:
        def reached() -> bool:
            condition = self.node_condition()
            return condition is not None and condition["status"] == status

        alive = self.probe.check_alive if self.probe is not None else None
        wait_until(reached, timeout=timeout, what=f"{READY} {status}", interval=0.5, alive=alive)

    @contextlib.contextmanager
    def phase(self, name: str, phases: list[Phase]) -> Iterator[None]:
        phase = Phase(name, loadavg_start=load_average())
        before, gets, cpu, started = self._samples(), self.own_gets, self._cpu(), time.monotonic()
        yield
        phase.seconds = time.monotonic() - started
        after, own = self._samples(), self.own_gets - gets
        phase.probe_cpu_s = self._cpu() - cpu
        phase.loadavg_end = load_average()
        for key in sorted({k for k in after if k[0] == "apiserver_request_total"}):
            labels = dict(key[1])
            if labels.get("resource") != "nodes":
                continue
            count = after[key] - before.get(key, 0.0)
            name_ = f"{labels.get('verb')} {labels.get('subresource') or 'node'}"
            if labels.get("code", "200")[0] != "2":
                name_ += f" {labels['code']}"
            if count:
                phase.requests[name_] = phase.requests.get(name_, 0.0) + count
        if own:
            phase.requests["GET node"] = phase.requests.get("GET node", 0.0) - own
            if not phase.requests["GET node"]:
                del phase.requests["GET node"]
        body = "apiserver_request_body_size_bytes_sum"
        phase.patch_body_bytes = sum_matching(after, body, resource="nodes", verb="patch") - sum_matching(
            before, body, resource="nodes", verb="patch"
        )
        phases.append(phase)

    def _samples(self) -> Samples:
        return metric_samples(self.kube.get_text("/metrics"))

    def _cpu(self) -> float:
        return tree_cpu_seconds(self.probe.popen.pid) if self.probe is not None else 0.0


def grant_probe(kube: Kube, plane: ControlPlane) -> Path:
    """A ServiceAccount with exactly the probe's grant; its kubeconfig."""
    create_namespace(kube, NAMESPACE)
    kube.create(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts", {"metadata": {"name": "node-probe"}})
    rules = [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
    ]
    kube.create(f"{RBAC}/clusterroles", {"metadata": {"name": "node-probe"}, "rules": rules})
    binding = {
        "metadata": {"name": "node-probe"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-probe"},
        "subjects": [{"kind": "ServiceAccount", "name": "node-probe", "namespace": NAMESPACE}],
    }
    kube.create(f"{RBAC}/clusterrolebindings", binding)
    return plane.api.service_account_kubeconfig(NAMESPACE, "node-probe", expiration_seconds=6 * 3600)


def device_args(workdir: Path) -> list[str]:
    """``--dev-dir`` of mknod'ed SGX device nodes, or ``--skip=devices`` where mknod is not allowed."""
    dev = workdir / "dev"
    dev.mkdir()
    try:
        for device in ("sgx_enclave", "sgx_provision"):
            os.mknod(dev / device, 0o600 | stat.S_IFCHR, os.makedev(10, 125))
    except PermissionError:
        return ["--skip", "devices"]
    return ["--dev-dir", str(dev)]


def measure(args: argparse.Namespace, workdir: Path, log_dir: Path) -> dict[str, Any]:
    phases: list[Phase] = []
    half = args.duration.total_seconds() / (1 if args.no_flip else 2)
    settle = 3 * args.interval.total_seconds() + 30  # a flip shows within one round; the apiserver's answer
    with ControlPlane.run(Binaries.locate(), workdir / "plane", log_dir) as plane:
        kube = plane.api.admin_client()
        create_node(kube, NODE, {"sgx.intel.com/epc": "96Mi"})
        kubeconfig = grant_probe(kube, plane)
        pki = make_pki(workdir)
        socket_path = workdir / "aesm.socket"
        devices = device_args(workdir)
        with pccs(pki) as server, contextlib.ExitStack() as aesm:
            aesm.enter_context(aesmd(socket_path, answer_keys(1)))
            qcnl = workdir / "sgx_default_qcnl.conf"
            qcnl.write_text(json.dumps({"pccs_url": server.url(), "use_secure_cert": True}))
            command = cli(
                "node-probe", "--node-name", NODE, "--kubeconfig", str(kubeconfig),
                "--interval", args.interval_text, "--heartbeat", args.heartbeat_text, *devices,
                "--aesm-socket", str(socket_path), "--qcnl-config", str(qcnl), "--pccs-ca", str(pki.ca),
                "--cgroup-root", str(workdir / "no-cgroup"),
            )  # fmt: skip
            counted = Counted(kube)
            with counted.phase("start", phases):
                probe = counted.probe = Process.start("node-probe", command, log_dir)
                counted.wait_status("True", settle)
            try:
                with counted.phase("steady", phases):
                    _wait(half, probe)
                if not args.no_flip:
                    with counted.phase("flip", phases):
                        aesm.close()  # aesmd gone: the socket refuses
                        counted.wait_status("False", settle)
                        aesm.enter_context(aesmd(socket_path, answer_keys(1)))
                        counted.wait_status("True", settle)
                    with counted.phase("steady", phases):
                        _wait(half, probe)
                probe.check_alive()
                node_bytes = len(kube.get_text(f"/api/v1/nodes/{NODE}").encode())
                rss_kib = memory_kib(probe.popen.pid).get("VmRSS", 0)
            finally:
                probe.stop()
    return summary(args, phases, node_bytes, rss_kib, devices)


def _wait(seconds: float, probe: Process) -> None:
    """Sleep ``seconds`` (the benchmark's steady state is time passing), checking the probe is alive."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        probe.check_alive()
        time.sleep(min(left, 5.0))


def summary(
    args: argparse.Namespace, phases: list[Phase], node_bytes: int, rss_kib: int, devices: list[str]
) -> dict[str, Any]:
    steady = [p for p in phases if p.name == "steady"]
    seconds = sum(p.seconds for p in steady)
    writes = sum(p.requests.get("PATCH status", 0.0) for p in steady)
    # WATCH and LIST of nodes are the apiserver's own informers: the probe's grant has neither verb
    other = sum(
        v for p in steady for k, v in p.requests.items() if k.split()[0] not in ("PATCH", "WATCH", "LIST")
    )
    body = sum(p.patch_body_bytes for p in steady)
    per_node_s = writes / seconds if seconds else 0.0
    body_per_write = body / writes if writes else 0.0
    at_scale = per_node_s * CLUSTER_NODES
    return {
        "interval": args.interval_text,
        "heartbeat": args.heartbeat_text,
        "devices": "skipped" if "--skip" in devices else "mknod",
        "phases": [asdict(p) for p in phases],
        "steady_seconds": seconds,
        "steady_patches": writes,
        "steady_other_requests": other,  # of the probe: its reads, refused requests
        "patch_body_bytes_mean": body_per_write,
        "node_object_bytes": node_bytes,
        "probe_rss_kib": rss_kib,
        "probe_cpu_s_per_hour": sum(p.probe_cpu_s for p in steady) / seconds * 3600 if seconds else 0.0,
        "per_node_writes_per_hour": per_node_s * 3600,
        "at_5000_nodes": {
            "writes_per_s": at_scale,
            "request_bytes_per_s": at_scale * body_per_write,
            # the apiserver answers each patch with the whole Node: the response is the object's size
            "response_bytes_per_s": at_scale * node_bytes,
        },
    }


def report(result: dict[str, Any], say: Callable[[str], None]) -> None:
    say(f"node-probe --interval {result['interval']} --heartbeat {result['heartbeat']}, "
        f"devices {result['devices']}")  # fmt: skip
    for phase in result["phases"]:
        requests = ", ".join(f"{k} {v:.0f}" for k, v in phase["requests"].items()) or "none"
        say(f"  {phase['name']:<6} {phase['seconds']:8.1f} s  requests: {requests}; PATCH bodies "
            f"{phase['patch_body_bytes']:.0f} B; probe CPU {phase['probe_cpu_s']:.2f} s; "
            f"load {phase['loadavg_start']} -> {phase['loadavg_end']}")  # fmt: skip
    scale = result["at_5000_nodes"]
    say(f"steady: {result['steady_patches']:.0f} PATCH nodes/status in {result['steady_seconds']:.0f} s "
        f"({result['per_node_writes_per_hour']:.1f} per node-hour), {result['steady_other_requests']:.0f} "
        f"other requests; PATCH body {result['patch_body_bytes_mean']:.0f} B, Node answered "
        f"{result['node_object_bytes']} B; probe RSS {result['probe_rss_kib'] / 1024:.0f} MiB, CPU "
        f"{result['probe_cpu_s_per_hour']:.1f} s per hour")  # fmt: skip
    say(f"at {CLUSTER_NODES:,} nodes: {scale['writes_per_s']:.2f} writes/s, "
        f"{scale['request_bytes_per_s'] / 1024:.1f} KiB/s of patch bodies in, "
        f"{scale['response_bytes_per_s'] / 1024:.1f} KiB/s of answers out (a Node of this size)")  # fmt: skip


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=_duration, default=timedelta(minutes=60),
                        help="steady state measured, split around the flip (default 60m)")  # fmt: skip
    parser.add_argument("--interval", default="30s", help="the probe's --interval (default: its own, 30s)")
    parser.add_argument("--heartbeat", default="5m", help="the probe's --heartbeat (default: its own, 5m)")
    parser.add_argument("--no-flip", action="store_true", help="one steady phase, aesmd never stopped")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--log-dir", type=Path, help="keep the processes' logs here")
    args = parser.parse_args(argv)
    args.interval_text, args.heartbeat_text = args.interval, args.heartbeat
    args.interval = _duration(args.interval)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure as ``args`` say; the result :func:`report` prints."""
    with tempfile.TemporaryDirectory(prefix="probe-writes-") as workdir:
        log_dir = args.log_dir or Path(workdir) / "logs"
        return measure(args, Path(workdir), log_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result, print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
