"""Every read, search, create, update, transaction and model call lands in the trail, BALP-shaped."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime

import pytest
import responses
from fhirclient.models.bundle import Bundle as FCBundle

from app.audit.fhir import AuditedFhirClient
from app.audit.trail import AuditTrail
from app.errors import FhirError, TemporaryUpstreamError
from app.fhir.client import StaticToken
from app.store.db import create_tables, make_engine, make_sessionmaker
from app.writeback import profiles

BASE = "https://ehr.test/fhir"
CANARY = "Zyxwend Canarywhistle"
TOKEN = "secret-access-token-value"  # noqa: S105 (test value)


@pytest.fixture
def trail(tmp_path) -> AuditTrail:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path}/a.db")
    create_tables(engine)
    return AuditTrail(make_sessionmaker(engine))


class Jti(StaticToken):
    @property
    def jti(self) -> str | None:
        return "jti-42"


def _client(trail: AuditTrail) -> AuditedFhirClient:
    return AuditedFhirClient(BASE, Jti(TOKEN), trail=trail, client_id="app-1",
                             user_reference="Practitioner/prac-1", patient_id="p1",
                             max_attempts=1, backoff_s=0.001)


def _codes(event: dict) -> tuple[str, str, str]:
    return event["action"], event["subtype"][0]["code"], event["outcome"]


def _entities(event: dict) -> list[str]:
    return [e["what"]["reference"] for e in event.get("entity", []) if "reference" in e.get("what", {})]


DOC = {"resourceType": "DocumentReference", "id": "d1", "meta": {"versionId": "1"}, "status": "current",
       "subject": {"reference": "Patient/p1"},
       "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(CANARY.encode()).decode()}}]}


@responses.activate
def test_every_interaction_is_recorded(trail: AuditTrail) -> None:
    responses.get(f"{BASE}/DocumentReference/d1", json=DOC)
    responses.get(f"{BASE}/DocumentReference/d1/_history/1", json=DOC)
    responses.get(f"{BASE}/DocumentReference", json={"resourceType": "Bundle", "type": "searchset",
                                                     "entry": [{"resource": DOC}]})
    responses.post(f"{BASE}/Provenance", status=201, json={"resourceType": "Provenance", "id": "pv1"})
    responses.put(f"{BASE}/DocumentReference/d1", json=DOC)
    responses.post(BASE, json={"resourceType": "Bundle", "type": "transaction-response", "entry": [
        {"response": {"status": "201", "location": "DocumentReference/d2/_history/1"}}]})
    c = _client(trail)
    c.read("DocumentReference", "d1")
    c.vread("DocumentReference", "d1", "1")
    assert len(list(c.search("DocumentReference", {"patient": "Patient/p1", "description": CANARY}))) == 1
    prov = {"resourceType": "Provenance", "target": [{"reference": "DocumentReference/d1"}],
            "recorded": "2026-01-01T00:00:00Z", "agent": [{"who": {"reference": "Practitioner/prac-1"}}]}
    c.create(prov)
    doc = copy.deepcopy(DOC)
    c.update(doc, if_match='W/"1"')
    c.transaction({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:7d2b0f55-0b8e-4b8e-9a3e-64c0f3f0a111", "resource": {
            **{k: v for k, v in DOC.items() if k not in ("id", "meta")}, "docStatus": "preliminary"},
         "request": {"method": "POST", "url": "DocumentReference"}}]})
    events = trail.entries()
    assert [_codes(e) for e in events] == [("R", "read", "0"), ("R", "vread", "0"), ("E", "search-type", "0"),
                                           ("C", "create", "0"), ("U", "update", "0"),
                                           ("E", "transaction", "0")]
    assert _entities(events[0])[0] == "DocumentReference/d1"
    assert _entities(events[1])[0] == "DocumentReference/d1/_history/1"
    query = base64.b64decode(next(e["query"] for e in events[2]["entity"] if "query" in e)).decode()
    assert query == "DocumentReference?description&patient"  # names only, never values
    assert _entities(events[3])[0] == "Provenance/pv1"
    assert _entities(events[5])[0] == "DocumentReference/d2"
    for event in events:
        assert "Patient/p1" in _entities(event)
        assert profiles.check(event) == [], profiles.check(event)
        user = [a for a in event["agent"] if a.get("requestor")][0]
        assert user["who"] == {"reference": "Practitioner/prac-1"} and user["policy"] == ["jti-42"]
    text = json.dumps(events)
    assert "Canarywhistle" not in text and TOKEN not in text
    assert trail.verify().ok


@responses.activate
def test_failures_are_recorded_and_reraised(trail: AuditTrail) -> None:
    responses.get(f"{BASE}/DocumentReference/gone", status=404)
    responses.get(f"{BASE}/Condition", status=503)
    c = _client(trail)
    with pytest.raises(FhirError):
        c.read("DocumentReference", "gone")
    with pytest.raises(TemporaryUpstreamError):
        list(c.search("Condition", {"patient": "p1"}))
    assert [_codes(e) for e in trail.entries()] == [("R", "read", "4"), ("E", "search-type", "8")]


def test_model_call_is_recorded_without_text(trail: AuditTrail) -> None:
    t0 = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
    t1 = datetime(2026, 1, 15, 9, 30, 4, tzinfo=UTC)
    trail.record_model_call(started=t0, ended=t1, outcome="0", user_reference="Practitioner/prac-1",
                            client_id="app-1", token_jti="jti-1", backend="anthropic",
                            model_id="claude-test-1", run_id="run-9", patient_id="p1")
    [event] = trail.entries()
    assert event["type"]["code"] == "110100" and event["subtype"][0]["code"] == "model-call"
    assert event["period"] == {"start": "2026-01-15T09:30:00Z", "end": "2026-01-15T09:30:04Z"}
    ids = {(e["what"].get("identifier") or {}).get("value") for e in event["entity"]}
    assert {"anthropic/claude-test-1", "run-9"} <= ids
    assert profiles.check(event) == []
    with pytest.raises(ValueError):
        trail.record_model_call(started=t0, ended=t1, outcome="1", user_reference=None, client_id="a",
                                token_jti=None, backend="b", model_id="m", run_id="r", patient_id=None)


@responses.activate
def test_export_is_a_bundle_both_parsers_accept(trail: AuditTrail) -> None:
    responses.get(f"{BASE}/DocumentReference/d1", json=DOC)
    _client(trail).read("DocumentReference", "d1")
    trail.record_model_call(started=datetime(2026, 1, 1, tzinfo=UTC), ended=datetime(2026, 1, 1, tzinfo=UTC),
                            outcome="0", user_reference=None, client_id="a", token_jti=None,
                            backend="offline", model_id="m", run_id="r", patient_id="p1")
    bundle = trail.export_bundle()
    FCBundle(copy.deepcopy(bundle), strict=True)
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["1", "2"]
    for entry in bundle["entry"]:
        assert profiles.check(entry["resource"]) == []
