"""Webhook throughput and latency over HTTPS keep-alive against the real server.

Starts ``confidential-pods webhook serve`` exactly as the Deployment does (gunicorn, TLS, ``connection``
workers) on 127.0.0.1 with a fresh CA, and sends AdmissionReview v1 bodies of a realistic pod
(``tests.webhook.samples.meshed_pod``: app + two sidecars, probes, env, volumes, managedFields; 7.9 KB).

* closed loop: reviews/s with several kept-alive HTTPS connections, client ``wrk`` (C, one thread;
  Debian package ``wrk``) with a Lua script that POSTs the body, or ``python`` (one process per
  connection, a pre-built request over a raw ssl socket);
* open loop: a paced sender at a steady rate (default 500/s) from several processes, one kept-alive
  connection each; latency is measured from each request's *scheduled* send time, so a stall shows
  up in the figures instead of pausing the load (no coordinated omission).

Server CPU per review is read from /proc (master + workers). The client shares the machine's cores.

    python -m benchmarks.webhook_bench                       # defaults: 2 workers x 4 threads
    python -m benchmarks.webhook_bench --matrix              # workers/threads/worker-class sweep
    python -m benchmarks.webhook_bench --profile             # pyinstrument over the flask app, in-process
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.machine import (
    children,
    cpu_seconds,
    free_port,
    load_average,
    machine_busy_seconds,
    percentile,
    stop,
)
from tests.webhook.samples import admission_review, meshed_pod
from tests.webhook.tls import issue_serving_pair, make_authority

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "profile: alibaba\naesm: host\nruntimeClass: none\n"

# ------------------------------------------------------------------ the server


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    ca_file: Path
    label: str

    def cpu_seconds(self) -> float:
        """utime + stime of the master and its live workers."""
        return cpu_seconds(self.process.pid) + sum(self.worker_cpu().values())

    def worker_cpu(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in children(self.process.pid)}


def _split(before: dict[int, float], after: dict[int, float]) -> str:
    """Each worker's share of the workers' CPU time, e.g. '52/48' (an idle worker shows as 0)."""
    used = sorted((after[pid] - before.get(pid, 0.0) for pid in after), reverse=True)
    total = sum(used) or 1.0
    return "/".join(f"{u / total * 100:.0f}" for u in used)


@contextlib.contextmanager
def running_server(
    workdir: Path, workers: int, threads: int, worker_class: str = "connection"
) -> Iterator[Server]:
    port = free_port()
    common = ["--cert", str(workdir / "tls.crt"), "--key", str(workdir / "tls.key"), "--host", "127.0.0.1"]
    config = str(workdir / "config.yaml")
    if worker_class != "sync":  # the production command line
        sizing = ["--port", str(port), "--workers", str(workers), "--threads", str(threads),
                  "--worker-class", worker_class]  # fmt: skip
        cli = [sys.executable, "-m", "confidential_pods", "--log-level", "WARNING", "webhook", "serve"]
        command = [*cli, *common, *sizing, "--config", config]
    else:  # the same serve() with another gunicorn worker class, for comparison
        code = (
            "import logging, sys; logging.basicConfig(level=logging.WARNING);"
            "from confidential_pods.settings import load_settings; from webhook.serving import serve;"
            f"sys.exit(serve(load_settings({config!r}), cert={str(workdir / 'tls.crt')!r},"
            f" key={str(workdir / 'tls.key')!r}, host='127.0.0.1', port={port}, workers={workers},"
            f" threads={threads}, worker_class={worker_class!r}))"
        )
        command = [sys.executable, "-c", code]
    log = open(workdir / f"server-{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    label = f"{workers} {worker_class} worker(s) x {threads} thread(s)"
    server = Server(process, port, workdir / "ca.crt", label)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {(workdir / f'server-{port}.log').read_text()}")
            with contextlib.suppress(OSError):
                status, _ = _post(server, b"", path="/healthz", method="GET")
                if status == 200 and len(children(process.pid)) >= workers:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        yield server
    finally:
        stop(process)
        log.close()


def _client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def _post(server: Server, body: bytes, path: str = "/mutate", method: str = "POST") -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=_client_context(server.ca_file), timeout=10
    )
    try:
        conn.request(method, path, body=body or None, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class RawClient:
    """One kept-alive HTTPS connection sending a pre-built request: far cheaper than http.client,
    so the load generator takes less of the CPU the server needs."""

    def __init__(self, port: int, ca_file: str, body: bytes) -> None:
        self.port = port
        self.context = _client_context(Path(ca_file))
        self.request = (
            b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.sock: ssl.SSLSocket | None = None

    def connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self.context.wrap_socket(raw, server_hostname="127.0.0.1")
        return self.sock

    def exchange(self) -> bool:
        """Send one review, read the whole answer; True for a 200 carrying a patch."""
        try:
            sock = self.sock or self.connect()
            sock.sendall(self.request)
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed by the server")
                buffer += chunk
            head, _, rest = buffer.partition(b"\r\n\r\n")
            match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            length = int(match.group(1)) if match else 0
            while len(rest) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed by the server")
                rest += chunk
            if re.search(rb"(?i)\r\nconnection:\s*close", head):
                self.close()
            return head.startswith(b"HTTP/1.1 200") and b'"patch"' in rest
        except OSError:
            self.close()
            return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


# ------------------------------------------------------------------ closed loop


@dataclass(frozen=True)
class Throughput:
    client: str
    connections: int
    seconds: float
    reviews: int
    errors: int
    server_cpu: float
    client_cpu: float
    machine_cpu: float
    worker_split: str
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def per_second(self) -> float:
        return self.reviews / self.seconds


WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*all")
f:close()
"""


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(text)
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def closed_loop_wrk(server: Server, body_file: Path, connections: int, seconds: float) -> Throughput:
    script = body_file.with_suffix(".lua")
    script.write_text(WRK_SCRIPT)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script),
               f"https://127.0.0.1:{server.port}/mutate"]  # fmt: skip
    cpu_before = server.cpu_seconds()
    workers_before = server.worker_cpu()
    busy_before = machine_busy_seconds()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, env={**os.environ, "BENCH_BODY": str(body_file)}
    )
    assert process.stdout is not None
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    server_cpu = server.cpu_seconds() - cpu_before
    machine_cpu = machine_busy_seconds() - busy_before
    if status != 0:
        raise RuntimeError(output)
    reviews = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    duration = _ms(re.search(r"requests in ([\d.]+\w+),", output).group(1)) / 1000  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sock_err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock_err.groups())) if sock_err else 0)
    p50 = re.search(r"\s50%\s+([\d.]+\w+)", output)
    p99 = re.search(r"\s99%\s+([\d.]+\w+)", output)
    return Throughput(
        client="wrk",
        connections=connections,
        seconds=duration,
        reviews=reviews,
        errors=errors,
        server_cpu=server_cpu,
        client_cpu=usage.ru_utime + usage.ru_stime,
        machine_cpu=machine_cpu,
        worker_split=_split(workers_before, server.worker_cpu()),
        p50_ms=_ms(p50.group(1)) if p50 else None,
        p99_ms=_ms(p99.group(1)) if p99 else None,
    )


