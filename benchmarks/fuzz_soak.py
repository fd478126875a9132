"""Fuzz soak of both servers: 10,000+ hostile cases each, never a 5xx, and how long the slowest took.

    python -m benchmarks.fuzz_soak                  # 10,000 cases per server (a few minutes)
    python -m benchmarks.fuzz_soak --cases 50000 --json

The cases are the fuzz tests' own strategies (tests/webhook/test_fuzz.py, tests/extender/test_fuzz.py,
tests/fuzzing.py), run here with a larger budget and no shrinking: structured AdmissionReviews and
ExtenderArgs with wrong JSON types at every pod path the servers read, hostile quantities
(``1e99999999``, ``9223372036854775807Ei``, Unicode digits, JSON numbers of 4,000 digits), bodies nested
up to 200,000 deep, arbitrary bytes. Each case goes through the flask app in process (the code under
test is the app, not the network); its status and wall time are recorded, with the garbage collector
paused during each request (the soak's heap is hypothesis's, not the server's; ``--with-gc`` keeps it).
The default test run keeps a budget of a few hundred cases per shape.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests import fuzzing
from tests.extender import scheduler_json as sj
from tests.extender import test_fuzz as extender_fuzz
from tests.machine import load_average, percentile
from tests.webhook import test_fuzz as webhook_fuzz
from tests.webhook.samples import realistic_pod


@dataclass
class Tally:
    """What one server answered: cases, status codes, the slowest case."""

    server: str
    cases: int = 0
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    slowest: float = 0.0
    slowest_case: str = ""
    durations: list[float] = field(default_factory=list)

    def record(self, status: int, seconds: float, case: str) -> None:
        self.requests += 1
        self.statuses[status] += 1
        self.durations.append(seconds)
        if seconds > self.slowest:
            self.slowest, self.slowest_case = seconds, case[:160]

    def percentile(self, share: float) -> float:
        return percentile(self.durations, share)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


#: Pause the garbage collector during each request (``--with-gc`` turns this off): the soak's heap is
#: hypothesis's, hundreds of MB, and a full collection of it (~350 ms here) would land on some request.
PAUSE_GC = True


def timed(tally: Tally, post: Callable[[str, bytes], Any], path: str, body: bytes) -> None:
    if PAUSE_GC:
        gc.disable()
    try:
        started = time.perf_counter()
        response = post(path, body)
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    tally.record(response.status_code, elapsed, f"{path} {body[:150]!r}")


def run_shape(
    strategy: st.SearchStrategy[Any],
    cases: int,
    body_of: Callable[[Any], list[tuple[str, bytes]]],
    tally: Tally,
    post: Callable[[str, bytes], Any],
) -> None:
    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def soak(value: Any) -> None:
        tally.cases += 1
        for path, body in body_of(value):
            timed(tally, post, path, body)

    soak()


def deep_bodies() -> st.SearchStrategy[bytes]:
    return st.builds(
        webhook_fuzz.deep_body, st.integers(500, 200_000), st.booleans(), st.sampled_from(["list", "dict"])
    )


#: One shape of hostile input: the strategy, and the requests (path, body) one drawn value makes.
Shape = tuple[st.SearchStrategy[Any], Callable[[Any], list[tuple[str, bytes]]]]


def soak(server: str, client: Any, shapes: list[Shape], cases: int) -> Tally:
    """``cases`` drawn values spread evenly over ``shapes`` (the last takes the remainder), each request
    posted to ``client`` (a flask test client) and timed."""
    tally = Tally(server)

    def post(path: str, body: bytes) -> Any:
        return client.post(path, data=body, content_type="application/json")

    share = cases // len(shapes)
    for index, (strategy, requests) in enumerate(shapes):
        count = share if index < len(shapes) - 1 else cases - share * (len(shapes) - 1)
        run_shape(strategy, count, requests, tally, post)
    return tally


def _json(path: str) -> Callable[[Any], list[tuple[str, bytes]]]:
    return lambda value: [(path, json.dumps(value).encode())]


def _raw(path: str) -> Callable[[bytes], list[tuple[str, bytes]]]:
    return lambda body: [(path, body)]


def _arbitrary() -> st.SearchStrategy[bytes]:
    return st.binary(max_size=400) | fuzzing.json_values.map(lambda v: json.dumps(v).encode())


def soak_webhook(cases: int) -> Tally:
    poisoned = fuzzing.poisoned(realistic_pod(), webhook_fuzz.ALI)
    shapes: list[Shape] = [
        (poisoned.map(webhook_fuzz.poisoned_review), _json("/mutate")),
        (webhook_fuzz.reviews, _json("/mutate/namespace")),
        (deep_bodies(), _raw("/mutate")),
        (_arbitrary(), _raw("/mutate")),
    ]
    return soak("webhook", webhook_fuzz.APP, shapes, cases)


def soak_extender(cases: int) -> Tally:
    def both_verbs(args: Any) -> list[tuple[str, bytes]]:
        body = json.dumps(args).encode()
        return [("/filter", body), ("/prioritize", body)]

    names = ["sgx-a", "sgx-b", "plain", "ghost"]
    poisoned = fuzzing.poisoned(sj.pod(epc_mib=16), sj.RESOURCE)
    shapes: list[Shape] = [
        (poisoned.map(lambda pod: {"Pod": pod, "NodeNames": names, "Nodes": None}), both_verbs),
        (extender_fuzz.extender_args(), both_verbs),
        (deep_bodies(), _raw("/filter")),
        (extender_fuzz.binding_args, _json("/bind")),
        (_arbitrary(), _raw("/prioritize")),
    ]
    return soak("extender", extender_fuzz.CLIENT, shapes, cases)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases per server (default 10,000)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--with-gc", action="store_true", help="let garbage collections land on requests")
    args = parser.parse_args()
    global PAUSE_GC
    PAUSE_GC = not args.with_gc
    before = load_average()
    started = time.perf_counter()
    tallies = [soak_webhook(args.cases), soak_extender(args.cases)]
    elapsed = time.perf_counter() - started
    figures = [
        {
            "server": t.server,
            "cases": t.cases,
            "requests": t.requests,
            "statuses": dict(sorted(t.statuses.items())),
            "5xx": t.server_errors,
            "p50_seconds": round(t.percentile(0.5), 5),
            "p99_seconds": round(t.percentile(0.99), 5),
            "slowest_seconds": round(t.slowest, 4),
            "slowest_case": t.slowest_case,
        }
        for t in tallies
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "load_before": before,
                    "load_after": load_average(),
                    "seconds": round(elapsed),
                    "servers": figures,
                }
            )
        )
    else:
        print(f"load average before {before}, after {load_average()}; {elapsed:.0f} s")
        for f in figures:
            print(
                f"{f['server']:9} {f['cases']:7} cases, {f['requests']:7} requests, "
                f"statuses {f['statuses']}, 5xx {f['5xx']}, "
                f"p50 {f['p50_seconds'] * 1000:.2f} ms, p99 {f['p99_seconds'] * 1000:.2f} ms, "
                f"slowest {f['slowest_seconds'] * 1000:.1f} ms: {f['slowest_case'][:60]}"
            )
    return 1 if any(t.server_errors for t in tallies) else 0


if __name__ == "__main__":
    raise SystemExit(main())
