"""Scheduler extender: verb latency, watch throughput and memory, against the real pieces.

* **latency** — ``confidential-pods extender serve --snapshot`` (gunicorn, one ``connection`` worker, exactly
  as shipped) over a snapshot of 5,000 nodes and 50,000 pods holding EPC; ``/filter`` and
  ``/prioritize`` with ``NodeNames`` (nodeCacheCapable) of 500 nodes (what kube-scheduler sends at
  5,000 nodes with the default percentageOfNodesToScore) and of all 5,000; one kept-alive
  http.client connection, requests one after another (as kube-scheduler does per cycle); the pod
  in the body is a realistic pending pod (~3 KB). Client-side round trip, p50/p99/max.
* **events** — watch events applied per second: (a) the pure core (``apply_event`` on decoded
  events), (b) ``json.loads`` of the line plus ``apply_event``, (c) end to end: ``LedgerFeed`` with the
  real kubernetes client reading a chunked watch from a fake apiserver in another process.
* **rss** — ``confidential-pods extender serve --kubeconfig`` listing 15,000 nodes and 150,000 pods
  from a fake apiserver (paginated, realistic ~4 KB pods): RSS of the gunicorn worker once ready
  (and its peak, VmHWM), plus the ledger alone in a fresh interpreter.

    python -m benchmarks.extender_bench                  # everything (a few minutes on 2 cores)
    python -m benchmarks.extender_bench latency events   # some sections
    python -m benchmarks.extender_bench profile          # pyinstrument over filter/prioritize in-process
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import multiprocessing
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.extender import scheduler_json as sj
from tests.fakeapi import write_kubeconfig
from tests.fakecluster import event_line, status
from tests.machine import children, fetch, free_port, load_average, memory_kib, percentile, stop
from tests.machine import tree_cpu_seconds as server_cpu_seconds
from tests.webhook import samples

ROOT = Path(__file__).resolve().parent.parent

RES = "alibabacloud.com/sgx_epc_MiB"
CONFIG = "profile: alibaba\n"

#: What the apiserver answers a Binding it created.
BINDING_CREATED = b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201}'
#: EPC of each pod of the cycle section, and of each of its nodes (room for every server's pods), MiB.
CYCLE_EPC_MIB = 1
CYCLE_NODE_EPC_MIB = 4096

# ------------------------------------------------------------------ objects


def lean_node(i: int) -> dict[str, Any]:
    """A Node with only what the extender reads, for a snapshot of thousands that loads fast."""
    allocatable = {"cpu": "31850m", "memory": "125Gi", "pods": "110", RES: str(64 + (i % 5) * 32)}
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": f"node-{i:05d}", "uid": f"0000-node-{i:08d}", "resourceVersion": str(10 + i)},
        "status": {"allocatable": allocatable, "capacity": dict(allocatable)},
    }


def lean_pod(i: int, node: str, epc_mib: int) -> dict[str, Any]:
    """A running pod with only what the extender reads (~0.5 KB), for a snapshot of tens of thousands."""
    app = {
        "name": "app",
        "image": "registry.example.com/payments/enclave-api:2.14.3",
        "resources": {
            "requests": {"cpu": "500m", "memory": "768Mi", RES: str(epc_mib)},
            "limits": {"memory": "1Gi", RES: str(epc_mib)},
        },
    }
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": f"enclave-{i:06d}",
            "namespace": f"team-{i % 40}",
            "uid": f"6f1c2d3e-0000-4000-8000-{i:012d}",
            "resourceVersion": str(100000 + i),
        },
        "spec": {"nodeName": node, "containers": [app]},
        "status": {"phase": "Running"},
    }


#: What the controller manager and the kubelet leave in a running pod's managedFields.
MANAGED_FIELDS = [
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "v1",
        "time": "2026-11-26T09:12:44Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {
                "f:generateName": {},
                "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}},
                "f:ownerReferences": {".": {}, 'k:{"uid":"5e0b1f0e-3a6f-4c47-9a43-1c2b8d6e0f11"}': {}},
            },
            "f:spec": {
                "f:containers": {
                    'k:{"name":"app"}': {
                        ".": {},
                        "f:image": {},
                        "f:name": {},
                        "f:resources": {".": {}, "f:limits": {}, "f:requests": {}},
                    }
                }
            },
        },
    },
    {
        "manager": "kubelet",
        "operation": "Update",
        "apiVersion": "v1",
        "time": "2026-11-26T09:13:02Z",
        "fieldsType": "FieldsV1",
        "subresource": "status",
        "fieldsV1": {
            "f:status": {
                "f:conditions": {},
                "f:containerStatuses": {},
                "f:hostIP": {},
                "f:phase": {},
                "f:podIP": {},
                "f:podIPs": {},
                "f:startTime": {},
            }
        },
    },
]
POD_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")


def bound_pod(i: int, node: str, epc_mib: int, *, phase: str = "Running") -> dict[str, Any]:
    """A running pod as the apiserver lists it (~4 KB): the tests' pod after admission
    (``tests.extender.scheduler_json.pod``), started by the kubelet, with managedFields and status."""
    pod = sj.pod(
        f"enclave-{i:06d}",
        namespace=f"team-{i % 40}",
        epc_mib=epc_mib,
        uid=f"6f1c2d3e-0000-4000-8000-{i:012d}",
        node_name=node,
        phase=phase,
    )
    pod = {"kind": "Pod", "apiVersion": "v1", **pod}
    pod["metadata"].update(
        {
            "generateName": "enclave-7c9f8d6b5-",
            "resourceVersion": str(100000 + i),
            "managedFields": MANAGED_FIELDS,
        }
    )
    pod["spec"]["containers"][0].update(
        {
            "args": ["--listen=:8443", "--config=/etc/payments/config.yaml"],
            "ports": [{"name": "https", "containerPort": 8443, "protocol": "TCP"}],
            "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "SGX_AESM_ADDR", "value": "1"}],
            "volumeMounts": [
                {"name": "aesmd", "mountPath": "/var/run/aesmd"},
                {
                    "name": "kube-api-access-9xq2c",
                    "readOnly": True,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                },
            ],
        }
    )
    pod["spec"]["volumes"] = [
        {"name": "aesmd", "hostPath": {"path": "/var/run/aesmd", "type": "Directory"}},
        samples.service_account_volume("kube-api-access-9xq2c"),
    ]
    ip = f"10.244.{i % 250}.{i % 200 + 2}"
    started = {
        "name": "app",
        "state": {"running": {"startedAt": "2026-11-26T09:13:01Z"}},
        "ready": True,
        "restartCount": 0,
        "started": True,
        "image": "registry.example.com/payments/tokenizer:1.4.2",
        "imageID": "registry.example.com/payments/tokenizer@sha256:" + "ab" * 32,
        "containerID": "containerd://" + "cd" * 32,
    }
    pod["status"].update(
        {
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": "2026-11-26T09:13:02Z",
                }
                for t in POD_CONDITIONS
            ],
            "hostIP": "10.0.3.17",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": "2026-11-26T09:12:44Z",
            "containerStatuses": [started],
        }
    )
    return pod


def pending_pod(epc_mib: int = 16) -> dict[str, Any]:
    """The pod kube-scheduler asks about (~3 KB): :func:`bound_pod` before it was bound."""
    pod = bound_pod(999999, "", epc_mib)
    pod["status"] = {"phase": "Pending", "qosClass": pod["status"]["qosClass"]}
    return pod


def realistic_node(name: str, uid: str, epc_mib: int = 64) -> dict[str, Any]:
    """A Node as the apiserver lists it (the tests' ``scheduler_json.node``), with 64 MiB of EPC."""
    node = sj.node(name, epc_mib)
    node["metadata"].update({"uid": uid, "resourceVersion": "7"})
    node["spec"]["providerID"] = f"cn-hangzhou.i-{name}"
    return node


def _template(obj: dict[str, Any], fields: dict[str, str]) -> str:
    """obj serialized once as a %-format string: sentinel values become %(key)s."""
    text = json.dumps(obj, separators=(",", ":")).replace("%", "%%")
    for key, sentinel in fields.items():
        text = text.replace(sentinel, f"%({key})s")
    return text


def pod_template() -> str:
    pod = bound_pod(0, "@@NODE@@", 0)
    meta = pod["metadata"]
    meta.update({"name": "@@NAME@@", "uid": "@@UID@@", "namespace": "@@NS@@", "resourceVersion": "@@RV@@"})
    res = pod["spec"]["containers"][0]["resources"]
    res["requests"][RES] = res["limits"][RES] = "@@EPC@@"
    pod["status"]["phase"] = "@@PHASE@@"
    fields = {
        "node": "@@NODE@@",
        "name": "@@NAME@@",
        "uid": "@@UID@@",
        "ns": "@@NS@@",
        "rv": "@@RV@@",
        "epc": "@@EPC@@",
        "phase": "@@PHASE@@",
    }
    return _template(pod, fields)


def pod_values(i: int, nodes: int, rv: int, phase: str = "Running") -> dict[str, Any]:
    return {
        "node": f"node-{i % nodes:05d}",
        "name": f"enclave-{i:06d}",
        "uid": f"6f1c2d3e-0000-4000-8000-{i:012d}",
        "ns": f"team-{i % 40}",
        "rv": rv,
        "epc": 1 + i % 8,
        "phase": phase,
    }


# ------------------------------------------------------------------ helpers


def http_get(port: int, path: str) -> tuple[int, bytes]:
    return fetch(http.client.HTTPConnection("127.0.0.1", port, timeout=10), "GET", path)


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float, path: str = "/readyz") -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError):
            if http_get(port, path)[0] == 200:
                return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError("server not ready in time")


