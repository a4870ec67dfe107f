"""Metrics wired into the app: runs where they finish, HTTP by route rule, errors by code, scrape-time
gauges from the database; `/metrics` needs the scrape token or an admin session; no canary anywhere."""

from __future__ import annotations

import time

import pytest

from app import create_app
from app.monitoring.evaluation import DEFAULT_DATA, charts_for
from app.retrieval.embeddings import HashingEmbedder
from app.store.models import ReviewRecord

CANARY = "Canarywhistle"
TOKEN = "scrape-token-for-tests-0123456789"


@pytest.fixture
def app(tmp_path):
    return create_app({"testing": True, "data_dir": tmp_path, "allowed_iss": "https://ehr.test/fhir",
                       "metrics_token": TOKEN})


def _scrape(client) -> str:  # type: ignore[no-untyped-def]
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200 and resp.content_type.startswith("text/plain")
    return resp.get_data(as_text=True)


def test_metrics_need_credentials(app):
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    body = _scrape(client)
    assert 'sda_errors_total{code="metrics_unauthorized"} 2.0' in body  # errors by code, from the handler


def test_runs_routes_errors_and_gauges_without_phi(app):
    services = app.extensions["smart_draft"]
    chart = charts_for(DEFAULT_DATA, ["pat-canary"], HashingEmbedder())["pat-canary"]
    draft = services.drafting().draft(chart, "summary", backend_name="offline")
    client = app.test_client()
    client.get("/healthz")
    client.get("/drafts/does-not-exist-" + CANARY)
    client.get("/no/such/page/" + CANARY)
    with services.maker.begin() as db:
        db.add(ReviewRecord(document_id="d1", run_id=draft.run_id, reviewer="Practitioner/x", action="reject",
                            at=time.time()))
        db.add(ReviewRecord(document_id="d2", run_id=None, reviewer="Practitioner/x", action="approve",
                            at=time.time()))
    body = _scrape(client)
    assert CANARY not in body and "pat-canary" not in body and draft.run_id not in body
    assert f'sda_runs_total{{backend="offline",status="{draft.status}",task="summary"}} 1.0' in body
    assert 'sda_run_duration_seconds_bucket{backend="offline",le="120.0",task="summary"} 1.0' in body
    assert 'route="/healthz"' in body and 'route="unmatched"' in body
    assert "does-not-exist" not in body  # the rule, never the path
    assert 'sda_errors_total{code="not_found"}' in body
    assert "sda_outbox_depth 0.0" in body and "sda_sessions_active 0.0" in body
    assert "sda_override_rate 0.5" in body
