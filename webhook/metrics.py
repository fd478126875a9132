"""Prometheus metrics of the webhook: reviews by endpoint and outcome, their latency, certificate expiry.

One :class:`WebhookMetrics` per app (its own registry). Under gunicorn the serving layer has switched
prometheus_client to multiprocess mode before the app is built, so ``/metrics`` shows every worker.
"""

from __future__ import annotations

from typing import Literal

from confidential_pods.endpoints import AppMetrics

Outcome = Literal["mutated", "unchanged", "skipped", "denied", "malformed", "error"]

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class WebhookMetrics(AppMetrics):
    """The webhook's counters and histogram, in the app's own registry."""

    prefix = "confidential_pods_webhook"

    def __init__(self) -> None:
        super().__init__()
        self.reviews = self.counter(
            "confidential_pods_webhook_reviews",
            "Admission reviews answered, by endpoint and outcome "
            "(mutated, unchanged, skipped, denied, malformed, error).",
            ["endpoint", "outcome"],
        )
        self.latency = self.histogram(
            "confidential_pods_webhook_review_duration_seconds",
            "Time to answer one admission review, from body received to response built.",
            ["endpoint"],
            _BUCKETS,
        )

    def observe(self, endpoint: str, outcome: Outcome, seconds: float) -> None:
        self.reviews.labels(endpoint=endpoint, outcome=outcome).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)