def service_link_variables(services: int) -> dict[str, str]:
    """The variables kubelet gives a pod for each of ``services`` Services of its namespace (one port each),
    unless ``enableServiceLinks: false``: what a pod's environment holds in a busy namespace."""
    variables = {}
    for i in range(services):
        name, ip = f"SERVICE_{i:03d}", f"10.96.{i // 250}.{i % 250 + 1}"
        variables |= {
            f"{name}_SERVICE_HOST": ip,
            f"{name}_SERVICE_PORT": "443",
            f"{name}_PORT": f"tcp://{ip}:443",
            f"{name}_PORT_443_TCP": f"tcp://{ip}:443",
            f"{name}_PORT_443_TCP_PROTO": "tcp",
            f"{name}_PORT_443_TCP_PORT": "443",
            f"{name}_PORT_443_TCP_ADDR": ip,
        }
    return variables


@contextlib.contextmanager
def extender_serve(
    args: list[str], workdir: Path, timeout: float, root: Path = ROOT, services: int = 0
) -> Iterator[tuple[int, subprocess.Popen[bytes], float]]:
    port = free_port()
    config = workdir / "config.yaml"
    config.write_text(CONFIG)
    log = (workdir / "serve.log").open("wb")
    command = [
        sys.executable,
        "-m",
        "confidential_pods",
        "--log-level",
        "WARNING",
        "extender",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(config),
        *args,
    ]
    # ``python -m`` imports from the working directory first: ``root`` chooses the checkout that serves.
    environment = os.environ | service_link_variables(services)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=environment)
    try:
        ready_after = wait_ready(port, process, timeout)
        yield port, process, ready_after
    finally:
        stop(process)
        log.close()


