"""End to end on the e2e control plane: confidential pods through the extender against a plain scheduler.

One run (issue 5, "Benchmark (not a test)"):

* starts etcd + kube-apiserver (``tests/e2e/harness.py``), installs one overlay of manifests/ with
  ``tests/e2e/product.py`` (RBAC, our webhook registered by URL, our extender watching the apiserver, and
  kube-scheduler ``confidential-scheduler`` with the overlay's KubeSchedulerConfiguration), and starts a
  second kube-scheduler with the default profile (``default-scheduler``, no extender). Both schedulers
  run, and watch every pod, through both phases;
* creates ``--nodes`` Ready Nodes: ``--sgx-fraction`` of them (all by default) SGX nodes with room (EPC,
  cpu, memory, pods) for twice their share of the pods, the rest plain nodes (cpu, memory, pods; no EPC, none
  of the RuntimeClass's labels), where confidential pods never fit;
* **phase a, with the extender**: ``--pods`` pods annotated ``confidential-pods.io/confidential: "true"``
  are created in a namespace the webhook serves; it mutates them (EPC, AESM, RuntimeClass,
  ``schedulerName: confidential-scheduler``) and confidential-scheduler places them with the extender's
  filter (and, with ``--mode ledger``, its prioritize and bind; in native mode kube-scheduler scores and
  binds);
* the extender is restarted with every node and phase a's pods bound: its initial list at that size (time to
  ``/readyz``, and its own ``confidential_pods_extender_watch_list_duration_seconds``) and memory;
* all of them are deleted (grace period 0) and the run waits until the extender's ledger is empty again,
  so both phases see the same empty nodes;
* **phase b, without the extender**: the same pods, as stored after the webhook (a dry-run create of a
  phase-a pod, with the webhook's status annotation dropped and ``schedulerName: default-scheduler``), in
  a namespace labelled ``confidential-pods.io/injection=disabled`` (the webhook is never called);
  default-scheduler places them (NodeResourcesFit checks EPC itself).

Both phases: the watch is open before the first create; pods are created by the same ``--threads``
client threads (one kept-alive HTTPS connection each) while the schedulers run; pods/s = pods / (first
create -> the watch shows the last pod bound). Reported beside it: creation time and rate, the ratio
with/without, the apiserver's webhook admission latency
(``apiserver_admission_webhook_admission_duration_seconds``, delta over phase a) and pod-create latency in
both phases, our webhook's and extender's own histograms, extender requests by verb, the CPU each
process used in each phase, each kube-scheduler's scheduling attempt and algorithm durations (its /metrics,
on a secure port of its own) and the extender's memory (VmRSS, VmHWM of master and worker).

    python -m benchmarks.e2e_bench                        # 1,000 pods on 100 nodes, alibaba overlay
    python -m benchmarks.e2e_bench --pods 200 --nodes 20 --json
    python -m benchmarks.e2e_bench --pods 10000 --nodes 5000 --sgx-fraction 0.1   # issue 21, at scale

Needs the binaries of ``tests/e2e/build.sh`` and kustomize (docs/e2e.md). Not a test: no assertion on speed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from confidential_pods.quantities import parse_decimal
from extender.modes import MODES
from tests.e2e.harness import ApiServer, Binaries, ControlPlane
from tests.e2e.kube import JSON, Kube, create_namespace, create_node
from tests.e2e.processes import Process, wait_until
from tests.e2e.product import SCHEDULER_NAME, Installation, Samples, install, metric_samples, sum_matching
from tests.machine import children, free_port, load_average, memory_kib, tree_cpu_seconds

CONFIDENTIAL = "confidential-pods.io/confidential"
STATUS = "confidential-pods.io/status"
INJECTION = "confidential-pods.io/injection"
WEBHOOK_NAME = "pod.confidential-pods.io"
DEFAULT_SCHEDULER = "default-scheduler"
APP_IMAGE = "registry.example.com/enclave-app:1"
#: Headroom on every Node: room for this many times its even share of the pods.
HEADROOM = 2
BIND_TIMEOUT = 900.0


# ------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class Histogram:
    """One Prometheus histogram (summed over the label sets that matched): cumulative buckets."""

    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), sorted, +Inf last
    count: float
    total: float

    @classmethod
    def read(cls, samples: Samples, metric: str, labels: Mapping[str, str] | None = None) -> Histogram:
        wanted = set((labels or {}).items())
        buckets: dict[float, float] = {}
        count = total = 0.0
        for (sample, sample_labels), value in samples.items():
            if not wanted <= set(sample_labels):
                continue
            if sample == f"{metric}_bucket":
                le = float(dict(sample_labels)["le"])
                buckets[le] = buckets.get(le, 0.0) + value
            elif sample == f"{metric}_count":
                count += value
            elif sample == f"{metric}_sum":
                total += value
        return cls(buckets=tuple(sorted(buckets.items())), count=count, total=total)

    def minus(self, before: Histogram) -> Histogram:
        earlier = dict(before.buckets)
        return Histogram(
            buckets=tuple((le, n - earlier.get(le, 0.0)) for le, n in self.buckets),
            count=self.count - before.count,
            total=self.total - before.total,
        )

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Estimated like PromQL's histogram_quantile: linear within the bucket the rank falls in."""
        if not self.count or not self.buckets:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower  # beyond the last finite bound: the bound is all we know
                inside = cumulative - below
                return lower + (le - lower) * ((rank - below) / inside if inside else 0.0)
            lower, below = le, cumulative
        return lower

    def summary(self) -> dict[str, float]:
        return {
            "count": self.count,
            "mean_ms": self.mean * 1000,
            "p50_ms": self.quantile(0.5) * 1000,
            "p99_ms": self.quantile(0.99) * 1000,
        }


# ------------------------------------------------------------------ kube-scheduler's -v=3 log

_KLOG = re.compile(r"^[IWE](\d{4} \d\d:\d\d:\d\d\.\d{6})\s")
_POD = re.compile(r'pod="([^"/]+)/([^"]+)"')