def _python_client(port: int, ca_file: str, body: bytes, seconds: float, queue: Any) -> None:
    client = RawClient(port, ca_file, body)
    client.connect()
    done = errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if client.exchange():
            done += 1
        else:
            errors += 1
    client.close()
    usage = os.times()
    queue.put((done, errors, usage.user + usage.system))


def closed_loop_python(server: Server, body: bytes, connections: int, seconds: float) -> Throughput:
    queue: Any = multiprocessing.Queue()
    cpu_before = server.cpu_seconds()
    workers_before = server.worker_cpu()
    busy_before = machine_busy_seconds()
    started = time.monotonic()
    procs = [
        multiprocessing.Process(
            target=_python_client, args=(server.port, str(server.ca_file), body, seconds, queue)
        )
        for _ in range(connections)
    ]
    for proc in procs:
        proc.start()
    results = [queue.get() for _ in procs]
    elapsed = time.monotonic() - started
    server_cpu = server.cpu_seconds() - cpu_before
    machine_cpu = machine_busy_seconds() - busy_before
    split = _split(workers_before, server.worker_cpu())
    for proc in procs:
        proc.join()
    return Throughput(
        client="python",
        connections=connections,
        seconds=min(elapsed, seconds),
        reviews=sum(r[0] for r in results),
        errors=sum(r[1] for r in results),
        server_cpu=server_cpu,
        client_cpu=sum(r[2] for r in results),
        machine_cpu=machine_cpu,
        worker_split=split,
    )


# ------------------------------------------------------------------ open loop


@dataclass(frozen=True)
class Latency:
    rate: float
    seconds: float
    sent: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    achieved: float
    server_cpu: float
    client_cpu: float
    machine_cpu: float


