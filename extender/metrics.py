"""Prometheus metrics of the extender: per-verb latency and outcomes, ledger sizes, EPC per node.

Each app gets its own registry (one process serves one ledger; tests build many apps). Ledger
figures are read at scrape time by a custom collector, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from extender.ledger import EpcLedger

Verb = Literal["filter", "prioritize", "bind"]
Outcome = Literal["ok", "refused", "malformed"]

_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LedgerCollector(Collector):
    """Reads the ledger on every scrape: sizes, and capacity/used/reserved/free EPC per SGX node."""

    def __init__(self, ledger: EpcLedger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ledger = self._ledger
        per_node = {
            key: GaugeMetricFamily(
                f"confidential_pods_extender_node_epc_{key}_bytes",
                f"EPC {key} on the node, bytes (SGX nodes only).",
                labels=["node"],
            )
            for key in ("capacity", "used", "reserved", "free")
        }
        with ledger.lock:
            nodes = ledger.node_count()
            pods = ledger.pod_count()
            reservations = ledger.reservation_count()
            for name in ledger.nodes():
                usage = ledger.usage(name)
                if usage is None or usage.capacity is None:
                    continue
                free = usage.free
                assert free is not None
                per_node["capacity"].add_metric([name], usage.capacity)
                per_node["used"].add_metric([name], usage.used)
                per_node["reserved"].add_metric([name], usage.reserved)
                per_node["free"].add_metric([name], free)
        yield GaugeMetricFamily("confidential_pods_extender_ledger_nodes", "Nodes in the EPC ledger.", nodes)
        yield GaugeMetricFamily(
            "confidential_pods_extender_ledger_pods", "Pods holding EPC in the ledger.", pods
        )
        yield GaugeMetricFamily(
            "confidential_pods_extender_ledger_reservations",
            "Binds not yet confirmed by the watch.",
            reservations,
        )
        yield from per_node.values()


class ExtenderMetrics:
    """The metrics of one extender app, in their own registry."""

    def __init__(self, ledger: EpcLedger) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "confidential_pods_extender_requests",
            "Extender requests answered, by verb and outcome (ok, refused, malformed).",
            ["verb", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "confidential_pods_extender_request_duration_seconds",
            "Time to answer one extender request, from body received to response built.",
            ["verb"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.expired = Counter(
            "confidential_pods_extender_reservations_expired",
            "Reservations dropped because the watch never showed the bound pod in time.",
            registry=self.registry,
        )
        self.registry.register(LedgerCollector(ledger))

    def observe(self, verb: Verb, outcome: Outcome, seconds: float) -> None:
        self.requests.labels(verb=verb, outcome=outcome).inc()
        self.latency.labels(verb=verb).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text for ``GET /metrics`` and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