# ------------------------------------------------------------------ latency


def write_snapshot(path: Path, nodes: int, pods: int) -> None:
    items: list[dict[str, Any]] = [lean_node(i) for i in range(nodes)]
    items += [lean_pod(i, f"node-{i % nodes:05d}", 1 + i % 8) for i in range(pods)]
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def latency(nodes: int, pods: int, requests: int) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        snapshot = workdir / "cluster.json"
        write_snapshot(snapshot, nodes, pods)
        size = snapshot.stat().st_size / 1e6
        with extender_serve(["--snapshot", str(snapshot)], workdir, timeout=900) as (
            port,
            process,
            ready_after,
        ):
            lines.append(
                f"served: `extender serve --snapshot` (gunicorn, 1 connection worker), "
                f"{nodes} nodes, {pods} pods; "
                f"snapshot {size:.1f} MB JSON loaded and ready after {ready_after:.1f} s"
            )
            pod = pending_pod(16)
            rng = random.Random(7)
            names = [f"node-{i:05d}" for i in range(nodes)]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for verb in ("filter", "prioritize"):
                for count in sorted({min(500, nodes), nodes}):
                    samples = [sorted(rng.sample(names, count)) for _ in range(16)]
                    bodies = [json.dumps({"Pod": pod, "NodeNames": s}).encode() for s in samples]
                    n = requests if count <= 500 else max(200, requests // 4)
                    timed_calls(conn, verb, bodies, 50)  # warm-up
                    times, payload = timed_calls(conn, verb, bodies, n)
                    answer = json.loads(payload)
                    passed = len(answer.get("NodeNames") or []) if verb == "filter" else len(answer)
                    lines.append(
                        f"{verb:<10} {count:>5} NodeNames: p50 {percentile(times, 0.5):6.2f} ms  "
                        f"p99 {percentile(times, 0.99):6.2f} ms  max {max(times):6.2f} ms  "
                        f"({n} requests, body {len(bodies[0]) / 1024:.0f} KiB, "
                        f"{passed} nodes in answer)"
                    )
            conn.close()
            worker = children(process.pid)
            rss = {pid: memory_kib(pid) for pid in [process.pid, *worker]}
            lines.append(
                "RSS after the run: "
                + ", ".join(
                    f"{'master' if p == process.pid else 'worker'} {v['VmRSS'] / 1024:.0f} MB"
                    for p, v in rss.items()
                )
            )
    return lines


# ------------------------------------------------------------------ fake apiserver (another process)


def fake_apiserver(
    port: int,
    nodes: int,
    pods: int,
    watch_events: int,
    ready: Any,
    gone_after: Any,
    pod_watches: Any,
    node_epc_mib: int = 64,
) -> None:
    """List pages generated on the fly from templates; the first pod watch streams ``watch_events``.

    When ``gone_after`` is set, the first pod watch waits for it and then answers ERROR 410 (the
    client relists). ``pod_watches`` counts pod watch requests.

    Not the tests' fake apiserver (tests/fakeapi.py): that one holds a deep copy of every object behind
    one lock and scans its history for each watch event, where this one generates 150,000 ~4 KB pods from a
    template page by page and streams 100,000 events as fast as the socket takes them, in its own process
    so that none of its CPU counts against the process measured. It shares the tests' Status and event
    line (tests/fakecluster.py)."""
    node = realistic_node("@@NAME@@", "@@UID@@", node_epc_mib)
    node_tmpl = _template(node, {"name": "@@NAME@@", "uid": "@@UID@@"})
    tmpl = pod_template()
    streamed = threading.Event()
    watchers: list[queue.SimpleQueue[bytes]] = []  # open pod watches, fed by bindings (cycle)
    watchers_lock = threading.Lock()
    bound_rv = itertools.count(10_000_000)

    def node_json(i: int) -> str:
        return node_tmpl % {"name": f"node-{i:05d}", "uid": f"0000-node-{i:08d}"}

    def page(kind: str, query: dict[str, str]) -> bytes:
        total = nodes if kind == "nodes" else 0 if nominated(query) else pods
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or total or 1)
        end = min(total, start + limit)
        if kind == "nodes":
            items = [node_json(i) for i in range(start, end)]
        else:
            items = [tmpl % pod_values(i, nodes, 5000) for i in range(start, end)]
        meta = {"resourceVersion": "5000"} | ({"continue": str(end)} if end < total else {})
        head = json.dumps({"kind": "List", "apiVersion": "v1", "metadata": meta})[:-1]
        return (head + ',"items":[' + ",".join(items) + "]}").encode()

    def nominated(query: dict[str, str]) -> bool:
        return "status.nominatedNodeName" in query.get("fieldSelector", "")

    def events() -> Iterator[bytes]:
        rng = random.Random(3)
        live: list[int] = []
        next_index = pods
        for k in range(watch_events):
            rv = 6000 + k
            roll = rng.random()
            if roll < 0.6 or not live:
                i, kind = next_index, "ADDED"
                next_index += 1
                live.append(i)
                obj = tmpl % pod_values(i, nodes, rv)
            elif roll < 0.9:
                i, kind = rng.choice(live), "MODIFIED"
                obj = tmpl % pod_values(i, nodes, rv, "Running" if rng.random() < 0.7 else "Succeeded")
            else:
                i, kind = live.pop(rng.randrange(len(live))), "DELETED"
                obj = tmpl % pod_values(i, nodes, rv)
            yield b'{"type":"%s","object":%s}\n' % (kind.encode(), obj.encode())
        marker = tmpl % (pod_values(10**9, nodes, 6000 + watch_events) | {"name": "marker", "uid": "marker"})
        yield b'{"type":"ADDED","object":%s}\n' % marker.encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as Go's net/http: headers and body are written apart

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            kind = url.path.rsplit("/", 1)[-1]
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            if nominated(query):
                kind = "nominated pods"  # every pod here is assigned: an empty list, then a silent watch
            if query.get("watch") != "true":
                body = page(kind, query)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if kind == "pods":
                with pod_watches.get_lock():
                    pod_watches.value += 1
                    first = pod_watches.value == 1
                if first and gone_after is not None:
                    gone_after.wait()
                    line = event_line({"type": "ERROR", "object": status(410, "Expired", "compacted")})
                    self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(line), line))
                    self.wfile.flush()
                    return
            if kind == "pods" and not watch_events:  # bindings become MODIFIED events, as they happen
                lines: queue.SimpleQueue[bytes] = queue.SimpleQueue()
                with watchers_lock:
                    watchers.append(lines)
                while True:
                    line = lines.get()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
            if kind == "pods" and watch_events and not streamed.is_set():
                streamed.set()
                buffer = bytearray()
                for line in events():
                    buffer += b"%x\r\n%s\r\n" % (len(line), line)
                    if len(buffer) > 1 << 16:
                        self.wfile.write(buffer)
                        buffer.clear()
                self.wfile.write(buffer)
                self.wfile.flush()
            time.sleep(3600)

        def do_POST(self) -> None:
            """A pod's Binding (/api/v1/namespaces/NS/pods/NAME/binding): 201, and the bound pod as a
            MODIFIED event on every open pod watch."""
            binding = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            _, _, _, _, namespace, _, name, _ = urlsplit(self.path).path.split("/")
            values = {
                "node": binding["target"]["name"],
                "name": name,
                "uid": cycle_uid(name),
                "ns": namespace,
                "rv": next(bound_rv),
                "epc": CYCLE_EPC_MIB,
                "phase": "Pending",
            }
            line = b'{"type":"MODIFIED","object":%s}\n' % (tmpl % values).encode()
            with watchers_lock:
                for lines in watchers:
                    lines.put(line)
            body = BINDING_CREATED
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    ready.set()
    server.serve_forever()


