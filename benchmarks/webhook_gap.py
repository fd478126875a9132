"""Where the apiserver's webhook latency goes: our webhook, a Go webhook answering the same patch, and none.

Issue 13 asks why the apiserver sees our webhook at tens of milliseconds while the handler takes about one,
and for the first to be at most 3x the second. This puts a yardstick beside ours on the real control plane
(tests/e2e/build.sh), with the product installed as in ``benchmarks/e2e_bench.py`` and no scheduler
running (the pods stay Pending, so only admission and storage cost CPU):

* **ours**: ``confidential-pods webhook serve`` (gunicorn, TLS), as installed;
* **goref**: ``benchmarks/goref -webhook-patch`` (Go: net/http, crypto/tls, encoding/json, the upstream
  AdmissionReview and Pod types) answering every review with the patch ours answers for this pod, so the
  apiserver applies the same bytes: what a webhook call costs the apiserver when the webhook costs next to
  nothing. The pod entry of the MutatingWebhookConfiguration is pointed at it for its cells;
* **none**: the stored form of the same pod (as ``e2e_bench`` phase b) in a namespace the webhook does not
  serve.

Each cell creates ``--pods`` pods from 1 and from ``--threads`` client threads (one kept-alive connection
each), targets and thread counts interleaved over ``--rounds`` rounds, and records: every create's round
trip as the client saw it; the apiserver's ``apiserver_admission_webhook_admission_duration_seconds`` for the
pod webhook (from building the AdmissionReview to the patched pod decoded: the call, and the apiserver's
own work around it) and its pod-create latency (``apiserver_request_duration_seconds``); the webhook's own
duration per review (ours: its histogram, from the body received to the response built; goref: measured
exactly, from its handler's start to its answer written); and the CPU of each process per pod.

The apiserver's histograms start at 5 ms and then 25 ms, so below 5 ms their quantiles say nothing; their
means (sum ÷ count) are exact, and the comparison uses those. ``added`` is what the webhook adds to a
create as the client sees it: the mean create with the target less the mean create without a webhook,
in the same round and at the same thread count.

    python -m benchmarks.webhook_gap [--pods 300] [--rounds 3] [--threads 8] [--json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.e2e_bench import (
    ADMISSION,
    INJECTION,
    POD_CREATE,
    REQUESTS,
    STATUS,
    WEBHOOK,
    WEBHOOK_NAME,
    WEBHOOK_REVIEW,
    confidential_pod,
    cpu_snapshot,
    cpu_used,
    create_pods,
    delete_all,
    histogram_delta,
    plain_pod,
    say,
)
from tests.e2e.harness import Binaries, ControlPlane, default_bin_dir
from tests.e2e.kube import JSON, Kube, create_namespace
from tests.e2e.processes import wait_until
from tests.e2e.product import (
    WEBHOOK_CONFIGURATION,
    WEBHOOK_CONFIGURATIONS,
    Installation,
    install,
    metric_samples,
)
from tests.machine import free_port, load_average, percentile
from tests.webhook.samples import admission_review

SERVED_NS, UNSERVED_NS = "gap-served", "gap-unserved"
TARGETS = ("ours", "goref", "none")
GOREF = "webhook (goref)"


@dataclass
class Cell:
    """One target at one number of client threads: ``pods`` creates and what they cost."""

    target: str
    threads: int
    round: int
    pods: int
    seconds: float = 0.0
    #: Client round trip of each create, ms: p50 / p90 / p99.
    client_ms: dict[str, float] = field(default_factory=dict)
    apiserver_create: dict[str, float] = field(default_factory=dict)
    apiserver_webhook: dict[str, float] = field(default_factory=dict)
    #: The webhook's own duration per review (ours: its histogram; goref: exact), ms.
    handler: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_pod: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    loadavg_before: str = ""
    loadavg_after: str = ""


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        nan = float("nan")
        return {"count": 0, "mean_ms": nan, "p50_ms": nan, "p90_ms": nan, "p99_ms": nan}
    return {
        "count": len(values),
        "mean_ms": sum(values) / len(values),
        **{f"p{round(q * 100)}_ms": percentile(values, q) for q in (0.5, 0.9, 0.99)},
    }


class Goref:
    """benchmarks/goref serving the reference webhook with ``patch``, on the webhook's own certificate."""

    def __init__(self, patch: list[JSON], cert_dir: Path, workdir: Path) -> None:
        binary = default_bin_dir() / "goref"
        if not binary.exists():
            raise SystemExit(f"{binary} is missing: run tests/e2e/build.sh (it builds benchmarks/goref)")
        patch_file = workdir / "patch.json"
        patch_file.write_text(json.dumps(patch))
        self.port = free_port()
        self.context = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        self.log = (workdir / "goref-webhook.log").open("wb")
        command = [str(binary), "-webhook-patch", str(patch_file), "-port", str(self.port),
                   "-tls-cert", str(cert_dir / "tls.crt"), "-tls-key", str(cert_dir / "tls.key")]  # fmt: skip
        self.popen = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout=30, what="goref's webhook /healthz")

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, context=self.context, timeout=5) as response:
            return bytes(response.read())

    def _ready(self) -> bool:
        with contextlib.suppress(OSError):
            return self._get("/healthz").strip() == b"ok"
        return False

    def durations_ms(self) -> list[float]:
        """What it answered since the last call, ms per review."""
        return [ns / 1e6 for ns in json.loads(self._get("/stats"))["durations_ns"]]

    def close(self) -> None:
        self.popen.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self.popen.kill()
        self.log.close()


