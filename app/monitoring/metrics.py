"""Prometheus metrics (prometheus-client), PHI-free by construction.

Every label takes its value from a fixed set: tasks, statuses and backends the code knows, the
Flask route *rule* (``/drafts/<run_id>``, never the path), HTTP methods and status classes, and
error codes that match the code grammar (anything else becomes ``other``). No id, name or text
can become a label value, so no series can carry PHI.

Under gunicorn the workers share counters through prometheus-client's multiprocess mode: set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the workers start (deploy/gunicorn.conf.py
does); ``/metrics`` then aggregates every worker's files. Gauges that describe shared state
(outbox depth, override rate) are read from the database at scrape time, so any worker answers
the same.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

TASKS = frozenset({"summary", "irae", "question"})
STATUSES = frozenset({"completed", "escalated", "failed", "loop_detected", "limit_exceeded", "cancelled"})
BACKENDS = frozenset({"offline", "anthropic", "openai", "hybrid", "fallback"})
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"})
_CODE = re.compile(r"^[a-z][a-z0-9_]{1,47}$")
_ROUTE = re.compile(r"^/[A-Za-z0-9_./<>:-]{0,80}$")
# Model calls take seconds to minutes: buckets up to the 120 s wall-time limit.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120, float("inf"))
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _one_of(value: object, allowed: frozenset[str]) -> str:
    return value if isinstance(value, str) and value in allowed else "other"


def error_code(code: object) -> str:
    return code if isinstance(code, str) and _CODE.match(code) else "other"


def route_label(rule: object) -> str:
    """The URL rule of the matched route, or ``unmatched``: never the request path."""
    return rule if isinstance(rule, str) and _ROUTE.match(rule) else "unmatched"


class Metrics:
    """The app's metrics on their own registry (not the global one, so tests and apps don't collide)."""

    def __init__(self) -> None:
        # prometheus-client picks its value store when it is imported: the directory must be in the
        # environment before the app (and so prometheus_client) is imported in each worker.
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.registry = CollectorRegistry(auto_describe=True)
        # In multiprocess mode values live in per-process files and are collected from there.
        kw = {"registry": None if self.multiprocess_dir else self.registry}
        self.runs = Counter("sda_runs", "Drafting runs by task, final status and backend",
                            ("task", "status", "backend"), **kw)
        self.run_seconds = Histogram("sda_run_duration_seconds", "Wall time of a drafting run",
                                     ("task", "backend"), buckets=DURATION_BUCKETS, **kw)
        self.model_seconds = Histogram("sda_model_call_duration_seconds", "Model backend call time",
                                       ("backend",), buckets=DURATION_BUCKETS, **kw)
        self.tokens = Counter("sda_model_tokens", "Model tokens by backend and direction",
                              ("backend", "direction"), **kw)
        self.cost = Counter("sda_model_cost_usd", "Model cost in US dollars", ("backend",), **kw)
        self.errors = Counter("sda_errors", "Errors answered to users, by stable error code", ("code",), **kw)
        self.http = Counter("sda_http_requests", "HTTP requests by route rule, method and status class",
                            ("route", "method", "status"), **kw)
        self.http_seconds = Histogram("sda_http_request_duration_seconds", "HTTP request time by route rule",
                                      ("route",), buckets=HTTP_BUCKETS, **kw)
        self.drift_alerts = Counter("sda_drift_alerts", "Drift alerts raised by `drift check`", ("metric",), **kw)
        self._gauges: list[Callable[[], Iterable[GaugeMetricFamily]]] = []

    # -- recording ---------------------------------------------------------------------------
    def record_run(self, *, task: str, status: str, backend: str, seconds: float, tokens_in: int = 0,
                   tokens_out: int = 0, cost_usd: float = 0.0) -> None:
        t, s, b = _one_of(task, TASKS), _one_of(status, STATUSES), _one_of(backend, BACKENDS)
        self.runs.labels(t, s, b).inc()
        self.run_seconds.labels(t, b).observe(max(0.0, float(seconds)))
        if tokens_in:
            self.tokens.labels(b, "in").inc(int(tokens_in))
        if tokens_out:
            self.tokens.labels(b, "out").inc(int(tokens_out))
        if cost_usd:
            self.cost.labels(b).inc(float(cost_usd))

    def record_model_call(self, *, backend: str, seconds: float) -> None:
        self.model_seconds.labels(_one_of(backend, BACKENDS)).observe(max(0.0, float(seconds)))

    def record_error(self, code: object) -> None:
        self.errors.labels(error_code(code)).inc()

    def record_http(self, *, rule: object, method: str, status: int, seconds: float) -> None:
        route = route_label(rule)
        self.http.labels(route, _one_of(method, METHODS), f"{int(status) // 100}xx").inc()
        self.http_seconds.labels(route).observe(max(0.0, float(seconds)))

    def record_drift_alert(self, metric: str) -> None:
        base = metric.split(":")[0] if isinstance(metric, str) else ""
        self.drift_alerts.labels(error_code(base.replace("-", "_"))).inc()

    # -- scrape-time gauges (shared state read from the database) ----------------------------
    def add_gauges(self, collect: Callable[[], Iterable[GaugeMetricFamily]]) -> None:
        self._gauges.append(collect)

    def exposition(self) -> bytes:
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            body = generate_latest(registry)
        else:
            body = generate_latest(self.registry)
        extra = CollectorRegistry(auto_describe=False)
        for collect in self._gauges:
            extra.register(_Callable(collect))
        return body + generate_latest(extra)


class _Callable:
    def __init__(self, collect: Callable[[], Iterable[GaugeMetricFamily]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return list(self._collect())


def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    """A scrape-time gauge; label values must come from the fixed sets above."""
    if not labels:
        return GaugeMetricFamily(name, doc, value=value)
    g = GaugeMetricFamily(name, doc, labels=list(labels))
    g.add_metric([_one_of(v, TASKS | BACKENDS | {"all"}) for v in labels.values()], value)
    return g
