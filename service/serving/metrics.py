"""Prometheus metrics of one app instance (its own registry, so several apps can coexist)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("dreamprm_requests_total", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram("dreamprm_request_seconds", "HTTP request latency", ["route"],
                                 buckets=_LATENCY, registry=r)
        self.batch_size = Histogram("dreamprm_batch_size", "items per forward pass",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.batch_tokens = Histogram("dreamprm_batch_tokens", "padded tokens per forward pass",
                                      buckets=(128, 512, 1024, 2048, 4096, 8192, 16384, 32768), registry=r)
        self.forward_seconds = Histogram("dreamprm_forward_seconds", "forward pass time",
                                         buckets=_LATENCY, registry=r)
        self.queue_depth = Gauge("dreamprm_queue_depth", "items waiting for a forward pass", registry=r)
        self.cache = Counter("dreamprm_cache_total", "score cache lookups", ["backend", "result"], registry=r)
        self.tokens_scored = Counter("dreamprm_tokens_scored_total", "tokens through the model", registry=r)
        self.steps_scored = Counter("dreamprm_steps_scored_total", "steps scored", registry=r)
        self.sandbox_isolation = Gauge("dreamprm_sandbox_isolation", "1 for the sandbox's active isolation "
                                       "(full | namespaces | none | unavailable)", ["level"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
