"""Outbox + submission against a fake FHIR server: nothing lost, nothing written twice."""

from datetime import UTC, datetime

import pytest
import requests
import responses

from app.errors import TemporaryUpstreamError
from app.fhir.client import FhirClient
from app.fhir.vendors import PROFILES
from app.store.db import create_tables, make_engine, make_sessionmaker
from app.store.models import Vault
from app.writeback.builders import DraftSpec, SourceDocument
from app.writeback.outbox import Outbox
from app.writeback.submit import WriteContext, build_transaction, submit

BASE = "https://ehr.test/fhir"


@pytest.fixture
def outbox(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/t.db")
    create_tables(engine)
    return Outbox(make_sessionmaker(engine), Vault(b"k"))


def spec(run_id="run-1"):
    return DraftSpec(run_id=run_id, task="summary", loinc_code="60591-5", loinc_display="Patient summary Document",
                     text="Problem list (active): Melanoma.", patient_id="p1", encounter_id=None,
                     author_reference="Practitioner/prac-1",
                     sources=(SourceDocument(id="doc-1", version="1"),),
                     created=datetime(2026, 11, 1, tzinfo=UTC), model_id="m", agent_version="a",
                     prompt_version="summary-v1")


CTX = WriteContext(client_id="c", token_jti="j", user_reference="Practitioner/prac-1", audit_on_server=True)
EMPTY = {"resourceType": "Bundle", "type": "searchset", "entry": []}
OK = {"resourceType": "Bundle", "type": "transaction-response", "entry": [
    {"response": {"status": "201", "location": "DocumentReference/d9/_history/1"}},
    {"response": {"status": "201", "location": "Device/dev1/_history/1"}},
    {"response": {"status": "201", "location": "Provenance/p9/_history/1"}},
    {"response": {"status": "201", "location": "AuditEvent/a9/_history/1"}}]}


def client():
    return FhirClient(BASE, backoff_s=0.001, max_attempts=1)


def test_transaction_shape():
    bundle = build_transaction(spec(), CTX, BASE)
    doc, dev, prov, audit = bundle["entry"]
    assert doc["request"]["ifNoneExist"].endswith("|run-1")
    assert prov["resource"]["target"][0]["reference"] == doc["fullUrl"]
    assert any(a["who"]["reference"] == dev["fullUrl"] for a in prov["resource"]["agent"])
    assert audit["resource"]["resourceType"] == "AuditEvent"


@responses.activate
def test_server_failure_keeps_item_pending_then_retry_writes_once(outbox):
    outbox.put("run-1", BASE, build_transaction(spec(), CTX, BASE))
    responses.get(f"{BASE}/DocumentReference", json=EMPTY)
    responses.post(BASE, status=503)
    with pytest.raises(TemporaryUpstreamError):
        submit(client(), outbox, PROFILES["sekmet"], "run-1")
    assert outbox.get("run-1")["state"] == "pending" and outbox.get("run-1")["attempts"] == 1
    responses.replace(responses.POST, BASE, json=OK)
    written = submit(client(), outbox, PROFILES["sekmet"], "run-1")
    assert written["document_reference"] == "DocumentReference/d9/_history/1"
    assert outbox.get("run-1")["state"] == "sent"


@responses.activate
def test_lost_acknowledgement_is_not_written_twice(outbox):
    """The server committed but the answer never arrived; the retry finds the draft."""
    outbox.put("run-1", BASE, build_transaction(spec(), CTX, BASE))
    responses.get(f"{BASE}/DocumentReference", json=EMPTY)
    responses.post(BASE, body=requests.ConnectionError())
    with pytest.raises(TemporaryUpstreamError):
        submit(client(), outbox, PROFILES["sekmet"], "run-1")
    found = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": {"resourceType": "DocumentReference", "id": "d9"}, "search": {"mode": "match"}}]}
    responses.replace(responses.GET, f"{BASE}/DocumentReference", json=found)
    responses.get(f"{BASE}/Provenance", json={"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": {"resourceType": "Provenance", "id": "p9"}, "search": {"mode": "match"}}]})
    posts_before = sum(1 for c in responses.calls if c.request.method == "POST")
    written = submit(client(), outbox, PROFILES["sekmet"], "run-1")
    assert written["document_reference"] == "DocumentReference/d9"
    assert sum(1 for c in responses.calls if c.request.method == "POST") == posts_before
    assert outbox.get("run-1")["state"] == "sent"


def test_outbox_put_is_idempotent_and_payload_encrypted(outbox, tmp_path):
    outbox.put("run-1", BASE, {"resourceType": "Bundle", "marker": "Zyxwend Canarywhistle"})
    outbox.put("run-1", BASE, {"resourceType": "Bundle", "marker": "second"})
    assert outbox.payload("run-1")["marker"] == "Zyxwend Canarywhistle"
    raw = (tmp_path / "t.db").read_bytes()
    assert b"Canarywhistle" not in raw


def test_server_without_transactions_says_not_built(outbox):
    from app.errors import NotBuiltError

    outbox.put("run-1", BASE, build_transaction(spec(), CTX, BASE))
    with pytest.raises(NotBuiltError):
        submit(client(), outbox, PROFILES["epic"], "run-1")
    assert outbox.get("run-1")["state"] == "pending"
