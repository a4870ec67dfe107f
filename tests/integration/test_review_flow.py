"""Review through the app's HTTP routes against the sandbox, checked on the FHIR server itself.

Draft → approve (final, authenticator, verifier Provenance), draft → reject
(entered-in-error, rejection Provenance), a stale approval → 409 with what
changed, re-submitting a run writes nothing new, and ``python -m app audit
verify`` passes, then fails after one byte of the trail is changed.
"""

from __future__ import annotations

import sqlite3

import pytest
import requests
from click.testing import CliRunner

from app.writeback.builders import IDENTIFIER_SYSTEM, REVIEW_TAG_SYSTEM
from tests.integration.conftest import csrf_of, launch, wait_index

pytestmark = pytest.mark.integration
H = {"Accept": "application/fhir+json", "Cache-Control": "no-cache"}
USER = "prac-onc-1"


@pytest.fixture(scope="module")
def session(stack):  # type: ignore[no-untyped-def]
    http, resp = launch(stack, user=USER, patient="pat-onc-01")
    assert resp.status_code == 200
    assert wait_index(stack, http)["progress"]["state"] == "ready"
    return http, csrf_of(resp.text)


def _draft(stack, session) -> dict:  # type: ignore[no-untyped-def]
    http, csrf = session
    resp = http.post(stack.app_url + "/api/drafts", json={"task": "summary"},
                     headers={"X-CSRF-Token": csrf}, timeout=300)
    assert resp.status_code == 201, resp.text[:300]
    body = resp.json()
    assert body["writeback"]["state"] == "written", body["writeback"]
    return body


def _review(stack, session, run_id: str, **payload):  # type: ignore[no-untyped-def]
    http, csrf = session
    return http.post(f"{stack.app_url}/api/drafts/{run_id}/review", json=payload,
                     headers={"X-CSRF-Token": csrf}, timeout=60)


def _fhir(stack, path: str, **params) -> dict:  # type: ignore[no-untyped-def]
    resp = requests.get(f"{stack.sandbox.sekmet_base}/{path}", params=params, headers=H, timeout=30)
    assert resp.status_code == 200, path
    return resp.json()


def _by_run(stack, run_id: str) -> list[dict]:  # type: ignore[no-untyped-def]
    bundle = _fhir(stack, "DocumentReference", identifier=f"{IDENTIFIER_SYSTEM}|{run_id}")
    return [e["resource"] for e in bundle.get("entry", [])]