def dry_run_create(kube: Kube, namespace: str, name: str) -> JSON:
    """The benchmark's pod as the apiserver would store it in ``namespace`` (admitted, not stored)."""
    path = f"/api/v1/namespaces/{namespace}/pods"
    return kube.request("POST", path, body=confidential_pod(name), params={"dryRun": "All"})


def comparable(pod: JSON) -> str:
    """The pod's spec, but for the name of its service-account token volume (random per pod)."""
    return re.sub(r"kube-api-access-[a-z0-9]+", "kube-api-access-*", json.dumps(pod["spec"], sort_keys=True))


def our_patch(installation: Installation, kube: Kube) -> tuple[list[JSON], JSON]:
    """The patch our webhook answers for the benchmark's pod as the apiserver sends it (defaulted), and the
    pod as stored after it (a dry-run create through the webhook)."""
    defaulted = dry_run_create(kube, UNSERVED_NS, "gap")
    defaulted["metadata"]["namespace"] = SERVED_NS
    review = admission_review(defaulted, namespace=SERVED_NS)
    webhook = installation.webhook
    request = urllib.request.Request(
        webhook.url + "/mutate",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=webhook.context(), timeout=10) as answer:
        response = json.loads(answer.read())["response"]
    if not response.get("patch"):
        raise RuntimeError(f"our webhook did not mutate the benchmark's pod: {response}")
    patch: list[JSON] = json.loads(base64.b64decode(response["patch"]))
    stored = dry_run_create(kube, SERVED_NS, "gap")
    if STATUS not in stored["metadata"].get("annotations", {}):
        raise RuntimeError(f"the webhook did not mutate the template pod: {stored['metadata']}")
    return patch, stored


def point_pod_webhook(kube: Kube, base_url: str) -> None:
    """The pod entry of our MutatingWebhookConfiguration calls ``base_url`` + its path."""
    path = f"{WEBHOOK_CONFIGURATIONS}/{WEBHOOK_CONFIGURATION}"
    configuration = kube.get(path)
    for webhook in configuration["webhooks"]:
        if webhook["name"] == WEBHOOK_NAME:
            url = webhook["clientConfig"]["url"]
            webhook["clientConfig"]["url"] = base_url + url[url.index("/", len("https://")) :]
    kube.request("PUT", path, body=configuration)


def wait_served_by(kube: Kube, counts: Any, what: str) -> None:
    """Until a dry-run create in the served namespace is answered by the webhook whose ``counts()`` grows."""

    def answered() -> bool:
        before = counts()
        dry_run_create(kube, SERVED_NS, "probe")
        return bool(counts() > before)

    wait_until(answered, timeout=60, what=f"the apiserver to call {what}")


