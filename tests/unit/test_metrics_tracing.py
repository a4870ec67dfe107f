"""Metrics and traces carry no PHI: labels from fixed sets, attributes allowlisted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.monitoring import tracing
from app.monitoring.metrics import Metrics, error_code, gauge, route_label

CANARY = "Zyxwend Canarywhistle"


def test_labels_come_from_fixed_sets():
    m = Metrics()
    m.record_run(task="irae", status="completed", backend="offline", seconds=1.5, tokens_in=10, tokens_out=5,
                 cost_usd=0.01)
    m.record_run(task=CANARY, status="pat-canary", backend="../etc", seconds=0.2)
    m.record_error("audit_phi_rejected")
    m.record_error(f"{CANARY} 1970-01-01")
    m.record_http(rule="/drafts/<run_id>", method="GET", status=200, seconds=0.01)
    m.record_http(rule=None, method="BREW", status=418, seconds=0.01)
    m.add_gauges(lambda: [gauge("sda_outbox_depth", "Outbox items waiting", 3.0)])
    body = m.exposition().decode()
    assert CANARY not in body and "Canary" not in body and "pat-canary" not in body
    assert 'sda_runs_total{backend="offline",status="completed",task="irae"} 1.0' in body
    assert 'sda_runs_total{backend="other",status="other",task="other"} 1.0' in body
    assert 'sda_errors_total{code="audit_phi_rejected"} 1.0' in body
    assert 'sda_errors_total{code="other"} 1.0' in body
    assert 'route="/drafts/<run_id>"' in body and 'route="unmatched"' in body and 'method="other"' in body
    assert "sda_outbox_depth 3.0" in body
    assert 'le="120.0"' in body  # model-call buckets reach the wall-time limit


@pytest.mark.parametrize(("value", "expected"), [
    ("index_not_ready", "index_not_ready"), ("Index", "other"), ("a b", "other"), (None, "other"), (3, "other")])
def test_error_code_grammar(value, expected):
    assert error_code(value) == expected


def test_route_label_never_a_path():
    assert route_label("/api/drafts") == "/api/drafts"
    assert route_label("/x?name=" + CANARY) == "unmatched"


def test_multiprocess_mode_aggregates_workers(tmp_path):
    """Two worker processes count; a third process's scrape sees the sum (gunicorn's layout)."""
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    count = ("from app.monitoring.metrics import Metrics; m = Metrics(); "
             "[m.record_error('bad_state') for _ in range({n})]")
    for n in (2, 3):
        subprocess.run([sys.executable, "-c", count.format(n=n)], env=env, check=True, timeout=60)
    scrape = "from app.monitoring.metrics import Metrics; print(Metrics().exposition().decode())"
    out = subprocess.run([sys.executable, "-c", scrape], env=env, check=True, timeout=60,
                         capture_output=True, text=True).stdout
    assert 'sda_errors_total{code="bad_state"} 5.0' in out


def test_spans_drop_phi_and_keep_codes():
    exporter = InMemorySpanExporter()
    assert tracing.configure(None, exporter=exporter)
    with tracing.span("agent.run", task="irae", backend="offline", patient=CANARY, note=CANARY) as sp:
        tid = tracing.current_trace_id()
        with tracing.span("fhir.read", **{"fhir.resource_type": "DocumentReference"}):
            pass
        tracing.set_attributes(sp, status="completed", model=f"{CANARY}")
    with pytest.raises(ValueError):
        with tracing.span("boom", task="summary"):
            raise ValueError(CANARY)
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} >= {"agent.run", "fhir.read", "boom"}
    run = next(s for s in spans if s.name == "agent.run")
    child = next(s for s in spans if s.name == "fhir.read")
    assert child.parent.span_id == run.context.span_id and format(run.context.trace_id, "032x") == tid
    for s in spans:
        blob = repr(dict(s.attributes)) + s.name + repr([e.attributes for e in s.events])
        assert CANARY not in blob
    assert run.attributes["sda.task"] == "irae" and run.attributes["sda.dropped_attributes"] == 2
    assert "sda.model" not in run.attributes
    boom = next(s for s in spans if s.name == "boom")
    assert boom.attributes["sda.error_code"] == "valueerror"


def test_tracing_off_by_default_costs_nothing():
    assert tracing.configure(None) is False
