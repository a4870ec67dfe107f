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
        if _configured == key and _provider is not None:
            return True
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