@dataclass
class Gap:
    args: argparse.Namespace
    plane: ControlPlane
    installation: Installation
    kube: Kube
    goref: Goref
    stored: JSON
    processes: dict[str, int]

    def scrape(self, server: str) -> Any:
        if server == "apiserver":
            return metric_samples(self.kube.get_text("/metrics"))
        return metric_samples(self.installation.webhook.get("/metrics")[1])

    def ours_reviews(self) -> float:
        return self.installation.webhook.reviews()

    def cell(self, target: str, threads: int, round_: int) -> Cell:
        pods = self.args.pods
        cell = Cell(target=target, threads=threads, round=round_, pods=pods, loadavg_before=load_average())
        prefix = f"r{round_}-{target}-{threads}"
        if target == "none":
            namespace = UNSERVED_NS
            bodies = [plain_pod(f"{prefix}-{i:05d}", self.stored) for i in range(pods)]
        else:
            namespace = SERVED_NS
            bodies = [confidential_pod(f"{prefix}-{i:05d}") for i in range(pods)]
        self.goref.durations_ms()  # what it answered before this cell
        before = {server: self.scrape(server) for server in ("apiserver", "webhook")}
        cpu_before = cpu_snapshot(self.processes)
        times: list[float] = []
        _, cell.seconds, errors = create_pods(self.plane.api, namespace, bodies, threads, times)
        cell.errors = len(errors)
        cpu = cpu_used(self.processes, cpu_before)
        after = {server: self.scrape(server) for server in ("apiserver", "webhook")}
        cell.client_ms = percentiles(times)
        cell.apiserver_create = histogram_delta(
            (before["apiserver"], after["apiserver"]), REQUESTS, POD_CREATE
        )
        cell.apiserver_webhook = histogram_delta(
            (before["apiserver"], after["apiserver"]), ADMISSION, {"name": WEBHOOK_NAME}
        )
        if target == "ours":
            cell.handler = histogram_delta((before["webhook"], after["webhook"]), WEBHOOK_REVIEW)
        elif target == "goref":
            cell.handler = percentiles(self.goref.durations_ms())
        cell.cpu_ms_per_pod = {name: round(seconds * 1000 / pods, 3) for name, seconds in cpu.items()}
        cell.loadavg_after = load_average()
        delete_all(self.plane.api, self.kube, namespace, self.args.threads)
        return cell

    def point(self, target: str) -> None:
        if target == "ours":
            point_pod_webhook(self.kube, self.installation.webhook.url)
            wait_served_by(self.kube, self.ours_reviews, "our webhook")
        elif target == "goref":
            point_pod_webhook(self.kube, self.goref.url)
            wait_served_by(self.kube, lambda: len(self.goref.durations_ms()), "goref's webhook")


def added_ms(cell: Cell, cells: Sequence[Cell]) -> float:
    """What the webhook added to ``cell``'s mean create: less the same round's create without one."""
    for other in cells:
        if (other.target, other.round, other.threads) == ("none", cell.round, cell.threads):
            return float(cell.client_ms["mean_ms"] - other.client_ms["mean_ms"])
    return math.nan


def summary(cells: Sequence[Cell]) -> dict[str, Any]:
    """Per target and thread count, medians over the rounds: exact means where the apiserver's histograms
    are too coarse for a p50, the client's and the handlers' p50s, and the CPU of each process per pod."""
    table: dict[str, Any] = {}

    def median(values: Sequence[float]) -> float:
        values = [v for v in values if not math.isnan(v)]
        return round(statistics.median(values), 3) if values else math.nan

    for threads in sorted({c.threads for c in cells}):
        for target in TARGETS:
            group = [c for c in cells if c.target == target and c.threads == threads]
            if not group:
                continue
            hooked = target != "none"
            row: dict[str, Any] = {
                "client_create_p50_ms": median([c.client_ms["p50_ms"] for c in group]),
                "client_create_mean_ms": median([c.client_ms["mean_ms"] for c in group]),
                "apiserver_create_mean_ms": median([c.apiserver_create["mean_ms"] for c in group]),
                "added_ms": median([added_ms(c, cells) for c in group]) if hooked else math.nan,
                "apiserver_webhook_mean_ms": median([c.apiserver_webhook["mean_ms"] for c in group])
                if hooked
                else math.nan,
                "handler_mean_ms": median([c.handler["mean_ms"] for c in group]) if hooked else math.nan,
                "handler_p50_ms": median([c.handler["p50_ms"] for c in group]) if hooked else math.nan,
                "creates_per_s": median([c.pods / c.seconds for c in group]),
                "cpu_ms_per_pod": {
                    name: median([c.cpu_ms_per_pod.get(name, 0.0) for c in group])
                    for name in group[0].cpu_ms_per_pod
                },
            }
            if hooked:
                row["apiserver_webhook_over_handler"] = round(
                    row["apiserver_webhook_mean_ms"] / row["handler_mean_ms"], 2
                )
            table[f"{target}, {threads} thread{'s' if threads > 1 else ''}"] = row
    return table


