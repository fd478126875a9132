"""Prometheus metrics of the webhook.

Under gunicorn every worker is a process; with ``PROMETHEUS_MULTIPROC_DIR`` set (the serving
shell sets it before workers start) values are kept in files there and ``/metrics`` aggregates
all workers through ``MultiProcessCollector``.
"""

from __future__ import annotations

import os
from typing import Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

Outcome = Literal["mutated", "unchanged", "skipped", "denied", "malformed", "error"]

REVIEWS = Counter(
    "confidential_pods_webhook_reviews",
    "Admission reviews answered, by endpoint and outcome "
    "(mutated, unchanged, skipped, denied, malformed, error).",
    ["endpoint", "outcome"],
)
LATENCY = Histogram(
    "confidential_pods_webhook_review_duration_seconds",
    "Time to answer one admission review, from body received to response built.",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)


def observe(endpoint: str, outcome: Outcome, seconds: float) -> None:
    REVIEWS.labels(endpoint=endpoint, outcome=outcome).inc()
    LATENCY.labels(endpoint=endpoint).observe(seconds)


def render() -> tuple[bytes, str]:
    """The exposition text for ``GET /metrics`` and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