def _paced_sender(
    port: int, ca_file: str, body: bytes, rate: float, seconds: float, start_at: float, queue: Any
) -> None:
    """Send at start_at + i/rate; latency = response time - scheduled time (a late send counts)."""
    client = RawClient(port, ca_file, body)
    client.connect()
    interval = 1.0 / rate
    count = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    for i in range(count):
        scheduled = start_at + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        ok = client.exchange()
        finished = time.perf_counter()
        if ok:
            latencies.append((finished - scheduled) * 1000)
        else:
            errors += 1
    client.close()
    usage = os.times()
    queue.put((latencies, errors, time.perf_counter() - start_at, usage.user + usage.system))


def open_loop(server: Server, body: bytes, rate: float, seconds: float, senders: int) -> Latency:
    queue: Any = multiprocessing.Queue()
    start_at = time.perf_counter() + 1.0  # perf_counter is CLOCK_MONOTONIC: shared by the processes
    procs = [
        multiprocessing.Process(
            target=_paced_sender,
            args=(
                server.port,
                str(server.ca_file),
                body,
                rate / senders,
                seconds,
                start_at + k / rate,
                queue,
            ),
        )
        for k in range(senders)
    ]
    for proc in procs:
        proc.start()
    time.sleep(max(0.0, start_at - time.perf_counter()))
    cpu_before = server.cpu_seconds()
    busy_before = machine_busy_seconds()
    results = [queue.get() for _ in procs]
    server_cpu = server.cpu_seconds() - cpu_before
    machine_cpu = machine_busy_seconds() - busy_before
    for proc in procs:
        proc.join()
    latencies: list[float] = sorted(latency for r in results for latency in r[0])
    errors = sum(r[1] for r in results)
    elapsed = max(r[2] for r in results)

    return Latency(
        rate=rate,
        seconds=seconds,
        sent=len(latencies) + errors,
        errors=errors,
        p50_ms=percentile(latencies, 0.50),
        p90_ms=percentile(latencies, 0.90),
        p99_ms=percentile(latencies, 0.99),
        p999_ms=percentile(latencies, 0.999),
        max_ms=latencies[-1],
        achieved=(len(latencies) + errors) / elapsed,
        server_cpu=server_cpu,
        client_cpu=sum(r[3] for r in results),
        machine_cpu=machine_cpu,
    )


# ------------------------------------------------------------------ profile


def profile(body: bytes, reviews: int) -> None:
    """Where a review's time goes inside the flask app (no TLS, no gunicorn), with pyinstrument."""
    import yaml
    from pyinstrument import Profiler

    from confidential_pods.settings import settings_from_mapping
    from webhook.app import create_app

    client = create_app(settings_from_mapping(yaml.safe_load(CONFIG))).test_client()
    environ = {"CONTENT_TYPE": "application/json"}
    for _ in range(200):
        client.post("/mutate", data=body, environ_base=environ)
    profiler = Profiler(interval=0.0002)
    started = time.perf_counter()
    with profiler:
        for _ in range(reviews):
            client.post("/mutate", data=body, environ_base=environ)
    elapsed = time.perf_counter() - started
    print(f"{reviews} reviews in-process (flask test client): {elapsed / reviews * 1e6:.0f} us/review")
    print(profiler.output_text(unicode=False, color=False, show_all=False))


# ------------------------------------------------------------------ main


def _others(result: Throughput | Latency) -> float:
    """CPU seconds other processes on the machine used meanwhile (neighbours, not this benchmark)."""
    return max(0.0, result.machine_cpu - result.server_cpu - result.client_cpu)


def _fmt_throughput(server: Server, result: Throughput) -> str:
    latency = " | - | -"
    if result.p50_ms is not None and result.p99_ms is not None:
        latency = f" | {result.p50_ms:.2f} | {result.p99_ms:.2f}"
    return (
        f"| {server.label} | {result.client} x{result.connections} conns | {result.per_second:,.0f}"
        f"{latency} | {result.server_cpu / max(result.reviews, 1) * 1e6:.0f} | "
        f"{result.client_cpu / result.seconds * 100:.0f}% | {_others(result) / result.seconds * 100:.0f}% "
        f"| {result.worker_split} | {result.errors} |"
    )


def _fmt_latency(server: Server, result: Latency) -> str:
    return (
        f"| {server.label} | {result.rate:.0f}/s for {result.seconds:.0f} s | {result.achieved:.0f}/s | "
        f"{result.p50_ms:.2f} | {result.p90_ms:.2f} | {result.p99_ms:.2f} | {result.p999_ms:.2f} | "
        f"{result.max_ms:.2f} | {result.server_cpu / result.seconds * 100:.0f}% | "
        f"{result.client_cpu / result.seconds * 100:.0f}% | {_others(result) / result.seconds * 100:.0f}% "
        f"| {result.errors} |"
    )