@contextlib.contextmanager
def fake_apiserver_process(
    nodes: int,
    pods: int,
    watch_events: int = 0,
    gone_after: Any = None,
    pod_watches: Any = None,
    node_epc_mib: int = 64,
) -> Iterator[int]:
    port = free_port()
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    pod_watches = pod_watches if pod_watches is not None else ctx.Value("i", 0)
    process = ctx.Process(
        target=fake_apiserver,
        args=(port, nodes, pods, watch_events, ready, gone_after, pod_watches, node_epc_mib),
        daemon=True,
    )
    process.start()
    ready.wait(30)
    try:
        yield port
    finally:
        process.terminate()
        process.join(10)


# ------------------------------------------------------------------ events


def events(nodes: int, pods: int, count: int) -> list[str]:
    from confidential_pods.profiles import PROFILES
    from extender.ledger import EpcLedger
    from extender.podepc import pod_facts
    from extender.watchevents import apply_event

    profile = PROFILES["alibaba"]
    lines = []
    tmpl = pod_template()
    ledger = EpcLedger()
    for i in range(nodes):
        ledger.set_node(f"node-{i:05d}", 128 * 2**20)
    listed = [pod_facts(json.loads(tmpl % pod_values(i, nodes, 5000)), profile) for i in range(pods)]
    ledger.replace({n: 128 * 2**20 for n in ledger.nodes()}, [f for f in listed if f is not None])
    rng = random.Random(5)
    raw_lines = []
    for k in range(count):
        i = rng.randrange(pods * 2)
        kind = "ADDED" if i >= pods else rng.choice(["MODIFIED", "MODIFIED", "DELETED"])
        phase = "Succeeded" if rng.random() < 0.1 else "Running"
        raw_lines.append(f'{{"type":"{kind}","object":{tmpl % pod_values(i, nodes, 6000 + k, phase)}}}')
    size = sum(len(x) for x in raw_lines) / len(raw_lines)
    decoded = [json.loads(x) for x in raw_lines]
    for label, decode in (("apply_event on decoded events", False), ("json.loads + apply_event", True)):
        best = 0.0
        for _ in range(3):
            start = time.perf_counter()
            if decode:
                for x in raw_lines:
                    apply_event(ledger, "Pod", json.loads(x), profile)
            else:
                for e in decoded:
                    apply_event(ledger, "Pod", e, profile)
            best = max(best, count / (time.perf_counter() - start))
        lines.append(
            f"{label:<30} {best:>8,.0f} events/s ({count} events of {size / 1024:.1f} KiB, "
            f"ledger {nodes} nodes / {pods} pods)"
        )
    decoded.clear()
    raw_lines.clear()
    lines.append(end_to_end_events(nodes, pods, count))
    return lines


