"""Prometheus metrics of the extender: per-verb latency and outcomes, ledger sizes, EPC per node, the feed.

Each app gets its own registry (:class:`~confidential_pods.endpoints.AppMetrics`: one process serves
one ledger; tests build many apps). Ledger figures are read at scrape time by a custom collector, so
they are never stale. The watch feed's counters (:class:`FeedMetrics`) go into the same registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from confidential_pods.endpoints import AppMetrics
from extender.binding import Departures
from extender.ledger import EpcLedger
from extender.preemption import Refined
from extender.watchevents import EVENT_TYPES, KINDS

Verb = Literal["filter", "prioritize", "bind", "preempt"]
Outcome = Literal["ok", "refused", "malformed"]

#: Full lists: a few ms on a small cluster, seconds at thousands of nodes and tens of thousands of pods.
_LIST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0)
_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LedgerCollector(Collector):
    """Reads the ledger on every scrape: sizes, and capacity/used/reserved/free/nominated EPC per SGX node."""

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
            for key in ("capacity", "used", "reserved", "free", "nominated")
        }
        with ledger.lock:
            nodes = ledger.node_count()
            pods = ledger.pod_count()
            reservations = ledger.reservation_count()
            nominations = ledger.nomination_count()
            nominated = ledger.nominated_by_node()
            for name in ledger.nodes():
                usage = ledger.usage(name)
                if usage is None or usage.capacity is None or usage.free is None:
                    continue
                per_node["capacity"].add_metric([name], usage.capacity)
                per_node["used"].add_metric([name], usage.used)
                per_node["reserved"].add_metric([name], usage.reserved)
                per_node["free"].add_metric([name], usage.free)
                per_node["nominated"].add_metric([name], nominated.get(name, 0))
        yield GaugeMetricFamily("confidential_pods_extender_ledger_nodes", "Nodes in the EPC ledger.", nodes)
        yield GaugeMetricFamily(
            "confidential_pods_extender_ledger_pods", "Pods holding EPC in the ledger.", pods
        )
        yield GaugeMetricFamily(
            "confidential_pods_extender_ledger_reservations",
            "Binds not yet confirmed by the watch.",
            reservations,
        )
        yield GaugeMetricFamily(
            "confidential_pods_extender_ledger_nominations",
            "Pods nominated to a node by preemption, whose EPC is held for them.",
            nominations,
        )
        yield from per_node.values()


class ExtenderMetrics(AppMetrics):
    """The metrics of one extender app, in their own registry."""

    prefix = "confidential_pods_extender"

    def __init__(self, ledger: EpcLedger) -> None:
        super().__init__()
        self.requests = self.counter(
            "confidential_pods_extender_requests",
            "Extender requests answered, by verb and outcome (ok, refused, malformed).",
            ["verb", "outcome"],
        )
        self.latency = self.histogram(
            "confidential_pods_extender_request_duration_seconds",
            "Time to answer one extender request, from body received to response built.",
            ["verb"],
            _BUCKETS,
        )
        self.expired = self.counter(
            "confidential_pods_extender_reservations_expired",
            "Reservations dropped because the watch never showed the bound pod in time.",
        )
        self.preemption_nodes = self.counter(
            "confidential_pods_extender_preemption_nodes",
            "Candidate nodes of preemption calls, by decision: kept (evicting frees enough EPC) or dropped.",
            ["decision"],
        )
        self.preemption_victims_added = self.counter(
            "confidential_pods_extender_preemption_victims_added",
            "Lower-priority pods the extender added to kube-scheduler's victims (its ledger knew more).",
        )
        self.departures = self.counter(
            "confidential_pods_extender_departures_checked",
            "Pods on their way out that a filter call asked the API server about (on the node preemption "
            "nominated the pod to), by answer: deleted (the watch had not said so yet), present, or error "
            "(not answered: the API server failed or was too slow).",
            ["answer"],
        )
        self.register_live(LedgerCollector(ledger))

    def count_expired(self, uids: list[str]) -> None:
        self.expired.inc(len(uids))

    def count_preemption(self, refined: Refined) -> None:
        self.preemption_nodes.labels(decision="kept").inc(len(refined.kept))
        self.preemption_nodes.labels(decision="dropped").inc(len(refined.dropped))
        self.preemption_victims_added.inc(refined.added)

    def count_departures(self, asked: int, departures: Departures) -> None:
        deleted = len(departures.deleted)
        self.departures.labels(answer="deleted").inc(deleted)
        self.departures.labels(answer="present").inc(departures.answered - deleted)
        self.departures.labels(answer="error").inc(asked - departures.answered)

    def observe(self, verb: Verb, outcome: Outcome, seconds: float) -> None:
        self.requests.labels(verb=verb, outcome=outcome).inc()
        self.latency.labels(verb=verb).observe(seconds)


class FeedMetrics:
    """Counters of the watch feed. Pass the extender's registry so that ``/metrics`` shows them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.events = Counter(
            "confidential_pods_extender_watch_events",
            "Watch events applied to the EPC ledger, by resource kind and event type.",
            ["kind", "type"],
            registry=registry,
        )
        self.relists = Counter(
            "confidential_pods_extender_watch_relists",
            "Full lists that replaced a kind's state in the ledger (initial, 410 Gone, repeated failures).",
            ["kind", "reason"],
            registry=registry,
        )
        self.list_duration = Histogram(
            "confidential_pods_extender_watch_list_duration_seconds",
            "Time one full list took, from its first page asked to the kind's state replaced in the ledger, "
            "by kind and reason (as the relists).",
            ["kind", "reason"],
            buckets=_LIST_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "confidential_pods_extender_watch_errors",
            "Failed lists and watches (API errors, dropped connections, error events), by kind.",
            ["kind"],
            registry=registry,
        )
        self.unreadable = Counter(
            "confidential_pods_extender_unreadable_objects",
            "Listed or watched objects with an EPC quantity that cannot be read (counted as no EPC).",
            ["kind"],
            registry=registry,
        )
        # Children resolved once: labels() per event would cost more than applying the event.
        self.event_children = {(k, t): self.events.labels(kind=k, type=t) for k in KINDS for t in EVENT_TYPES}