def _provenances(stack, doc_id: str) -> list[dict]:  # type: ignore[no-untyped-def]
    bundle = _fhir(stack, "DocumentReference", _id=doc_id, _revinclude="Provenance:target")
    return [e["resource"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == "Provenance"]


def _tagged(provs: list[dict], code: str) -> list[dict]:
    return [p for p in provs if {"system": REVIEW_TAG_SYSTEM, "code": code, "display": code}
            in (p.get("meta") or {}).get("tag", [])]


def test_approve_is_visible_on_the_server_with_its_provenance(stack, session) -> None:  # type: ignore[no-untyped-def]
    body = _draft(stack, session)
    run_id = body["run"]["run_id"]
    [doc] = _by_run(stack, run_id)
    assert doc["docStatus"] == "preliminary" and doc["status"] == "current"
    assert len([p for p in _provenances(stack, doc["id"]) if not _tagged([p], "approved")]) == 1
    if body["flags"]["unsupported_sentences"]:
        refused = _review(stack, session, run_id, action="approve")
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "unsupported_not_acknowledged"
    resp = _review(stack, session, run_id, action="approve", ack_unsupported=True)
    assert resp.status_code == 200, resp.text[:300]
    [doc] = _by_run(stack, run_id)
    assert doc["docStatus"] == "final"
    assert doc["authenticator"] == {"reference": f"Practitioner/{USER}"}
    [approval] = _tagged(_provenances(stack, doc["id"]), "approved")
    assert approval["target"] == [{"reference": f"DocumentReference/{doc['id']}/_history/{doc['meta']['versionId']}"}]
    verifier = [a for a in approval["agent"] if a["type"]["coding"][0]["code"] == "verifier"]
    assert verifier and verifier[0]["who"] == {"reference": f"Practitioner/{USER}"}
    assert resp.json()["provenance"] == f"Provenance/{approval['id']}"
    # approvals are findable by tag (docs/integrators.md)
    found = _fhir(stack, "Provenance", _tag=f"{REVIEW_TAG_SYSTEM}|approved")
    assert approval["id"] in {e["resource"]["id"] for e in found.get("entry", [])}


def test_reject_is_visible_on_the_server_with_its_provenance(stack, session) -> None:  # type: ignore[no-untyped-def]
    run_id = _draft(stack, session)["run"]["run_id"]
    missing = _review(stack, session, run_id, action="reject", reason="because I say so")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "reason_missing"
    resp = _review(stack, session, run_id, action="reject", reason="unsupported_claims")
    assert resp.status_code == 200, resp.text[:300]
    [doc] = _by_run(stack, run_id)
    assert doc["status"] == "entered-in-error" and doc["docStatus"] == "preliminary"
    [rejection] = _tagged(_provenances(stack, doc["id"]), "rejected")
    assert rejection["reason"][0]["coding"][0]["code"] == "unsupported_claims"
    assert rejection["activity"]["coding"][0]["code"] == "NULLIFY"


def test_edit_then_stale_approval_reports_the_conflict(stack, session) -> None:  # type: ignore[no-untyped-def]
    run_id = _draft(stack, session)["run"]["run_id"]
    edited = _review(stack, session, run_id, action="edit", text="Edited synthetic summary.")
    assert edited.status_code == 200 and edited.json()["document_reference"].endswith("/_history/2")
    [doc] = _by_run(stack, run_id)
    # someone else changes the document on the EHR meanwhile
    doc["docStatus"] = "amended"
    put = requests.put(f"{stack.sandbox.sekmet_base}/DocumentReference/{doc['id']}", json=doc,
                       headers={"Content-Type": "application/fhir+json"}, timeout=30)
    assert put.status_code == 200, put.text[:300]
    stale = _review(stack, session, run_id, action="approve", ack_unsupported=True)
    assert stale.status_code == 409
    out = stale.json()
    assert out["error"]["code"] == "review_conflict"
    assert out["changes"]["seen_version"] == "2" and out["changes"]["current_version"] == "3"
    assert out["changes"]["docStatus"] == {"seen": "preliminary", "current": "amended"}
    [doc] = _by_run(stack, run_id)
    assert doc["docStatus"] == "amended" and not _tagged(_provenances(stack, doc["id"]), "approved")
    history = stack.flask_app.extensions["smart_draft"].maker
    from sqlalchemy import select

    from app.review.workflow import ReviewRecord

    with history() as db:
        [rec] = db.scalars(select(ReviewRecord).where(ReviewRecord.run_id.is_(None),
                                                      ReviewRecord.document_id == doc["id"],
                                                      ReviewRecord.action == "edit")).all()
    assert rec.edit_distance and rec.edit_distance > 0


def test_resubmitting_a_run_writes_nothing_new(stack, session) -> None:  # type: ignore[no-untyped-def]
    from app.fhir.client import FhirClient
    from app.fhir.vendors import PROFILES
    from app.writeback.submit import submit

    run_id = _draft(stack, session)["run"]["run_id"]
    services = stack.flask_app.extensions["smart_draft"]
    counts = {t: _fhir(stack, t, _summary="count").get("total") for t in ("DocumentReference", "Provenance")}
    client = FhirClient(stack.sandbox.sekmet_base)
    first = services.outbox.get(run_id)["written"]
    assert submit(client, services.outbox, PROFILES["sekmet"], run_id) == first
    # even when the local acknowledgement was lost, the server is asked first
    services.outbox.set_state(run_id, "pending")
    again = submit(client, services.outbox, PROFILES["sekmet"], run_id)
    assert again["document_reference"].split("/_history")[0] == first["document_reference"].split("/_history")[0]
    assert len(_by_run(stack, run_id)) == 1
    assert counts == {t: _fhir(stack, t, _summary="count").get("total") for t in ("DocumentReference", "Provenance")}


def test_audit_verify_cli_passes_then_fails_after_one_byte(stack, session, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from app.cli import main

    services = stack.flask_app.extensions["smart_draft"]
    assert len(services.audit.entries()) >= 3
    monkeypatch.setenv("APP_DATABASE_URL", services.settings.effective_database_url)
    monkeypatch.setenv("APP_DATA_DIR", str(services.settings.data_dir))
    runner = CliRunner()
    ok = runner.invoke(main, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    path = services.settings.effective_database_url.removeprefix("sqlite:///")
    con = sqlite3.connect(path)
    try:
        seq, body = con.execute("SELECT seq, event_json FROM audit_entries ORDER BY seq LIMIT 1 OFFSET 1").fetchone()
        i = body.index('"outcome":"') + len('"outcome":"')
        changed = body[:i] + ("4" if body[i] == "0" else "0") + body[i + 1:]
        assert len(changed) == len(body) and changed != body
        con.execute("UPDATE audit_entries SET event_json=? WHERE seq=?", (changed, seq))
        con.commit()
        bad = runner.invoke(main, ["audit", "verify"])
        assert bad.exit_code == 1 and f'"first_bad_seq": {seq}' in bad.output
    finally:  # the stack is shared with other test files: put the byte back
        con.execute("UPDATE audit_entries SET event_json=? WHERE seq=?", (body, seq))
        con.commit()
        con.close()
    assert runner.invoke(main, ["audit", "verify"]).exit_code == 0


def test_integrator_queries_of_docs_integrators_md(stack, session) -> None:  # type: ignore[no-untyped-def]
    """The queries docs/integrators.md lists, run as written against the sandbox's FHIR server."""
    body = _draft(stack, session)
    run_id = body["run"]["run_id"]
    [doc] = _by_run(stack, run_id)
    ids = lambda bundle, t: {e["resource"]["id"] for e in bundle.get("entry", [])  # noqa: E731
                             if e["resource"]["resourceType"] == t}
    by_system = _fhir(stack, "DocumentReference", patient="Patient/pat-onc-01",
                      identifier=f"{IDENTIFIER_SYSTEM}|")
    by_label = _fhir(stack, "DocumentReference", patient="Patient/pat-onc-01",
                     _security="http://terminology.hl7.org/CodeSystem/v3-ObservationValue|AIAST")
    assert doc["id"] in ids(by_system, "DocumentReference") and doc["id"] in ids(by_label, "DocumentReference")
    # drafts by model version: Device by identifier, then its Provenance with the targets
    [ai] = [p for p in _provenances(stack, doc["id"])  # the AI Provenance: no review tag
            if not any(t.get("system") == REVIEW_TAG_SYSTEM for t in (p.get("meta") or {}).get("tag") or [])]
    device_ref = next(a["who"]["reference"] for a in ai["agent"] if a["type"]["coding"][0]["code"] == "author")
    device = _fhir(stack, device_ref)
    [ident] = [i for i in device["identifier"] if i["system"] == "urn:smart-draft-agent:ai-device"]
    assert ident["value"] == f"{body['run']['model']}@" + ident["value"].split("@")[1]
    found = _fhir(stack, "Device", identifier=f"urn:smart-draft-agent:ai-device|{ident['value']}")
    assert ids(found, "Device") == {device["id"]}
    drafts = _fhir(stack, "Provenance", agent=f"Device/{device['id']}", _include="Provenance:target")
    assert doc["id"] in ids(drafts, "DocumentReference")
    # the model call is in the local trail, without text
    events = stack.flask_app.extensions["smart_draft"].audit.entries()
    calls = [e for e in events if e["subtype"][0]["code"] == "model-call"
             and {"system": IDENTIFIER_SYSTEM, "value": run_id} in
             [x["what"].get("identifier") for x in e["entity"]]]
    assert len(calls) == 1