def end_to_end_events(nodes: int, pods: int, count: int) -> str:
    import kubernetes.client

    from confidential_pods.profiles import PROFILES
    from extender.ledger import EpcLedger
    from extender.watching import LedgerFeed

    with fake_apiserver_process(nodes, pods, count) as port:
        configuration = kubernetes.client.Configuration()
        configuration.host = f"http://127.0.0.1:{port}"
        ledger = EpcLedger()
        feed = LedgerFeed(kubernetes.client.ApiClient(configuration), ledger, PROFILES["alibaba"])
        started = time.perf_counter()
        feed.start()
        while not feed.ready():
            time.sleep(0.005)
        listed, cpu = time.perf_counter(), time.process_time()
        while ledger.pod("marker") is None:
            time.sleep(0.005)
        done, cpu = time.perf_counter(), time.process_time() - cpu
        feed.stop(timeout=1)
    rate = (count + 1) / (done - listed)
    return (
        f"end to end (LedgerFeed, kubernetes client, chunked watch from a fake apiserver process): "
        f"{rate:,.0f} events/s wall, {(count + 1) / cpu:,.0f} events per CPU-second of the feed process; "
        f"initial list of {nodes} nodes + {pods} pods took {listed - started:.1f} s"
    )


# ------------------------------------------------------------------ rss


LEDGER_ONLY = r"""
import gc, json, sys
from benchmarks.extender_bench import pod_template, pod_values
from tests.machine import memory_kib
from confidential_pods.profiles import PROFILES
from extender.ledger import EpcLedger
from extender.watchevents import compact_pod_facts
import extender.watching, extender.app  # what the serving process imports
nodes, pods = int(sys.argv[1]), int(sys.argv[2])
gc.collect()
before = memory_kib(__import__("os").getpid())["VmRSS"]
profile = PROFILES["alibaba"]
tmpl = pod_template()
ledger = EpcLedger()
facts = (compact_pod_facts(json.loads(tmpl % pod_values(i, nodes, 1)), profile) for i in range(pods))
ledger.replace({f"node-{i:05d}": 128 << 20 for i in range(nodes)}, (f for f in facts if f is not None))
gc.collect()
after = memory_kib(__import__("os").getpid())["VmRSS"]
print(json.dumps({"before": before, "after": after, "pods": ledger.pod_count()}))
"""