def report(document: Mapping[str, Any]) -> None:
    print(
        f"\n{document['pods']} pods per cell, {document['rounds']} rounds, {os.cpu_count()} CPUs, "
        "no scheduler running; medians over the rounds, ms"
    )
    columns = {
        "client create p50": "client_create_p50_ms",
        "client create mean": "client_create_mean_ms",
        "added by webhook": "added_ms",
        "apiserver->webhook": "apiserver_webhook_mean_ms",
        "handler mean": "handler_mean_ms",
        "ratio of means": "apiserver_webhook_over_handler",
        "handler p50": "handler_p50_ms",
        "creates/s": "creates_per_s",
    }
    print(f"{'':<18}" + "".join(f"{h:>20}" for h in columns))
    for name, row in document["summary"].items():
        print(f"{name:<18}" + "".join(f"{row.get(key, math.nan):>20.2f}" for key in columns.values()))
    print("(apiserver->webhook: apiserver_admission_webhook_admission_duration_seconds, mean)")
    print("CPU ms per pod:")
    names = sorted({n for row in document["summary"].values() for n in row["cpu_ms_per_pod"]})
    print(f"{'':<18}" + "".join(f"{n[:19]:>20}" for n in names))
    for name, row in document["summary"].items():
        print(f"{name:<18}" + "".join(f"{row['cpu_ms_per_pod'].get(n, 0.0):>20.3f}" for n in names))
    print(f"load average: {document['loadavg_start']} at the start, {document['loadavg_end']} at the end")


def measure(
    args: argparse.Namespace, plane: ControlPlane, installation: Installation, workdir: Path
) -> dict[str, Any]:
    kube = plane.api.admin_client()
    installation.scheduler.stop()  # Pending pods: admission and storage only
    create_namespace(kube, SERVED_NS)
    create_namespace(kube, UNSERVED_NS, labels={INJECTION: "disabled"})
    patch, stored = our_patch(installation, kube)
    say(f"our webhook's patch for the pod: {len(patch)} operations, {len(json.dumps(patch))} bytes")
    goref = Goref(patch, installation.cert_dir, workdir)
    try:
        webhook = installation.webhook.process
        assert webhook is not None
        processes = {
            "kube-apiserver": plane.api.process.popen.pid,
            "etcd": plane.etcd.process.popen.pid if plane.etcd else 0,
            WEBHOOK: webhook.popen.pid,
            GOREF: goref.popen.pid,
        }
        gap = Gap(args, plane, installation, kube, goref, stored, processes)
        gap.point("goref")
        if comparable(dry_run_create(kube, SERVED_NS, "gap")) != comparable(stored):
            raise RuntimeError("goref's patch does not leave the pod as ours does")
        cells: list[Cell] = []
        start_load = load_average()
        threads = sorted({1, args.threads})
        for round_ in range(1, args.rounds + 1):
            order = TARGETS if round_ % 2 else tuple(reversed(TARGETS))
            for target in order:
                gap.point(target)
                for count in threads:
                    say(f"round {round_}: {target}, {count} thread(s) ...")
                    cells.append(gap.cell(target, count, round_))
        gap.point("ours")
    finally:
        goref.close()
    return {
        "pods": args.pods,
        "rounds": args.rounds,
        "threads": threads,
        "patch_operations": len(patch),
        "patch_bytes": len(json.dumps(patch)),
        "loadavg_start": start_load,
        "loadavg_end": load_average(),
        "summary": summary(cells),
        "cells": [asdict(c) for c in cells],
    }


@contextlib.contextmanager
def product(args: argparse.Namespace) -> Iterator[tuple[ControlPlane, Installation, Path]]:
    binaries = Binaries.locate()
    log_dir = Path(tempfile.mkdtemp(prefix="webhook-gap-logs-"))
    with (
        tempfile.TemporaryDirectory(prefix="webhook-gap-") as workdir,
        ControlPlane.run(binaries, Path(workdir) / "plane", log_dir) as plane,
        install(plane, args.overlay, Path(workdir) / "install", log_dir) as installation,
    ):
        yield plane, installation, Path(workdir)
    say(f"logs: {log_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=300, help="pods per cell")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8, help="client threads of the concurrent cells")
    parser.add_argument("--overlay", default="alibaba", help="overlay of manifests/ (alibaba, intel)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args(argv)
    with product(args) as (plane, installation, workdir):
        document = measure(args, plane, installation, workdir)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        report(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