THROUGHPUT_HEADER = (
    "| server | client | reviews/s | p50 ms | p99 ms | server CPU us/review | client CPU | other CPU "
    "| worker CPU split % | errors |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)
LATENCY_HEADER = (
    "| server | load (open loop) | achieved | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms "
    "| server CPU | client CPU | other CPU | errors |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--worker-class", choices=["connection", "gthread", "sync"], default="connection")
    parser.add_argument("--connections", type=int, default=8, help="closed-loop keep-alive connections")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per closed-loop run")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop reviews/s")
    parser.add_argument("--open-duration", type=float, default=30.0, help="seconds of open-loop load")
    parser.add_argument(
        "--senders", type=int, default=4, help="open-loop sender processes (one connection each)"
    )
    parser.add_argument(
        "--client", choices=["wrk", "python", "both"], default="wrk" if shutil.which("wrk") else "python"
    )
    parser.add_argument(
        "--matrix",
        action="store_true",
        help="sweep workers x threads and the worker classes (connection, gthread, sync)",
    )
    parser.add_argument(
        "--profile", type=int, metavar="N", nargs="?", const=5000, help="profile N reviews in-process"
    )
    args = parser.parse_args(argv)

    body = json.dumps(admission_review(meshed_pod(), namespace="payments"), separators=(",", ":")).encode()
    if args.profile:
        profile(body, args.profile)
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    try:
        ca = make_authority()
        pair = issue_serving_pair(ca)
        (workdir / "ca.crt").write_bytes(ca.cert_pem)
        (workdir / "tls.crt").write_bytes(pair.cert_pem)
        (workdir / "tls.key").write_bytes(pair.key_pem)
        (workdir / "config.yaml").write_text(CONFIG)
        body_file = workdir / "review.json"
        body_file.write_bytes(body)
        print(f"# webhook benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        print(f"# {os.cpu_count()} CPUs; python {sys.version.split()[0]}; review body {len(body)} bytes")
        print(f"# load average before: {load_average()}")

        configs = [(args.workers, args.threads, args.worker_class)]
        if args.matrix:
            configs = [(2, 4, "connection"), (2, 8, "connection"), (1, 4, "gthread"), (2, 1, "gthread"),
                       (2, 2, "gthread"), (2, 4, "gthread"), (2, 8, "gthread"), (3, 2, "gthread"),
                       (4, 2, "gthread"), (2, 1, "sync"), (4, 1, "sync")]  # fmt: skip
        clients = ["wrk", "python"] if args.client == "both" else [args.client]
        print("\n## closed loop (HTTPS keep-alive)\n")
        print(THROUGHPUT_HEADER)
        best: tuple[float, tuple[int, int, str]] | None = None
        for workers, threads, worker_class in configs:
            with running_server(workdir, workers, threads, worker_class) as server:
                status, answer = _post(server, body)
                assert status == 200 and json.loads(answer)["response"].get("patchType") == "JSONPatch", (
                    answer
                )
                for client in clients:
                    if client == "wrk":
                        closed_loop_wrk(server, body_file, args.connections, 2)  # warm-up
                        result = closed_loop_wrk(server, body_file, args.connections, args.duration)
                    else:
                        closed_loop_python(server, body, 2, 2)  # warm-up
                        result = closed_loop_python(server, body, args.connections, args.duration)
                    print(_fmt_throughput(server, result), flush=True)
                    if worker_class != "sync" and (best is None or result.per_second > best[0]):
                        best = (result.per_second, (workers, threads, worker_class))

        latency_configs = [(args.workers, args.threads, args.worker_class)]
        if args.matrix and best is not None and best[1] != latency_configs[0]:
            latency_configs.append(best[1])
        print(f"\n## open loop, paced at {args.rate:.0f}/s ({args.senders} senders, one connection each)\n")
        print(LATENCY_HEADER)
        for workers, threads, worker_class in latency_configs:
            with running_server(workdir, workers, threads, worker_class) as server:
                open_loop(server, body, args.rate, 3, args.senders)  # warm-up
                result_l = open_loop(server, body, args.rate, args.open_duration, args.senders)
                print(_fmt_latency(server, result_l), flush=True)
        print(f"\n# load average after: {load_average()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
