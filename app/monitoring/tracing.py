"""OpenTelemetry tracing: one trace per drafting run, no PHI in any attribute.

``configure(endpoint)`` installs a TracerProvider with a batching OTLP/HTTP exporter when an
endpoint is configured (``APP_OTEL_EXPORTER_OTLP_ENDPOINT``; off by default: without it, spans
are created by the no-op API and cost nothing). ``span(name, **attrs)`` opens a child span of
the current one; attributes pass an allowlist of keys, and values must be numbers, booleans or
short code-like strings (``[a-z0-9_.:/-]``, ≤ 64 characters), so a name, a note, a query or a
patient id cannot be attached by mistake: such values are dropped and counted in
``sda.dropped_attributes``.

The run's trace id (32 hex characters) goes on its ledger row, so a slow or failed run on the
admin page leads to its trace.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

ALLOWED_KEYS = frozenset({
    "sda.task", "sda.backend", "sda.model", "sda.status", "sda.tool", "sda.count", "sda.turns",
    "sda.tokens_in", "sda.tokens_out", "sda.cost_usd", "sda.chunks", "sda.notes", "sda.denied",
    "sda.error_code", "sda.attempt", "sda.stage",
    "fhir.interaction", "fhir.resource_type", "http.request.method", "http.response.status_code",
})
_SAFE = re.compile(r"^[a-z0-9_.:/-]{1,64}$")
_lock = threading.Lock()
_configured: str | None = None
_provider: Any = None


def configure(endpoint: str | None, *, service_name: str = "smart-draft-agent", exporter: Any = None) -> bool:
    """Install the SDK's provider with an OTLP exporter (or the given exporter, for tests).
    Returns True when tracing is on. Idempotent per endpoint."""
    global _configured, _provider
    if not endpoint and exporter is None:
        return False
    with _lock:
        key = endpoint or "custom"
        if exporter is None and _configured == key and _provider is not None:
            return True  # (a given exporter, in tests, always gets a fresh provider)
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        else:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        _provider = provider
        _configured = key
        return True


def tracer() -> trace.Tracer:
    if _provider is not None:
        return _provider.get_tracer("app")
    return trace.get_tracer("app")


def safe_attributes(attrs: dict[str, Any]) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    dropped = 0
    for key, value in attrs.items():
        key = key if key.startswith(("sda.", "fhir.", "http.")) else f"sda.{key}"
        if key not in ALLOWED_KEYS:
            dropped += 1
            continue
        if isinstance(value, bool | int | float):
            out[key] = value
        elif isinstance(value, str) and _SAFE.match(value):
            out[key] = value
        else:
            dropped += 1
    return out, dropped


@contextmanager
def span(name: str, **attrs: Any) -> Iterator[trace.Span]:
    """A span named from code (never from data) with allowlisted attributes."""
    clean, dropped = safe_attributes(attrs)
    if dropped:
        clean["sda.dropped_attributes"] = dropped
    # Exceptions are not recorded by the SDK: their messages and stack traces may carry note text.
    with tracer().start_as_current_span(name, attributes=clean, record_exception=False,
                                        set_status_on_exception=False) as sp:
        try:
            yield sp
        except Exception as exc:
            code = getattr(exc, "code", None)
            sp.set_status(trace.Status(trace.StatusCode.ERROR))
            sp.set_attribute("sda.error_code", code if isinstance(code, str) and _SAFE.match(code)
                             else type(exc).__name__.lower()[:64])
            raise


def set_attributes(sp: trace.Span, **attrs: Any) -> None:
    clean, _ = safe_attributes(attrs)
    for k, v in clean.items():
        sp.set_attribute(k, v)


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx and ctx.is_valid else None


# The span context of recent runs in this process, so the write of a run (a later call, same
# process) joins the run's trace. Bounded: oldest forgotten first.
_RUNS: dict[str, trace.SpanContext] = {}
_RUNS_MAX = 1024


def remember_run(run_id: str) -> None:
    ctx = trace.get_current_span().get_span_context()
    if ctx is None or not ctx.is_valid:
        return
    with _lock:
        _RUNS[run_id] = ctx
        while len(_RUNS) > _RUNS_MAX:
            _RUNS.pop(next(iter(_RUNS)))


@contextmanager
def run_span(run_id: str, name: str, **attrs: Any) -> Iterator[trace.Span]:
    """A span in the trace of run ``run_id`` when this process ran it, else a new trace."""
    from opentelemetry import context as otel_context

    with _lock:
        parent = _RUNS.get(run_id)
    token = None
    if parent is not None:
        token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(parent)))
    try:
        with span(name, **attrs) as sp:
            yield sp
    finally:
        if token is not None:
            otel_context.detach(token)


def annotate(**attrs: Any) -> None:
    """Allowlisted attributes on the current span (no-op without one)."""
    set_attributes(trace.get_current_span(), **attrs)


def traced(name: str, *, attrs: Any = None, run_id: Any = None, **static: Any) -> Any:
    """Decorator: the call runs in a span ``name`` (each tool call of a run, the run itself, the
    write). ``attrs(*args, **kwargs)`` adds attributes from the arguments (still allowlisted);
    ``run_id(*args, **kwargs)`` names a run whose trace the span joins (``run_span``)."""
    import functools

    def wrap(fn: Any) -> Any:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            extra = dict(static)
            if attrs is not None:
                extra.update(attrs(*args, **kwargs))
            rid = run_id(*args, **kwargs) if run_id is not None else None
            cm = run_span(rid, name, **extra) if rid else span(name, **extra)
            with cm:
                return fn(*args, **kwargs)
        return inner
    return wrap