def rss(nodes: int, pods: int) -> list[str]:
    lines = []
    ctx = multiprocessing.get_context("fork")
    gone_after, pod_watches = ctx.Event(), ctx.Value("i", 0)
    with (
        fake_apiserver_process(nodes, pods, gone_after=gone_after, pod_watches=pod_watches) as api_port,
        tempfile.TemporaryDirectory() as tmp,
    ):
        workdir = Path(tmp)
        kubeconfig = write_kubeconfig(workdir / "kubeconfig", f"http://127.0.0.1:{api_port}", token="bench")
        with extender_serve(["--kubeconfig", str(kubeconfig)], workdir, timeout=1200) as (
            port,
            process,
            ready_after,
        ):
            time.sleep(2)
            workers = children(process.pid)
            status = {pid: memory_kib(pid) for pid in workers}
            master = memory_kib(process.pid)
            _, inspect = http_get(port, "/inspect")
            summary = json.loads(inspect)
            for values in status.values():
                lines.append(
                    f"`extender serve --kubeconfig` at {summary.get('nodeCount')} nodes / "
                    f"{summary.get('podCount')} pods: worker RSS {values['VmRSS'] / 1024:.0f} MB "
                    f"(peak {values['VmHWM'] / 1024:.0f} MB during the paginated list), "
                    f"gunicorn master {master['VmRSS'] / 1024:.0f} MB; ready after {ready_after:.1f} s"
                )
            # Now a 410 on the pod watch: the worker relists all pods while holding the old ledger.
            relist_started = time.monotonic()
            gone_after.set()
            while pod_watches.value < 2:
                time.sleep(0.1)
            relist = time.monotonic() - relist_started
            for pid in workers:
                values = memory_kib(pid)
                lines.append(
                    f"after a 410 relist of {pods} pods ({relist:.1f} s): "
                    f"worker RSS {values['VmRSS'] / 1024:.0f} MB, "
                    f"peak {values['VmHWM'] / 1024:.0f} MB"
                )
    out = subprocess.run(
        [sys.executable, "-c", LEDGER_ONLY, str(nodes), str(pods)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    figures = json.loads(out.stdout)
    lines.append(
        f"ledger alone ({figures['pods']} pods): "
        f"{(figures['after'] - figures['before']) / 1024:.0f} MB over an "
        f"interpreter with the extender imported ({figures['before'] / 1024:.0f} MB)"
    )
    return lines


# ------------------------------------------------------------------ reference


@contextlib.contextmanager
def goref_serve(snapshot: Path, workdir: Path) -> Iterator[tuple[int, int]]:
    """benchmarks/goref over the same snapshot (built by tests/e2e/build.sh): (port, pid)."""
    from tests.e2e.harness import default_bin_dir

    binary = default_bin_dir() / "goref"
    if not binary.is_file():
        raise SystemExit(f"{binary} is missing: run tests/e2e/build.sh (it builds benchmarks/goref)")
    port = free_port()
    log = (workdir / "goref.log").open("wb")
    command = [str(binary), "--snapshot", str(snapshot), "--port", str(port), "--resource", RES]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, process, 300, path="/healthz")
        yield port, process.pid
    finally:
        stop(process)
        log.close()


@contextlib.contextmanager
def granian_serve(snapshot: Path, workdir: Path) -> Iterator[tuple[int, int]]:
    """Our app (benchmarks/extender_wsgi.py) under granian, 1 worker x 8 blocking threads as our gunicorn
    has: (port, pid)."""
    port = free_port()
    config = workdir / "config.yaml"
    config.write_text(CONFIG)
    environment = {**os.environ, "CONFIDENTIAL_PODS_SNAPSHOT": str(snapshot),
                   "CONFIDENTIAL_PODS_CONFIG": str(config), "PYTHONPATH": str(ROOT)}  # fmt: skip
    command = [sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", "1",
               "--blocking-threads", "8", "--host", "127.0.0.1", "--port", str(port),
               "benchmarks.extender_wsgi:app"]  # fmt: skip
    log = (workdir / "granian.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=environment)
    try:
        wait_ready(port, process, 900)
        yield port, process.pid
    finally:
        stop(process)
        log.close()


def timed_calls(
    conn: http.client.HTTPConnection, verb: str, bodies: list[bytes], n: int
) -> tuple[list[float], bytes]:
    """``n`` POSTs to ``/verb`` back to back on one kept-alive connection, cycling through ``bodies``: each
    round trip in ms, and the last answer."""
    times = []
    payload = b""
    for k in range(n):
        start = time.perf_counter()
        payload = post(conn, f"/{verb}", bodies[k % len(bodies)])
        times.append((time.perf_counter() - start) * 1000)
    return times, payload


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> bytes:
    """POST JSON ``body`` on a kept-alive connection: the answer, which must be a 200."""
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: HTTP {response.status}: {payload[:200]!r}")
    return payload


def reference(
    nodes: int,
    pods: int,
    requests: int,
    rounds: int = 4,
    granian: bool = False,
    baseline: Path | None = None,
) -> list[str]:
    """Ours and goref over one snapshot, the same bodies, in alternating rounds: latency and server CPU.

    ``granian``: also our app under granian (``ours-granian``), the side-by-side of another WSGI server.
    ``baseline``: also ``extender serve`` from another checkout (``baseline``; a git worktree of an earlier
    commit), for a before/after in one run.
    """
    lines = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        snapshot = workdir / "cluster.json"
        write_snapshot(snapshot, nodes, pods)
        port, process, _ = stack.enter_context(extender_serve(["--snapshot", str(snapshot)], workdir, 900))
        servers = {"ours": (port, process.pid), "goref": stack.enter_context(goref_serve(snapshot, workdir))}
        if granian:
            servers["ours-granian"] = stack.enter_context(granian_serve(snapshot, workdir))
        if baseline is not None:
            (workdir / "baseline").mkdir()
            serving = extender_serve(["--snapshot", str(snapshot)], workdir / "baseline", 900, root=baseline)
            port, process, _ = stack.enter_context(serving)
            servers["baseline"] = (port, process.pid)
        lines.append(
            f"{nodes} nodes, {pods} pods. ours: `extender serve --snapshot` (gunicorn, 1 connection "
            "worker x 8); "
            f"goref: benchmarks/goref (net/http, encoding/json, GOMAXPROCS {os.cpu_count()})"
            + (
                "; ours-granian: the same app under granian (1 worker x 8 blocking threads)"
                if granian
                else ""
            )
            + (f"; baseline: `extender serve --snapshot` from {baseline}" if baseline else "")
            + f". {rounds} alternating rounds per row, one kept-alive connection per server, "
            "the same bodies. "
            "Per server: client round trip p50 / p99 ms, server CPU ms per call; ratio: to goref (p50, CPU)."
        )
        ours = [who for who in servers if who != "goref"]
        lines.append("| verb | NodeNames | " + " | ".join(f"{who} p50 / p99 / CPU" for who in servers) + " | "
                     + " | ".join(f"{who} ÷ goref p50, CPU" for who in ours) + " |")  # fmt: skip
        lines.append("|---|---|" + "---|" * (len(servers) + len(ours)))
        rng = random.Random(7)
        names = [f"node-{i:05d}" for i in range(nodes)]
        conns = {
            who: http.client.HTTPConnection("127.0.0.1", p, timeout=30) for who, (p, _) in servers.items()
        }
        for verb in ("filter", "prioritize"):
            for count in sorted({min(500, nodes), nodes}):
                samples = [sorted(rng.sample(names, count)) for _ in range(16)]
                bodies = [json.dumps({"Pod": pending_pod(16), "NodeNames": s}).encode() for s in samples]
                n = requests if count <= 500 else max(200, requests // 4)
                times: dict[str, list[float]] = {who: [] for who in servers}
                cpu = dict.fromkeys(servers, 0.0)
                for who in servers:
                    timed_calls(conns[who], verb, bodies, 50)  # warm-up
                for _ in range(rounds):
                    for who, (_, pid) in servers.items():
                        before = server_cpu_seconds(pid)
                        times[who] += timed_calls(conns[who], verb, bodies, n // rounds)[0]
                        cpu[who] += server_cpu_seconds(pid) - before
                p50 = {who: percentile(t, 0.5) for who, t in times.items()}
                per_call = {who: cpu[who] * 1000 / len(times[who]) for who in servers}
                cells = [
                    f"{p50[w]:.2f} / {percentile(times[w], 0.99):.2f} / {per_call[w]:.2f}" for w in servers
                ]
                ratios = [
                    f"{p50[w] / p50['goref']:.1f}x, {per_call[w] / per_call['goref']:.1f}x" for w in ours
                ]
                lines.append(f"| {verb} | {count} | " + " | ".join(cells + ratios) + " |")
        for conn in conns.values():
            conn.close()
    return lines


# ------------------------------------------------------------------ cycle


def cycle_uid(name: str) -> str:
    return f"uid-{name}"


def cycle_requests(who: str, i: int, names: list[str]) -> tuple[bytes, dict[str, str]]:
    """Pod ``i`` of server ``who``: the filter/prioritize body kube-scheduler sends, and the bind's fields."""
    pod = pending_pod(CYCLE_EPC_MIB)
    name = f"cycle-{who}-{i:06d}"
    pod["metadata"].update({"name": name, "namespace": "team-0", "uid": cycle_uid(name)})
    start = i % len(names)  # kube-scheduler's rotating start index
    body = json.dumps({"Pod": pod, "NodeNames": names[start:] + names[:start]}).encode()
    return body, {"PodName": name, "PodNamespace": "team-0", "PodUID": cycle_uid(name)}


def one_cycle(verbs: http.client.HTTPConnection, binds: http.client.HTTPConnection,
              body: bytes, bind: dict[str, str], fresh_bind: bool = False) -> list[float]:  # fmt: skip
    """filter, prioritize and bind of one pod, as kube-scheduler calls them (binds on their own
    connection; ``fresh_bind``: a new one for each bind); each round trip in ms."""
    times = []
    answers = []
    for conn, path, payload in ((verbs, "/filter", body), (verbs, "/prioritize", body)):
        start = time.perf_counter()
        answers.append(json.loads(post(conn, path, payload)))
        times.append((time.perf_counter() - start) * 1000)
    node = answers[0]["NodeNames"][0]
    start = time.perf_counter()
    answer = json.loads(post(binds, "/bind", json.dumps(bind | {"Node": node}).encode()))
    times.append((time.perf_counter() - start) * 1000)
    if fresh_bind:
        binds.close()  # http.client connects again for the next one
    if answer.get("Error"):
        raise RuntimeError(f"bind: {answer['Error']}")
    return times


def cycle(
    nodes: int,
    pods: int,
    rounds: int = 4,
    baseline: Path | None = None,
    fresh_binds: bool = False,
    services: int = 0,
) -> list[str]:
    """kube-scheduler's calls for each pod (filter and prioritize over every node, then bind) against
    ``extender serve --kubeconfig`` with each worker class, beside each other against one fake apiserver
    that answers the Bindings and sends each bound pod as a MODIFIED event: the extender's CPU per
    scheduled pod, with nothing else on the machine's two cores but the client and the fake apiserver."""
    from confidential_pods.serving import WORKER_CLASSES

    classes = [name for name in WORKER_CLASSES if name != "sync"]
    lines = []
    with (
        fake_apiserver_process(nodes, 0, node_epc_mib=CYCLE_NODE_EPC_MIB) as api_port,
        tempfile.TemporaryDirectory() as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        kubeconfig = write_kubeconfig(workdir / "kubeconfig", f"http://127.0.0.1:{api_port}", token="bench")
        servers = {}
        for name in classes:
            (workdir / name).mkdir()
            args = ["--kubeconfig", str(kubeconfig), "--worker-class", name]
            port, process, _ = stack.enter_context(
                extender_serve(args, workdir / name, 300, services=services)
            )
            servers[name] = (port, process.pid)
        if baseline is not None:
            (workdir / "baseline").mkdir()
            args = ["--kubeconfig", str(kubeconfig)]
            port, process, _ = stack.enter_context(
                extender_serve(args, workdir / "baseline", 300, root=baseline, services=services)
            )
            servers["baseline"] = (port, process.pid)
        names = [f"node-{i:05d}" for i in range(nodes)]
        conns = {
            who: tuple(http.client.HTTPConnection("127.0.0.1", p, timeout=30) for _ in range(2))
            for who, (p, _) in servers.items()
        }
        per_round = pods // rounds
        times: dict[str, list[list[float]]] = {who: [] for who in servers}
        cpu = dict.fromkeys(servers, 0.0)
        for who in servers:  # warm-up
            for i in range(50):
                one_cycle(*conns[who], *cycle_requests(f"{who}-warm", i, names))
        for r in range(rounds):
            for who, (_, pid) in servers.items():
                requests = [cycle_requests(who, r * per_round + i, names) for i in range(per_round)]
                before = server_cpu_seconds(pid)
                times[who] += [one_cycle(*conns[who], body, bind, fresh_binds) for body, bind in requests]
                time.sleep(0.3)  # the last bound pods' events
                cpu[who] += server_cpu_seconds(pid) - before
        lines.append(
            f"{nodes} nodes, {per_round * rounds} pods per server in {rounds} alternating rounds, "
            f"{CYCLE_EPC_MIB} MiB of EPC each; per pod: /filter and /prioritize over all {nodes} names on "
            "one kept-alive connection, /bind on another"
            + (" opened for each bind" if fresh_binds else "")
            + " (kube-scheduler's pattern)"
            + (f"; each server's environment holds the variables of {services} Services" if services else "")
            + "; the fake apiserver "
            "answers each Binding and sends the bound pod as a MODIFIED event. Extender CPU per pod "
            "(gunicorn master and worker) and round trip p50 ms per verb:"
        )
        lines.append("| extender | CPU per pod ms | filter p50 | prioritize p50 | bind p50 |")
        lines.append("|---|---|---|---|---|")
        for who, samples in times.items():
            per_verb = [percentile([t[k] for t in samples], 0.5) for k in range(3)]
            label = f"`--worker-class {who}`" if who != "baseline" else f"baseline ({baseline})"
            lines.append(
                f"| {label} | {cpu[who] * 1000 / len(samples):.2f} | "
                + " | ".join(f"{t:.2f}" for t in per_verb)
                + " |"
            )
        for pair in conns.values():
            for conn in pair:
                conn.close()
    return lines


# ------------------------------------------------------------------ profile


def profile_verbs(nodes: int, pods: int) -> None:
    from pyinstrument import Profiler

    from confidential_pods.settings import Settings
    from extender.app import create_app
    from extender.binding import MemoryBinder
    from extender.ledger import EpcLedger
    from extender.podepc import pod_facts

    settings = Settings()
    ledger = EpcLedger()
    facts = [
        pod_facts(lean_pod(i, f"node-{i % nodes:05d}", 1 + i % 8), settings.profile) for i in range(pods)
    ]
    ledger.replace({f"node-{i:05d}": 128 << 20 for i in range(nodes)}, [f for f in facts if f is not None])
    app = create_app(ledger, settings, MemoryBinder({}), lambda: True)
    client = app.test_client()
    body = json.dumps({"Pod": pending_pod(), "NodeNames": [f"node-{i:05d}" for i in range(nodes)]})
    profiler = Profiler(interval=0.0002)
    with profiler:
        for _ in range(100):
            client.post("/filter", data=body, content_type="application/json")
            client.post("/prioritize", data=body, content_type="application/json")
    print(profiler.output_text(unicode=True, color=False, show_all=False))


# ------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help="latency, events, rss, reference (ours against benchmarks/goref), cycle (CPU per scheduled "
        "pod, per worker class), profile "
        "(default: the first three)",
    )
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=50000)
    parser.add_argument("--rss-nodes", type=int, default=15000)
    parser.add_argument("--rss-pods", type=int, default=150000)
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests per verb at 500 names (1/4 at all names)"
    )
    parser.add_argument("--events", type=int, default=100000)
    parser.add_argument("--cycle-nodes", type=int, default=100, help="cycle: nodes (default 100)")
    parser.add_argument("--cycle-pods", type=int, default=2000, help="cycle: pods per server (default 2000)")
    parser.add_argument(
        "--fresh-binds",
        action="store_true",
        help="cycle: each bind on a new connection (kube-scheduler's extender transport keeps 2 idle "
        "connections, so with more binds in flight most open one)",
    )
    parser.add_argument(
        "--service-variables",
        type=int,
        default=0,
        metavar="N",
        help="cycle: the servers' environment also holds the service-link variables of N Services (7 each), "
        "as kubelet gives a pod in a namespace with N Services",
    )
    parser.add_argument(
        "--granian",
        action="store_true",
        help="reference: also serve our app under granian (pip install granian), beside gunicorn",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="reference, cycle: also `extender serve` from this checkout (a git worktree of an earlier "
        "commit)",
    )
    args = parser.parse_args(argv)
    sections = args.sections or ["latency", "events", "rss"]
    unknown = set(sections) - {"latency", "events", "rss", "reference", "cycle", "profile"}
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    print(
        f"# extender benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}, load average {load_average()}"
    )
    for section in sections:
        print(f"\n## {section}")
        if section == "latency":
            result = latency(args.nodes, args.pods, args.requests)
        elif section == "events":
            result = events(args.nodes, args.pods, args.events)
        elif section == "rss":
            result = rss(args.rss_nodes, args.rss_pods)
        elif section == "reference":
            result = reference(
                args.nodes, args.pods, args.requests, granian=args.granian, baseline=args.baseline
            )
        elif section == "cycle":
            result = cycle(
                args.cycle_nodes,
                args.cycle_pods,
                baseline=args.baseline,
                fresh_binds=args.fresh_binds,
                services=args.service_variables,
            )
        else:
            profile_verbs(args.nodes, args.pods)
            continue
        for line in result:
            print(line, flush=True)
        print(f"(load after {section}: load average {load_average()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
