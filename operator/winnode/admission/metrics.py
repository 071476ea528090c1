"""Prometheus metrics of `winnode webhook`, on a registry of its own (several servers can share a process
in tests, and the operator's metrics never mix in)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Admission must answer within the webhook timeout (seconds); buckets resolve the sub-millisecond
# handler as well as a starved replica.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class WebhookMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "winnode_webhook_requests",
            "HTTP requests to the admission endpoint, by response code",
            ["code"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "winnode_webhook_decisions",
            "Admission decisions by object kind, verdict (allowed|denied) and policy reason",
            ["kind", "verdict", "reason"],
            registry=self.registry,
        )
        self.warnings = Counter(
            "winnode_webhook_warnings",
            "Warnings returned with admitted or denied objects, by object kind",
            ["kind"],
            registry=self.registry,
        )
        self.malformed = Counter(
            "winnode_webhook_malformed_reviews",
            "Admission requests refused before judging (bad JSON, wrong apiVersion, too large...), by HTTP code",
            ["code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "winnode_webhook_review_duration_seconds",
            "Time from request received to response ready, for admission requests",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.windows_nodes = Gauge(
            "winnode_webhook_windows_nodes", "Windows nodes known to this replica", registry=self.registry
        )
        self.cert_not_after = Gauge(
            "winnode_webhook_certificate_expiry_timestamp_seconds",
            "When the serving certificate in use expires (Unix time)",
            registry=self.registry,
        )
        self.cert_reloads = Counter(
            "winnode_webhook_certificate_reloads",
            "Serving certificates loaded into the TLS listener (the first one included)",
            registry=self.registry,
        )
        self.cert_issued = Counter(
            "winnode_webhook_certificates_issued",
            "Certificates this replica issued, by kind (ca|serving)",
            ["kind"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def request_count(self) -> float:
        """All admission requests so far, whatever the answer."""
        total = 0.0
        for metric in self.requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    total += sample.value
        return total
