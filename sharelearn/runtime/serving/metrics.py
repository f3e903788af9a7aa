"""Per-model serving metrics in Prometheus format: requests, errors, latency histogram and percentiles."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServingMetrics"]

_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServingMetrics:
    """Counters per model and version; p50/p90/p99 over the last `window` requests of each model."""

    def __init__(self, window: int = 10_000) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sharelearn_serving_requests", "predict requests", ["model", "version"], registry=self.registry
        )
        self.rows = Counter(
            "sharelearn_serving_rows", "rows scored", ["model", "version"], registry=self.registry
        )
        self.errors = Counter(
            "sharelearn_serving_errors", "failed requests and rows", ["model", "kind"], registry=self.registry
        )
        self.latency = Histogram(
            "sharelearn_serving_latency_seconds",
            "predict latency",
            ["model"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.quantiles = Gauge(
            "sharelearn_serving_latency_quantile_ms",
            "recent latency percentiles",
            ["model", "quantile"],
            registry=self.registry,
        )
        self._recent: dict[str, deque[float]] = {}
        self._window = window
        self._lock = threading.Lock()

    def observe(self, model: str, version: int, seconds: float, rows: int) -> None:
        self.requests.labels(model, str(version)).inc()
        self.rows.labels(model, str(version)).inc(rows)
        self.latency.labels(model).observe(seconds)
        with self._lock:
            self._recent.setdefault(model, deque(maxlen=self._window)).append(seconds * 1000.0)

    def error(self, model: str, kind: str, count: int = 1) -> None:
        self.errors.labels(model, kind).inc(count)

    def percentiles(self, model: str) -> dict[str, float]:
        with self._lock:
            recent = np.asarray(self._recent.get(model, ()), dtype=np.float64)
        if recent.size == 0:
            return {}
        return {f"p{q}": float(np.percentile(recent, q)) for q in (50, 90, 99)}

    def render(self) -> bytes:
        """The Prometheus text exposition, with the percentile gauges refreshed."""
        with self._lock:
            models = list(self._recent)
        for m in models:
            for q, v in self.percentiles(m).items():
                self.quantiles.labels(m, q).set(v)
        return generate_latest(self.registry)
