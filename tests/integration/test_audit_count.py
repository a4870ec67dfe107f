"""How many AuditEvents each user action makes (docs/operations.md, "Audit trail"), on the real stack.

One audit layer: the FHIR client records each interaction once, in a
``finally``; services add only the model call. A search stopped early and a
failed request are recorded too, once each.
"""

from __future__ import annotations

import pytest
import requests
import responses

from app.audit.fhir import AuditedFhirClient
from app.audit.trail import AuditTrail
from app.errors import TemporaryUpstreamError
from app.store.db import create_tables, make_engine, make_sessionmaker
from tests.integration.conftest import csrf_of, launch, wait_index

BASE = "https://ehr.test/fhir"


def _codes(entries: list[dict]) -> list[tuple[str, str, str]]:
    return [(e["action"], e["subtype"][0]["code"], e["outcome"]) for e in entries]


def _trail(tmp_path) -> AuditTrail:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    create_tables(engine)
    return AuditTrail(make_sessionmaker(engine))


@responses.activate
def test_a_search_stopped_early_and_a_failure_are_each_recorded_once(tmp_path):
    trail = _trail(tmp_path)
    client = AuditedFhirClient(BASE, trail=trail, client_id="c", user_reference="Practitioner/p",
                               max_attempts=2, backoff_s=0.001)
    two = {"resourceType": "Bundle", "type": "searchset",
           "entry": [{"resource": {"resourceType": "Device", "id": "d1"}},
                     {"resource": {"resourceType": "Device", "id": "d2"}}]}
    responses.get(f"{BASE}/Device", json=two)
    for found in client.search("Device", {"identifier": "s|v"}):  # as Submitter._search_one does
        assert found["id"] == "d1"
        break
    responses.get(f"{BASE}/Patient/1", status=503)
    with pytest.raises(TemporaryUpstreamError):
        client.read("Patient", "1")
    assert _codes(trail.entries()) == [("E", "search-type", "0"), ("R", "read", "8")]
    assert all(any((a.get("who") or {}).get("reference") == "Practitioner/p" for a in e["agent"])
               for e in trail.entries())


@pytest.mark.integration
def test_audit_events_per_user_action(stack):  # type: ignore[no-untyped-def]
    audit = stack.flask_app.extensions["smart_draft"].audit
    http, resp = launch(stack, user="prac-onc-1", patient="pat-onc-02")
    assert resp.status_code == 200
    assert wait_index(stack, http)["progress"]["state"] == "ready"
    csrf = csrf_of(resp.text)

    def action(call) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
        before = len(audit.entries())
        out = call()
        assert out.status_code in (200, 201), out.text[:300]
        return _codes(audit.entries()[before:])

    drafted: dict = {}

    def draft():  # type: ignore[no-untyped-def]
        r = http.post(stack.app_url + "/api/drafts", json={"task": "summary"}, headers={"X-CSRF-Token": csrf},
                      timeout=300)
        drafted.update(r.json())
        return r

    def review(run_id: str, **body):  # type: ignore[no-untyped-def]
        return lambda: http.post(f"{stack.app_url}/api/drafts/{run_id}/review", json=body,
                                 headers={"X-CSRF-Token": csrf}, timeout=60)

    # draft + write (transaction server): was the run already written? the transaction; the model call
    assert sorted(action(draft)) == sorted([("E", "search-type", "0"), ("E", "transaction", "0"),
                                            ("E", "model-call", "0")])
    run_a = drafted["run"]["run_id"]
    # edit: read the draft, update it
    assert action(review(run_a, action="edit", text="Edited text.")) == [("R", "read", "0"), ("U", "update", "0")]
    # approve: read, update (final), the verifier Provenance
    assert action(review(run_a, action="approve", ack_unsupported=True)) == [
        ("R", "read", "0"), ("U", "update", "0"), ("C", "create", "0")]
    action(draft)
    # reject: read, update (entered-in-error), the rejection Provenance
    assert action(review(drafted["run"]["run_id"], action="reject", reason="inaccurate")) == [
        ("R", "read", "0"), ("U", "update", "0"), ("C", "create", "0")]
    assert requests.get(stack.app_url + "/healthz", timeout=10).status_code == 200