def scheduler_log_stats(text: str, namespace: str) -> dict[str, float]:
    """Where one scheduler's time went for the pods of ``namespace``, from the lines it logs at -v=3.

    ``cycle_ms``: mean time between two "Attempting to schedule pod" (the scheduling cycle is serial, so
    while the queue is never empty this is the cost of one cycle); ``queue_wait_s``: from the pod's add
    event to its attempt; ``attempt_to_bound_ms``: the binding cycle (asynchronous); ``throttled``: the
    scheduler's own client waited on its rate limiter (clientConnection qps/burst) before a
    binding or an event (events go through a second client of the same limits, asynchronously).
    """
    added: dict[str, float] = {}
    attempted: dict[str, float] = {}
    bound: dict[str, float] = {}
    throttled_binds = throttled_events = 0
    for line in text.splitlines():
        if "client-side throttling" in line:
            throttled_binds += f"/namespaces/{namespace}/pods/" in line and '/binding"' in line
            throttled_events += f"/namespaces/{namespace}/events" in line
            continue
        stamp, pod = _KLOG.match(line), _POD.search(line)
        if stamp is None or pod is None or pod.group(1) != namespace:
            continue
        when = datetime.strptime(stamp.group(1), "%m%d %H:%M:%S.%f").timestamp()
        if '"Add event for unscheduled pod"' in line:
            added.setdefault(pod.group(2), when)
        elif '"Attempting to schedule pod"' in line:
            attempted.setdefault(pod.group(2), when)
        elif '"Successfully bound pod to node"' in line:
            bound[pod.group(2)] = when
    if not attempted or not bound:
        return {}
    attempts = sorted(attempted.values())
    waits = sorted(attempted[p] - added[p] for p in attempted if p in added)
    binding = sorted(bound[p] - attempted[p] for p in bound if p in attempted)
    return {
        "attempts": len(attempts),
        "attempts_span_s": attempts[-1] - attempts[0],
        "cycle_ms": 1000 * (attempts[-1] - attempts[0]) / max(len(attempts) - 1, 1),
        "queue_wait_p50_s": waits[len(waits) // 2] if waits else math.nan,
        "queue_wait_max_s": waits[-1] if waits else math.nan,
        "attempt_to_bound_p50_ms": 1000 * binding[len(binding) // 2],
        "attempt_to_bound_max_ms": 1000 * binding[-1],
        "throttled_binds": throttled_binds,
        "throttled_events": throttled_events,
    }


# ------------------------------------------------------------------ processes' CPU


def cpu_snapshot(processes: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds of each process with its live descendants (gunicorn workers), and of this one."""
    snapshot = {name: tree_cpu_seconds(pid) for name, pid in processes.items()}
    own = os.times()
    snapshot["benchmark client"] = own.user + own.system
    return snapshot


def say(message: str) -> None:
    """Progress, on stderr (stdout carries the figures, or the JSON document with --json)."""
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ HTTP


def ssl_context(api: ApiServer) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(api.ca.files.cert))
    context.load_cert_chain(str(api.admin.cert), str(api.admin.key))
    return context


class Connections:
    """One kept-alive HTTPS connection to the apiserver per thread (the admin's client certificate)."""

    def __init__(self, api: ApiServer) -> None:
        parsed = urllib.parse.urlsplit(api.url)
        self.host, self.port = str(parsed.hostname), int(parsed.port or 443)
        self.context = ssl_context(api)
        self.local = threading.local()
        self.all: list[http.client.HTTPSConnection] = []
        self.lock = threading.Lock()

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        conn: http.client.HTTPSConnection | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=60)
            self.local.conn = conn
            with self.lock:
                self.all.append(conn)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        for conn in self.all:
            conn.close()


class BindWatch:
    """A watch on one namespace's pods, opened before the first create: when each pod is first bound.

    The apiserver may end a watch before its ``timeoutSeconds`` (it closes a watcher that falls behind); the
    watch is then opened again from the last resourceVersion it saw, as an informer would, so no pod is missed
    and :meth:`wait` does not return early. ``reopened`` counts that; an ``ERROR`` event (such as 410 Gone)
    fails the watch.
    """

    #: Watches opened again before the phase's pods were all seen bound.
    MAX_REOPENED = 20

    def __init__(
        self,
        connect: Callable[[], http.client.HTTPConnection],
        namespace: str,
        version: str,
        expected: int,
        timeout: float = BIND_TIMEOUT,
    ) -> None:
        self.connect, self.path = connect, f"/api/v1/namespaces/{namespace}/pods"
        self.version = version
        self.expected = expected
        self.deadline = time.monotonic() + timeout
        self.bound: dict[str, float] = {}
        self.reopened = 0
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.closed = False
        self.lock = threading.Lock()
        self.conn, self.response = self._open()  # headers arrive once the watch is established
        self.thread = threading.Thread(target=self._read, name=f"watch-{namespace}", daemon=True)
        self.thread.start()

    @classmethod
    def on(cls, api: ApiServer, kube: Kube, namespace: str, expected: int) -> BindWatch:
        """A watch of ``namespace`` on the e2e control plane, from the pods' current resourceVersion."""
        version = kube.get(f"/api/v1/namespaces/{namespace}/pods")["metadata"]["resourceVersion"]
        parsed = urllib.parse.urlsplit(api.url)

        def connect() -> http.client.HTTPConnection:
            return http.client.HTTPSConnection(
                str(parsed.hostname), parsed.port, context=ssl_context(api), timeout=BIND_TIMEOUT
            )

        return cls(connect, namespace, version, expected)

    def _open(self) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        # Rounded up: the apiserver ends the watch at its timeoutSeconds, which must not come before the
        # deadline (an end a moment before it would be taken for an early one).
        left = max(1, math.ceil(self.deadline - time.monotonic()))
        query = urllib.parse.urlencode(
            {"watch": "true", "resourceVersion": self.version, "timeoutSeconds": str(left)}
        )
        conn = self.connect()
        try:
            conn.request("GET", f"{self.path}?{query}")
            response = conn.getresponse()
            if response.status != 200:
                raise RuntimeError(f"watch {self.path}: HTTP {response.status}: {response.read()!r}")
        except BaseException:
            conn.close()
            raise
        return conn, response

    def _read(self) -> None:
        try:
            while True:
                for line in self.response:
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        raise RuntimeError(f"watch error: {event['object']}")
                    pod = event["object"]
                    self.version = pod["metadata"]["resourceVersion"]
                    name = pod["metadata"]["name"]
                    if pod["spec"].get("nodeName") and name not in self.bound:
                        self.bound[name] = time.monotonic()
                        if len(self.bound) >= self.expected:
                            return
                # The stream ended with pods still unbound: open it again from where it stopped, unless
                # the phase is over (wait() closed it) or the deadline is (nearly) reached.
                with self.lock:
                    if self.closed or time.monotonic() >= self.deadline - 1:
                        return
                    if self.reopened >= self.MAX_REOPENED:
                        raise RuntimeError(f"watch ended {self.reopened + 1} times")
                    self.reopened += 1
                    self.conn.close()
                conn, response = self._open()  # outside the lock: wait() must not wait for it
                with self.lock:
                    if self.closed:
                        conn.close()
                        return
                    self.conn, self.response = conn, response
        except BaseException as exc:  # reported by wait()
            self.error = exc
        finally:
            self.done.set()

    def wait(self, timeout: float) -> None:
        self.done.wait(timeout)
        with self.lock:
            self.closed = True
            self.conn.close()
        if self.error is not None and len(self.bound) < self.expected:
            raise RuntimeError(f"watch failed after {len(self.bound)} bound pods") from self.error


# ------------------------------------------------------------------ pods and nodes


def confidential_pod(name: str) -> JSON:
    """What a user writes: an app pod opted in by annotation (the webhook adds the rest)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {CONFIDENTIAL: "true"}},
        "spec": {"containers": [{"name": "app", "image": APP_IMAGE}]},
    }


def plain_pod(name: str, mutated: JSON) -> JSON:
    """The stored form of a mutated pod, for default-scheduler: status annotation dropped, same spec."""
    annotations = {k: v for k, v in mutated["metadata"].get("annotations", {}).items() if k != STATUS}
    spec = json.loads(json.dumps(mutated["spec"]))
    spec.pop("nodeName", None)
    spec["schedulerName"] = DEFAULT_SCHEDULER
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    }


def pod_requests(pod: JSON) -> dict[str, Decimal]:
    """An upper bound of what the pod asks of a node: every container's and init container's requests,
    plus the RuntimeClass overhead (init containers summed, not maxed: the aesmd sidecar is a native one)."""
    total: dict[str, Decimal] = {}
    spec = pod["spec"]
    for each in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        for resource, amount in each.get("resources", {}).get("requests", {}).items():
            total[resource] = total.get(resource, Decimal(0)) + parse_decimal(amount)
    for resource, amount in spec.get("overhead", {}).items():
        total[resource] = total.get(resource, Decimal(0)) + parse_decimal(amount)
    return total


def node_allocatable(pod: JSON, slots: int) -> dict[str, str]:
    """Room for ``slots`` such pods (at least the harness's cpu 8 / memory 32Gi / pods 110)."""
    minimum = {"cpu": Decimal(8), "memory": parse_decimal("32Gi"), "pods": Decimal(110)}
    wanted = {resource: amount * slots for resource, amount in pod_requests(pod).items()}
    wanted["pods"] = Decimal(slots)
    allocatable: dict[str, str] = {}
    for resource in sorted({*minimum, *wanted}):
        amount = max(wanted.get(resource, Decimal(0)), minimum.get(resource, Decimal(0)))
        allocatable[resource] = (
            f"{math.ceil(amount * 1000)}m" if resource == "cpu" else str(math.ceil(amount))
        )
    return allocatable


@dataclass(frozen=True)
class NodePlan:
    """The Nodes of a run: ``sgx`` SGX nodes with room for twice their share of the pods, the rest plain."""

    nodes: int
    sgx: int
    sgx_allocatable: dict[str, str]
    plain_allocatable: dict[str, str]

    @classmethod
    def of(cls, pod: JSON, pods: int, nodes: int, sgx_fraction: float) -> NodePlan:
        """``sgx_fraction`` of ``nodes`` (rounded, at least one) advertise EPC, sized so ``pods`` such pods
        fit with :data:`HEADROOM`; the others only the harness's minimum of cpu, memory and pods."""
        sgx = min(nodes, max(1, round(nodes * sgx_fraction)))
        plain = node_allocatable({"spec": {}}, 0)
        return cls(nodes, sgx, node_allocatable(pod, math.ceil(HEADROOM * pods / sgx)), plain)

    def node(self, i: int) -> tuple[str, dict[str, str], bool]:
        """Name, allocatable and whether it is an SGX node, of the ``i``-th node (SGX nodes first)."""
        if i < self.sgx:
            return f"sgx-{i:05d}", self.sgx_allocatable, True
        return f"plain-{i:05d}", self.plain_allocatable, False


# ------------------------------------------------------------------ phases


@dataclass
class Measured:
    """What every phase records: its pods, how many got bound, the time to create them, the CPU each
    process used and the load average around it."""

    name: str
    pods: int
    bound: int = 0
    creation_s: float = math.nan
    last_bound_s: float = math.nan
    cpu_s: dict[str, float] = field(default_factory=dict)
    loadavg_before: str = ""
    loadavg_after: str = ""
    #: Times the benchmark's own watch of the pods ended early and was opened again (:class:`BindWatch`).
    watch_reopened: int = 0


@dataclass
class Phase(Measured):
    """One phase's figures; times in seconds from the first create."""

    p50_bound_s: float = math.nan
    create_errors: int = 0

    @property
    def pods_per_s(self) -> float:
        return self.pods / self.last_bound_s if self.bound == self.pods else math.nan

    @property
    def creates_per_s(self) -> float:
        return self.pods / self.creation_s


def create_pods(
    api: ApiServer, namespace: str, bodies: Sequence[JSON], threads: int, times: list[float] | None = None
) -> tuple[float, float, list[str]]:
    """Create ``bodies`` from ``threads`` client threads (one kept-alive connection each); each create's
    round trip in ms is appended to ``times``, if given.

    Returns when the first create was sent (``time.monotonic()``), how long all took, and the failures.
    """
    connections = Connections(api)
    path = f"/api/v1/namespaces/{namespace}/pods"
    errors: list[str] = []

    def create(body: JSON) -> None:
        started = time.perf_counter()
        status, raw = connections.request("POST", path, body)
        if times is not None:
            times.append((time.perf_counter() - started) * 1000)
        if status != 201:
            errors.append(f"{status}: {raw[:300]!r}")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        start = time.monotonic()
        list(pool.map(create, bodies))
        seconds = time.monotonic() - start
    connections.close()
    return start, seconds, errors


def cpu_used(processes: Mapping[str, int], before: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each process used since ``before`` (a :func:`cpu_snapshot`)."""
    after = cpu_snapshot(processes)
    return {k: round(after[k] - before.get(k, 0.0), 2) for k in after}


def run_phase(bench: Bench, name: str, namespace: str, bodies: Sequence[JSON]) -> Phase:
    """Create ``bodies`` with ``--threads`` client threads; wait until the watch has seen every pod bound."""
    api, processes = bench.api, bench.processes
    phase = Phase(name=name, pods=len(bodies), loadavg_before=load_average())
    watch = BindWatch.on(api, bench.kube, namespace, expected=len(bodies))
    cpu_before = cpu_snapshot(processes)
    start, phase.creation_s, errors = create_pods(api, namespace, bodies, bench.args.threads)
    phase.create_errors = len(errors)
    if errors:
        print(f"  {len(errors)} creates failed, first: {errors[0]}", file=sys.stderr)
    watch.wait(BIND_TIMEOUT)
    phase.cpu_s = cpu_used(processes, cpu_before)
    phase.watch_reopened = watch.reopened
    times = sorted(t - start for t in watch.bound.values())
    phase.bound = len(times)
    if times:
        phase.last_bound_s = times[-1]
        phase.p50_bound_s = times[len(times) // 2]
    phase.loadavg_after = load_average()
    return phase


@dataclass
class HeldPhase(Measured):
    """Scheduling only: every pod created while the scheduler was stopped, then the scheduler started.

    Times in seconds from the scheduler's (re)start; ``first_bound_s`` is when it bound its first pod, so
    ``pods_per_s`` — pods after the first over the span to the last — leaves its start-up out.
    """

    start_s: float = math.nan
    first_bound_s: float = math.nan
    #: CPU each process used per second in the 2 s before the scheduler started (nothing to do but watch).
    idle_cores: dict[str, float] = field(default_factory=dict)
    #: Requests the apiserver served during the phase, by ``VERB resource[/subresource]``.
    apiserver_requests: dict[str, float] = field(default_factory=dict)
    #: The scheduler's cycle histograms over its whole run (:func:`scheduler_cycle`: it starts in the phase).
    scheduler_cycle: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The extender's memory at the end of the phase (phase c: its pods are in the ledger).
    extender_memory_mb: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def pods_per_s(self) -> float:
        span = self.last_bound_s - self.first_bound_s
        return (self.pods - 1) / span if self.bound == self.pods and span > 0 else math.nan


def run_held_phase(
    bench: Bench,
    name: str,
    namespace: str,
    bodies: Sequence[JSON],
    scheduler: str,
    stop: Callable[[], None],
    start: Callable[[], Process],
) -> HeldPhase:
    """``stop`` the scheduler, create ``bodies``, then ``start`` it and time it binding them all."""
    api, processes = bench.api, bench.processes
    phase = HeldPhase(name=name, pods=len(bodies), loadavg_before=load_average())
    stop()
    _, phase.creation_s, errors = create_pods(api, namespace, bodies, bench.args.threads)
    if errors:
        raise RuntimeError(f"{name}: {len(errors)} creates failed, first: {errors[0]}")
    watch = BindWatch.on(api, bench.kube, namespace, expected=len(bodies))
    time.sleep(2)  # the watch is open, every pod is stored and Pending, and the watchers have seen them
    idle_before, idle_start = cpu_snapshot(processes), time.monotonic()
    time.sleep(2)
    idle = cpu_used(processes, idle_before)
    phase.idle_cores = {name: used / (time.monotonic() - idle_start) for name, used in idle.items()}
    requests_before = apiserver_requests(bench)
    profile = Perf.start(bench.args.perf, name) if bench.args.perf else None
    try:
        cpu_before = cpu_snapshot(processes)
        begin = time.monotonic()
        process = start()
        phase.start_s = time.monotonic() - begin
        processes[scheduler] = process.popen.pid
        watch.wait(BIND_TIMEOUT)
        phase.cpu_s = cpu_used(processes, cpu_before)
        phase.watch_reopened = watch.reopened
    finally:
        if profile is not None:
            profile.stop()
    after = apiserver_requests(bench)
    phase.apiserver_requests = {
        key: after[key] - requests_before.get(key, 0.0)
        for key in sorted(after)
        if after[key] > requests_before.get(key, 0.0)
    }
    times = sorted(t - begin for t in watch.bound.values())
    phase.bound = len(times)
    if times:
        phase.first_bound_s, phase.last_bound_s = times[0], times[-1]
    phase.loadavg_after = load_average()
    return phase


def apiserver_requests(bench: Bench) -> dict[str, float]:
    """``apiserver_request_total`` summed by verb and resource (with subresource) and, unless 2xx, the HTTP
    code, from /metrics."""
    counts: dict[str, float] = {}
    for (name, labels), value in scrape(bench, "apiserver").items():
        if name != "apiserver_request_total":
            continue
        label = dict(labels)
        resource = label.get("resource", "")
        if label.get("subresource"):
            resource += f"/{label['subresource']}"
        key = f"{label.get('verb', '')} {resource or label.get('component', '?')}"
        if not label.get("code", "200").startswith("2"):
            key += f" {label['code']}"
        counts[key] = counts.get(key, 0.0) + value
    return counts


@dataclass
class Perf:
    """``perf record`` of the whole machine (every process, kernel included) through one phase."""

    popen: subprocess.Popen[bytes]
    data: Path

    @property
    def log(self) -> Path:
        return self.data.with_suffix(".log")

    @classmethod
    def start(cls, directory: Path, phase: str) -> Perf:
        directory.mkdir(parents=True, exist_ok=True)
        data = directory / (re.sub(r"[^a-z0-9]+", "-", phase.lower()).strip("-") + ".perf.data")
        args = ("perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-a", "-g", "-o", str(data))
        with data.with_suffix(".log").open("wb") as log:
            popen = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        profile = cls(popen, data)
        time.sleep(0.5)  # perf has opened its events
        if popen.poll() is not None:
            raise RuntimeError(f"perf record failed: {profile.log.read_text(errors='replace')[-2000:]}")
        return profile

    def stop(self) -> None:
        """End the recording (killed if it does not end within 5 minutes) and write the share of each
        process beside the data (``perf report``)."""
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(timeout=300)  # perf writes the build ids of what it saw
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            say(f"perf: killed after 5 minutes; {self.data} is incomplete")
            return
        report = subprocess.run(
            ("perf", "report", "-i", str(self.data), "--stdio", "--no-children", "--sort=comm", "-g", "none"),
            capture_output=True,
            text=True,
            check=False,
        )
        shares = self.data.with_suffix(".comm.txt")
        if report.returncode != 0:
            say(f"perf: {self.data} recorded; perf report failed: {report.stderr.strip()[-500:]}")
            return
        shares.write_text(report.stdout)
        say(f"perf: {self.data} ({shares.name}: share per process)")


def delete_all(api: ApiServer, kube: Kube, namespace: str, threads: int) -> None:
    """Delete every pod of ``namespace`` with grace period 0 and wait until none is left."""
    names = [p["metadata"]["name"] for p in kube.get(f"/api/v1/namespaces/{namespace}/pods")["items"]]
    connections = Connections(api)
    body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}

    def delete(name: str) -> None:
        connections.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(delete, names))
    connections.close()
    wait_until(
        lambda: not kube.get(f"/api/v1/namespaces/{namespace}/pods", {"limit": "1"})["items"],
        timeout=empty_timeout(len(names)),
        what=f"the pods of {namespace} to be deleted",
    )


def extender_gauge(installation: Installation, name: str) -> float:
    return installation.extender.metric(name)


# ------------------------------------------------------------------ the run

WITH_NS, WITHOUT_NS = "bench-confidential", "bench-plain"
ADMISSION = "apiserver_admission_webhook_admission_duration_seconds"
REQUESTS = "apiserver_request_duration_seconds"
POD_CREATE = {"verb": "POST", "resource": "pods", "subresource": ""}
POD_BINDING = {"verb": "POST", "resource": "pods", "subresource": "binding"}
WEBHOOK_REVIEW = "confidential_pods_webhook_review_duration_seconds"
EXTENDER_LATENCY = "confidential_pods_extender_request_duration_seconds"
EXTENDER_REQUESTS = "confidential_pods_extender_requests_total"
LIST_DURATION = "confidential_pods_extender_watch_list_duration_seconds"
VERBS = ("filter", "prioritize", "bind")


@dataclass
class Bench:
    """What the phases of one run share: options, control plane, installation, and the processes timed."""

    args: argparse.Namespace
    plane: ControlPlane
    installation: Installation
    kube: Kube
    processes: dict[str, int]
    default_config: dict[str, Any] | None
    #: default-scheduler, and each restart of it (phase d): the last one runs.
    default_schedulers: list[Process]
    #: The port of each kube-scheduler's /metrics (a secure port of its own, kept across restarts).
    metrics_ports: dict[str, int]

    @classmethod
    def start(cls, args: argparse.Namespace, plane: ControlPlane, installation: Installation) -> Bench:
        """Start default-scheduler beside confidential-scheduler and name every process whose CPU counts.

        Like with like unless ``--as-shipped``: both schedulers' API clients get the same qps and burst
        (``--scheduler-qps``). confidential-scheduler is restarted to serve /metrics, as default-scheduler.
        """
        default_config = None
        connection = {"qps": args.scheduler_qps, "burst": 2 * args.scheduler_qps}
        if not args.as_shipped:
            default_config = {"clientConnection": connection}

        def adjust(config: dict[str, Any]) -> None:
            if not args.as_shipped:
                config["clientConnection"] = {**config.get("clientConnection", {}), **connection}

        installation.adjust_scheduler_config = adjust
        ports = {SCHEDULER_NAME: free_port(), DEFAULT_SCHEDULER: free_port()}
        bench = cls(args, plane, installation, plane.api.admin_client(), {}, default_config, [], ports)
        installation.scheduler.stop()
        bench.start_confidential_scheduler()
        default_scheduler = bench.start_default_scheduler()
        extender, webhook = installation.extender.process, installation.webhook.process
        bench.processes.update({
            "kube-apiserver": plane.api.process.popen.pid,
            "etcd": plane.etcd.process.popen.pid if plane.etcd else 0,
            "confidential-scheduler": installation.scheduler.popen.pid,
            "default-scheduler": default_scheduler.popen.pid,
            EXTENDER: extender.popen.pid if extender else 0,
            WEBHOOK: webhook.popen.pid if webhook else 0,
        })  # fmt: skip
        return bench

    @property
    def api(self) -> ApiServer:
        return self.plane.api

    def metrics_flags(self, scheduler: str) -> list[str]:
        """kube-scheduler flags that serve its /metrics to anyone on 127.0.0.1 (self-signed certificate)."""
        return [
            f"--secure-port={self.metrics_ports[scheduler]}",
            "--bind-address=127.0.0.1",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            f"--cert-dir={self.plane.workdir / (scheduler + '-certs')}",
        ]

    def start_confidential_scheduler(self) -> Process:
        """confidential-scheduler as the installation starts it, plus :meth:`metrics_flags`."""
        installation = self.installation
        config = installation.overlay.scheduler_config(installation.extender.url)
        if installation.adjust_scheduler_config is not None:
            installation.adjust_scheduler_config(config)
        installation.scheduler = self.plane.start_scheduler(
            config,
            name=SCHEDULER_NAME,
            kubeconfig=installation.scheduler_kubeconfig,
            extra_args=[*installation.overlay.scheduler_flags(), *self.metrics_flags(SCHEDULER_NAME)],
        )
        return installation.scheduler

    def start_default_scheduler(self) -> Process:
        self.default_schedulers.append(
            self.plane.start_scheduler(
                self.default_config,
                name=DEFAULT_SCHEDULER,
                extra_args=self.metrics_flags(DEFAULT_SCHEDULER),
            )
        )
        return self.default_schedulers[-1]

    def scheduler_metrics(self, scheduler: str) -> Samples:
        """One kube-scheduler's /metrics."""
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # its self-signed certificate
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.metrics_ports[scheduler], context=context, timeout=30
        )
        try:
            conn.request("GET", "/metrics")
            return metric_samples(conn.getresponse().read().decode())
        finally:
            conn.close()

    def extender_memory(self) -> dict[str, dict[str, float]]:
        """VmRSS and VmHWM (MB) of the extender's master and each worker."""
        master = self.processes[EXTENDER]
        named = {"master": master, **{f"worker {i}": pid for i, pid in enumerate(children(master), 1)}}
        return {
            name: {key: kib / 1024 for key, kib in memory_kib(pid).items()} for name, pid in named.items()
        }

    def ledger(self, gauge: str) -> float:
        return extender_gauge(self.installation, f"confidential_pods_extender_ledger_{gauge}")

    def delete_all(self, namespace: str) -> None:
        delete_all(self.api, self.kube, namespace, self.args.threads)


def prepare_cluster(bench: Bench) -> tuple[JSON, NodePlan]:
    """Both namespaces and ``--nodes`` Nodes (:class:`NodePlan`); the stored form of one opted-in pod.

    The template is a dry-run create: the pod as the webhook and the in-tree admission leave it. Plain nodes
    get none of the labels of the RuntimeClass's nodeSelector, as where only SGX nodes carry them.
    """
    args, kube = bench.args, bench.kube
    create_namespace(kube, WITH_NS)
    create_namespace(kube, WITHOUT_NS, labels={INJECTION: "disabled"})
    template = kube.request(
        "POST",
        f"/api/v1/namespaces/{WITH_NS}/pods",
        body=confidential_pod("template"),
        params={"dryRun": "All"},
    )
    if STATUS not in template["metadata"].get("annotations", {}):
        raise RuntimeError(f"the webhook did not mutate the template pod: {template['metadata']}")
    plan = NodePlan.of(template, args.pods, args.nodes, args.sgx_fraction)
    labels = dict(template["spec"].get("nodeSelector", {}))  # the RuntimeClass's scheduling.nodeSelector
    say(
        f"pod requests {dict(pod_requests(template))}; {plan.sgx} SGX nodes of {plan.nodes}, allocatable "
        f"{plan.sgx_allocatable}, labels {labels}; plain nodes {plan.plain_allocatable}"
    )

    def create(i: int) -> None:
        name, allocatable, sgx = plan.node(i)
        create_node(kube, name, allocatable, labels=labels if sgx else None)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        list(pool.map(create, range(args.nodes)))
    say(f"{args.nodes} nodes created in {time.monotonic() - started:.1f} s")
    wait_until(
        lambda: bench.ledger("nodes") >= args.nodes,
        timeout=60,
        what="the extender's ledger to hold every node",
    )
    time.sleep(2)  # the schedulers' informers see the nodes a moment later
    return template, plan


@dataclass(frozen=True)
class Observed:
    """A phase through both schedulers running, and the /metrics scraped before and after it."""

    phase: Phase
    apiserver: tuple[Samples, Samples]
    extender: tuple[Samples, Samples]
    scheduler_log: dict[str, float]
    #: The phase's scheduler's /metrics before and after.
    scheduler: tuple[Samples, Samples]
    webhook: tuple[Samples, Samples] | None = None


def scrape(bench: Bench, server: str) -> Samples:
    """/metrics of the apiserver, or of our ``webhook`` or ``extender``."""
    if server == "apiserver":
        return metric_samples(bench.kube.get_text("/metrics"))
    component = bench.installation.webhook if server == "webhook" else bench.installation.extender
    return metric_samples(component.get("/metrics")[1])


def phase_a(bench: Bench) -> Observed:
    """``--pods`` confidential pods through the webhook, confidential-scheduler and the extender."""
    pods = bench.args.pods
    before = {server: scrape(bench, server) for server in ("apiserver", "webhook", "extender")}
    scheduler_before = bench.scheduler_metrics(SCHEDULER_NAME)
    say(f"phase a: {pods} confidential pods through confidential-scheduler + extender ...")
    bodies = [confidential_pod(f"pod-{i:05d}") for i in range(pods)]
    phase = run_phase(bench, "with extender", WITH_NS, bodies)
    scheduler_log = scheduler_log_stats(bench.installation.scheduler.log_text(), WITH_NS)
    after = {server: scrape(bench, server) for server in ("apiserver", "webhook", "extender")}
    scheduler = (scheduler_before, bench.scheduler_metrics(SCHEDULER_NAME))
    stored = bench.kube.get(f"/api/v1/namespaces/{WITH_NS}/pods/pod-00000")
    if stored["spec"].get("schedulerName") != bench.installation.settings["schedulerName"]:
        raise RuntimeError(
            f"phase a pod not for confidential-scheduler: {stored['spec'].get('schedulerName')}"
        )
    return Observed(
        phase,
        apiserver=(before["apiserver"], after["apiserver"]),
        extender=(before["extender"], after["extender"]),
        scheduler_log=scheduler_log,
        scheduler=scheduler,
        webhook=(before["webhook"], after["webhook"]),
    )


def phase_b(bench: Bench, template: JSON, extender_before: Samples) -> Observed:
    """The same pods as stored after the webhook, through default-scheduler (the webhook is not called).

    ``extender_before`` is the extender's /metrics after phase a: its requests in between count to b.
    """
    pods = bench.args.pods
    apiserver_before = scrape(bench, "apiserver")
    scheduler_before = bench.scheduler_metrics(DEFAULT_SCHEDULER)
    say(f"phase b: the same {pods} pods through default-scheduler ...")
    bodies = [plain_pod(f"pod-{i:05d}", template) for i in range(pods)]
    phase = run_phase(bench, "without extender", WITHOUT_NS, bodies)
    scheduler_log = scheduler_log_stats(bench.default_schedulers[0].log_text(), WITHOUT_NS)
    return Observed(
        phase,
        apiserver=(apiserver_before, scrape(bench, "apiserver")),
        extender=(extender_before, scrape(bench, "extender")),
        scheduler_log=scheduler_log,
        scheduler=(scheduler_before, bench.scheduler_metrics(DEFAULT_SCHEDULER)),
    )


#: kube-scheduler's histograms of one scheduling attempt (the cycle, and the binding when it is not
#: asynchronous) and of the algorithm alone (filter and score, the extender's calls included).
SCHEDULER_CYCLE = {
    "attempt": "scheduler_scheduling_attempt_duration_seconds",
    "algorithm": "scheduler_scheduling_algorithm_duration_seconds",
}


def scheduler_cycle(scrapes: tuple[Samples, Samples]) -> dict[str, dict[str, float]]:
    """What one kube-scheduler's :data:`SCHEDULER_CYCLE` histograms observed between two scrapes."""
    return {key: histogram_delta(scrapes, metric) for key, metric in SCHEDULER_CYCLE.items()}


def restart_extender(bench: Bench) -> dict[str, Any]:
    """Restart the extender with the cluster as it is: its initial list at this size, and its memory.

    Returns the time from the new process's start to ``/readyz`` (every kind listed), the extender's own
    list durations by kind, what its ledger holds then, and the memory of the old and the new process.
    """
    extender = bench.installation.extender
    before = bench.extender_memory()
    extender.stop()
    started = time.monotonic()
    extender.start()
    ready_s = time.monotonic() - started
    assert extender.process is not None
    bench.processes[EXTENDER] = extender.process.popen.pid
    samples = scrape(bench, "extender")
    listed = {
        kind: Histogram.read(samples, LIST_DURATION, {"kind": kind, "reason": "initial"}).total
        for kind in ("Node", "Pod", "Nominated")
    }
    return {
        "ready_s": ready_s,
        "list_s": listed,
        "ledger_nodes": bench.ledger("nodes"),
        "ledger_pods": bench.ledger("pods"),
        "memory_before_mb": before,
        "memory_after_mb": bench.extender_memory(),
    }


def held_phases(bench: Bench, template: JSON) -> tuple[HeldPhase, HeldPhase]:
    """Phases c and d, scheduling only: the same pods again, created while their scheduler is stopped, so
    the time from its start to the last bind is scheduling alone, without admission and creation."""
    args, installation = bench.args, bench.installation
    say(f"phase c: {args.pods} confidential pods held, then confidential-scheduler + extender ...")
    bodies = [confidential_pod(f"held-{i:05d}") for i in range(args.pods)]
    held_with = run_held_phase(
        bench, "with extender", WITH_NS, bodies, "confidential-scheduler",
        installation.scheduler.stop, bench.start_confidential_scheduler,
    )  # fmt: skip
    held_with.scheduler_cycle = scheduler_cycle(({}, bench.scheduler_metrics(SCHEDULER_NAME)))
    held_with.extender_memory_mb = bench.extender_memory()
    bench.delete_all(WITH_NS)
    wait_until(
        lambda: bench.ledger("pods") == 0,
        timeout=empty_timeout(args.pods),
        what="the extender's ledger to be empty",
    )
    time.sleep(2)
    say(f"phase d: the same {args.pods} pods held, then default-scheduler ...")
    bodies = [plain_pod(f"held-{i:05d}", template) for i in range(args.pods)]
    held_without = run_held_phase(
        bench, "without extender", WITHOUT_NS, bodies, "default-scheduler",
        lambda: bench.default_schedulers[-1].stop(), bench.start_default_scheduler,
    )  # fmt: skip
    held_without.scheduler_cycle = scheduler_cycle(({}, bench.scheduler_metrics(DEFAULT_SCHEDULER)))
    return held_with, held_without


def measure(args: argparse.Namespace, plane: ControlPlane, installation: Installation) -> dict[str, Any]:
    """Phases a to d on one installation (see the module's docstring); the figures as one document."""
    bench = Bench.start(args, plane, installation)
    template, plan = prepare_cluster(bench)
    memory = {"nodes listed": bench.extender_memory()}
    a = phase_a(bench)
    say(f"the extender restarted with {args.nodes} nodes and {args.pods} pods bound ...")
    restart = restart_extender(bench)
    extender_after_a = scrape(bench, "extender")  # the new process: phase b's requests count from here
    bench.delete_all(WITH_NS)
    wait_until(
        lambda: bench.ledger("pods") == 0 and bench.ledger("reservations") == 0,
        timeout=empty_timeout(args.pods),
        what="the extender's ledger to be empty",
    )
    time.sleep(2)  # and the schedulers' caches
    b = phase_b(bench, template, extender_after_a)
    bench.delete_all(WITHOUT_NS)
    time.sleep(2)
    c, d = held_phases(bench, template)
    memory["end"] = bench.extender_memory()
    document = figures(args, plan, a, b, c, d)
    document["extender_restart"] = restart
    document["extender_memory_mb"] = {**memory, "phase c": c.extender_memory_mb}
    return document


def empty_timeout(pods: int) -> float:
    """How long deleting ``pods`` pods may take to reach the ledger: 120 s, more for many pods."""
    return max(120.0, pods / 25)


def histogram_delta(
    scrapes: tuple[Samples, Samples], metric: str, labels: Mapping[str, str] | None = None
) -> dict[str, float]:
    """The summary of what ``metric`` observed between two scrapes."""
    before, after = scrapes
    return Histogram.read(after, metric, labels).minus(Histogram.read(before, metric, labels)).summary()


def requests_by_verb(scrapes: tuple[Samples, Samples]) -> dict[str, float]:
    before, after = scrapes
    return {
        verb: sum_matching(after, EXTENDER_REQUESTS, verb=verb)
        - sum_matching(before, EXTENDER_REQUESTS, verb=verb)
        for verb in VERBS
    }


def figures(
    args: argparse.Namespace,
    plan: NodePlan,
    a: Observed,
    b: Observed,
    c: HeldPhase,
    d: HeldPhase,
) -> dict[str, Any]:
    assert a.webhook is not None
    document: dict[str, Any] = {
        "pods": args.pods,
        "nodes": args.nodes,
        "overlay": args.overlay,
        "threads": args.threads,
        "schedulers_client": (
            "as shipped: default-scheduler 50/100, confidential-scheduler the overlay's (its binds are the "
            "extender's)"
            if args.as_shipped
            else f"both qps {args.scheduler_qps:g}, burst {2 * args.scheduler_qps:g}"
        ),
        "mode": (
            "native (kube-scheduler counts, scores and binds; the extender filters)"
            if args.mode == "native"
            else "ledger (the extender filters, scores and binds)"
        ),
        "sgx_nodes": plan.sgx,
        "node_allocatable": plan.sgx_allocatable,
        "plain_node_allocatable": plan.plain_allocatable if plan.sgx < plan.nodes else None,
        "phases": [
            {**asdict(p), "pods_per_s": p.pods_per_s, "creates_per_s": p.creates_per_s}
            for p in (a.phase, b.phase)
        ],
        "ratio_with_over_without": a.phase.pods_per_s / b.phase.pods_per_s,
        "scheduling_only": [{**asdict(p), "pods_per_s": p.pods_per_s} for p in (c, d)],
        "scheduling_only_ratio": c.pods_per_s / d.pods_per_s,
        "cpu_budget": {"end_to_end": cpu_budget(a.phase, b.phase), "scheduling_only": cpu_budget(c, d)},
        "webhook_admission_apiserver": histogram_delta(a.apiserver, ADMISSION, {"name": WEBHOOK_NAME}),
        "pod_create_apiserver": {
            "with extender": histogram_delta(a.apiserver, REQUESTS, POD_CREATE),
            "without extender": histogram_delta(b.apiserver, REQUESTS, POD_CREATE),
        },
        "webhook_review_own": histogram_delta(a.webhook, WEBHOOK_REVIEW),
        "extender_requests_phase_a": requests_by_verb(a.extender),
        "extender_requests_phase_b": requests_by_verb(b.extender),
        "scheduler_log": {"with extender": a.scheduler_log, "without extender": b.scheduler_log},
        "extender_latency_phase_a": {
            verb: histogram_delta(a.extender, EXTENDER_LATENCY, {"verb": verb}) for verb in VERBS
        },
        "binding_apiserver": {
            "with extender": histogram_delta(a.apiserver, REQUESTS, POD_BINDING),
            "without extender": histogram_delta(b.apiserver, REQUESTS, POD_BINDING),
        },
        "scheduler_cycle": {
            "a with extender": scheduler_cycle(a.scheduler),
            "b without extender": scheduler_cycle(b.scheduler),
            "c with extender": c.scheduler_cycle,
            "d without extender": d.scheduler_cycle,
        },
    }
    document["ratios"] = ratios(document, c, d)
    own, seen = document["webhook_review_own"]["mean_ms"], document["webhook_admission_apiserver"]["mean_ms"]
    # The apiserver's webhook histogram has buckets of 5, 25 and 100 ms: p50 interpolated, mean exact.
    document[WEBHOOK_MEANS] = seen / own if own else math.nan
    return document


#: Our processes in :attr:`Bench.processes`.
EXTENDER = "extender (gunicorn)"
WEBHOOK = "webhook (gunicorn)"


def cpu_budget(with_ours: Measured, without: Measured) -> dict[str, float]:
    """A with/without ratio as the machine's CPU predicts it, and what it would be if ours cost nothing.

    When both phases keep every core busy (``cores_busy`` near the machine's CPU count), pods/s is the
    cores over the CPU all processes spend per pod, so the ratio is about ``without``'s CPU per pod over
    ``with_ours``'s. ``bound_free_ours`` leaves the extender's and the webhook's own CPU out: the ratio no
    extender and webhook could beat on this machine, whatever they cost, while kube-scheduler, the apiserver
    and etcd do what they do for them. ``background_ms_per_pod``: what the processes burn idle anyway (their
    rate in the 2 s before a held phase, times the phase; 0 for the phases that create pods).
    """

    def total(phase: Measured) -> float:
        return sum(phase.cpu_s.values())

    def busy(phase: Measured) -> float:
        return total(phase) / phase.last_bound_s if phase.last_bound_s > 0 else math.nan

    def background(phase: Measured) -> float:
        idle = phase.idle_cores if isinstance(phase, HeldPhase) else {}
        return sum(idle.values()) * phase.last_bound_s / phase.pods * 1000

    per_pod_with, per_pod_without = total(with_ours) / with_ours.pods, total(without) / without.pods
    ours = with_ours.cpu_s.get(EXTENDER, 0.0) + with_ours.cpu_s.get(WEBHOOK, 0.0)
    free = (total(with_ours) - ours) / with_ours.pods
    return {
        "cpu_ms_per_pod_with": per_pod_with * 1000,
        "cpu_ms_per_pod_without": per_pod_without * 1000,
        "background_ms_per_pod_with": background(with_ours),
        "background_ms_per_pod_without": background(without),
        "cores_busy_with": busy(with_ours),
        "cores_busy_without": busy(without),
        "predicted_ratio": per_pod_without / per_pod_with if per_pod_with else math.nan,
        "bound_free_ours": per_pod_without / free if free else math.nan,
    }


#: The goals of the performance work (docs/performance.md), by ratio: (goal, "min" or "max").
#: The webhook's apiserver mean over its handler's mean (exact, where the goal's p50s are interpolated).
WEBHOOK_MEANS = "webhook_apiserver_mean_over_handler_mean"
GOALS = {
    "end_to_end": (0.8, "min"),
    "scheduling_only": (0.8, "min"),
    "extender_cpu_per_pod_over_default_scheduler": (0.5, "max"),
    "bind_p50_over_apiserver_binding_p50": (2.0, "max"),
    "webhook_apiserver_p50_over_handler_p50": (3.0, "max"),
}


def ratios(document: Mapping[str, Any], c: HeldPhase, d: HeldPhase) -> dict[str, float]:
    """The figures the goals are stated in, each a ratio within this run."""
    bind = document["extender_latency_phase_a"]["bind"]["p50_ms"]
    binding = document["binding_apiserver"]["with extender"]["p50_ms"]
    handler = document["webhook_review_own"]["p50_ms"]
    observed = document["webhook_admission_apiserver"]["p50_ms"]
    extender_cpu = c.cpu_s.get(EXTENDER, math.nan) / c.pods
    default_cpu = d.cpu_s.get("default-scheduler", math.nan) / d.pods
    return {
        "end_to_end": document["ratio_with_over_without"],
        "scheduling_only": document["scheduling_only_ratio"],
        "extender_cpu_per_pod_over_default_scheduler": extender_cpu / default_cpu
        if default_cpu
        else math.nan,
        "bind_p50_over_apiserver_binding_p50": bind / binding if binding else math.nan,
        "webhook_apiserver_p50_over_handler_p50": observed / handler if handler else math.nan,
    }


def budget_line(budget: Mapping[str, float]) -> str:
    b = budget
    return (
        f"CPU of all processes per pod: {b['cpu_ms_per_pod_with']:.2f} ms with, "
        f"{b['cpu_ms_per_pod_without']:.2f} ms without (cores busy {b['cores_busy_with']:.2f} / "
        f"{b['cores_busy_without']:.2f}; idle background {b['background_ms_per_pod_with']:.2f} / "
        f"{b['background_ms_per_pod_without']:.2f} ms); ratio predicted {b['predicted_ratio']:.2f}, "
        f"{b['bound_free_ours']:.2f} if the extender and the webhook cost nothing"
    )


def reopened_note(phase: Mapping[str, Any]) -> str:
    """A mark on a phase whose watch had to be opened again: pods seen late there look bound late."""
    count = phase.get("watch_reopened", 0)
    return f"  (watch reopened {count}x: those pods' bind times are late)" if count else ""


def report(result: Mapping[str, Any]) -> None:
    print(
        f"\n{result['pods']} pods on {result['nodes']} nodes ({result['sgx_nodes']} SGX), overlay "
        f"{result['overlay']}, {result['threads']} client threads, {os.cpu_count()} CPUs"
    )
    header = ("phase", "pods/s", "last bound", "p50 bound", "create", "creates/s")
    print(f"{header[0]:<18}" + "".join(f"{h:>11}" for h in header[1:]) + "  loadavg")
    for p in result["phases"]:
        print(
            f"{p['name']:<18}{p['pods_per_s']:>11.1f}{p['last_bound_s']:>10.1f}s{p['p50_bound_s']:>10.1f}s"
            f"{p['creation_s']:>10.1f}s{p['creates_per_s']:>11.1f}"
            f"  {p['loadavg_before']} -> {p['loadavg_after']}"
            + (
                f"  ({p['bound']}/{p['pods']} bound, {p['create_errors']} create errors)"
                if p["bound"] < p["pods"]
                else ""
            )
            + reopened_note(p)
        )
    print(f"ratio with/without: {result['ratio_with_over_without']:.2f} (goal >= 0.8)")
    print(f"  {budget_line(result['cpu_budget']['end_to_end'])}")
    print("scheduling only (pods created while the scheduler was stopped; times from its start):")
    header = ("phase", "pods/s", "start", "first bound", "last bound", "create")
    print(f"{header[0]:<18}" + "".join(f"{h:>12}" for h in header[1:]))
    for p in result["scheduling_only"]:
        print(
            f"{p['name']:<18}{p['pods_per_s']:>12.1f}{p['start_s']:>11.1f}s{p['first_bound_s']:>11.1f}s"
            f"{p['last_bound_s']:>11.1f}s{p['creation_s']:>11.1f}s"
            + (f"  ({p['bound']}/{p['pods']} bound)" if p["bound"] < p["pods"] else "")
            + reopened_note(p)
        )
    print(f"scheduling-only ratio with/without: {result['scheduling_only_ratio']:.2f} (goal >= 0.8)")
    budget = result["cpu_budget"]["scheduling_only"]
    print(f"  {budget_line(budget)}")
    for p in result["scheduling_only"]:
        print(
            f"  apiserver requests, {p['name']}: "
            + ", ".join(f"{k} {v:.0f}" for k, v in p["apiserver_requests"].items() if v >= p["pods"] / 10)
        )

    def line(label: str, s: Mapping[str, float]) -> None:
        print(
            f"  {label:<44} n={s['count']:>6.0f}  mean {s['mean_ms']:7.2f} ms  "
            f"p50 ~{s['p50_ms']:7.2f} ms  p99 ~{s['p99_ms']:7.2f} ms"
        )

    print("latency (p50/p99 interpolated within histogram buckets):")
    line(f"apiserver -> webhook {WEBHOOK_NAME}", result["webhook_admission_apiserver"])
    line("webhook's own review duration", result["webhook_review_own"])
    for phase, s in result["pod_create_apiserver"].items():
        line(f"apiserver pod create, {phase}", s)
    for verb, s in result["extender_latency_phase_a"].items():
        line(f"extender {verb}", s)
    print(f"extender requests, phase a: {result['extender_requests_phase_a']}")
    print(f"extender requests, phase b: {result['extender_requests_phase_b']}")
    for phase, stats in result["scheduler_log"].items():
        print(
            f"scheduler log, {phase}: "
            + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
        )
    print("CPU seconds per process, phases a / b / c / d:")
    a, b = (p["cpu_s"] for p in result["phases"])
    c, d = (p["cpu_s"] for p in result["scheduling_only"])
    for name in a:
        print(f"  {name:<24}" + "".join(f"{x.get(name, 0.0):>8.1f}" for x in (a, b, c, d)))
    print(
        "kube-scheduler's attempt / algorithm durations (its /metrics; interpolated, buckets from 1 ms, x2):"
    )
    for phase, cycle in result["scheduler_cycle"].items():
        attempt, algorithm = cycle["attempt"], cycle["algorithm"]
        print(
            f"  {phase:<20} n={attempt['count']:>6.0f}  attempt p50 ~{attempt['p50_ms']:6.1f} p99 "
            f"~{attempt['p99_ms']:7.1f} ms, algorithm p50 ~{algorithm['p50_ms']:6.1f} "
            f"p99 ~{algorithm['p99_ms']:7.1f} ms"
        )
    restart = result["extender_restart"]
    listed = ", ".join(f"{kind} {seconds:.2f} s" for kind, seconds in restart["list_s"].items())
    print(
        f"extender restarted with {restart['ledger_nodes']:.0f} nodes and {restart['ledger_pods']:.0f} pods: "
        f"/readyz after {restart['ready_s']:.1f} s; its lists: {listed}"
    )
    kept = result["extender_memory_mb"]
    memory = {"nodes listed": kept["nodes listed"], "phase a's pods bound": restart["memory_before_mb"],
              "restarted (listed them)": restart["memory_after_mb"], "phase c's pods bound": kept["phase c"],
              "end": kept["end"]}  # fmt: skip
    for when, processes in memory.items():
        print(
            f"  extender memory, {when}: "
            + ", ".join(
                f"{name} {m['VmRSS']:.0f} MB (peak {m['VmHWM']:.0f})" for name, m in processes.items()
            )
        )
    print(f"schedulers' API clients: {result['schedulers_client']}; mode: {result['mode']}")
    print("ratios in this run (goal):")
    for name, value in result["ratios"].items():
        goal, kind = GOALS[name]
        met = value >= goal if kind == "min" else value <= goal
        bound = ">=" if kind == "min" else "<="
        print(f"  {name:<46} {value:6.2f}  ({bound} {goal:g}: {'met' if met else 'not met'})")
    label, means = "(webhook: apiserver mean / handler mean)", result[WEBHOOK_MEANS]
    print(f"  {label:<46} {means:6.2f}  (exact; the p50 above is interpolated in 5-25-100 ms buckets)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument(
        "--sgx-fraction",
        type=float,
        default=1.0,
        help="share of the nodes that are SGX nodes (default 1: all); the others are plain nodes (cpu, "
        "memory, pods only), where the confidential pods never fit",
    )
    parser.add_argument("--overlay", default="alibaba", help="overlay of manifests/ (alibaba, intel)")
    parser.add_argument("--threads", type=int, default=8, help="client threads creating pods")
    parser.add_argument(
        "--scheduler-qps",
        type=float,
        default=1000,
        help="clientConnection qps of both schedulers, burst twice it (default 1000: neither is throttled)",
    )
    parser.add_argument(
        "--as-shipped",
        action="store_true",
        help="the schedulers' clients as shipped instead: default-scheduler at kube-scheduler's 50/100 (its "
        "binds wait on that limiter), confidential-scheduler the overlay's (its binds are the extender's)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="native",
        help='the scheduling mode installed (docs/extender.md "Modes"): native, as the overlays ship (the '
        "extender filters; kube-scheduler scores and binds), or ledger (the overlay with its ledger-mode "
        "component: the extender also scores and binds)",
    )
    parser.add_argument(
        "--perf",
        type=Path,
        metavar="DIR",
        help="record phases c and d with `perf record -a -g` (the whole machine) into DIR, with each "
        "process's share beside each recording; needs perf and the right to use it",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs also on success")
    args = parser.parse_args(argv)
    if not 0 < args.sgx_fraction <= 1:
        parser.error("--sgx-fraction must be in (0, 1]")
    build = args.overlay if args.mode == "native" else f"{args.overlay}+ledger"

    binaries = Binaries.locate()
    log_dir = Path(tempfile.mkdtemp(prefix="e2e-bench-logs-"))
    ok = False
    try:
        with (
            tempfile.TemporaryDirectory(prefix="e2e-bench-") as workdir,
            ControlPlane.run(binaries, Path(workdir) / "plane", log_dir) as plane,
            install(plane, build, Path(workdir) / "install", log_dir) as installation,
        ):
            result = measure(args, plane, installation)
        result["loadavg_end"] = load_average()
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            report(result)
        ok = True
    finally:
        if ok and not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            print(f"process logs kept in {log_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
