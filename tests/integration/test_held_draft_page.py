"""A draft held in the app (an EHR that accepts only signed notes, Oracle Health) reviewed from the
page end to end, on the real stack: nothing reaches the EHR until the clinician approves; the
edit made on the page is what is written, final, with its AI Provenance and the verifier's.

Only the vendor detection is faked (Oracle Health cannot run here): the app is told the server is
Oracle's; the server, the authorization server, the outbox and the review service are real."""

from __future__ import annotations

import base64

import requests

from app.fhir.vendors import PROFILES
from app.services import DraftingService
from app.writeback.builders import IDENTIFIER_SYSTEM, REVIEW_TAG_SYSTEM
from tests.integration.conftest import csrf_of, wait_index

EDITED = "Held draft, edited on the page before approval."


def _fhir(stack, path: str, **params: str) -> dict:  # type: ignore[no-untyped-def]
    return requests.get(f"{stack.sandbox.sekmet_base}/{path}", params=params,
                        headers={"Accept": "application/fhir+json"}, timeout=30).json()


def _docs_of_run(stack, run_id: str) -> list[dict]:  # type: ignore[no-untyped-def]
    found = _fhir(stack, "DocumentReference", identifier=f"{IDENTIFIER_SYSTEM}|{run_id}")
    return [e["resource"] for e in found.get("entry", [])]


def test_a_held_draft_is_edited_and_approved_from_the_page(stack, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(DraftingService, "profile", lambda self, client: PROFILES["oracle"])
    http = requests.Session()  # launched from an encounter: Oracle Health needs one on every note
    page = http.get(stack.launch_link(user="prac-onc-1", patient="pat-onc-03") + "&encounter=enc-onc-03-001",
                    timeout=120)
    assert page.status_code == 200
    wait_index(stack, http)
    out = http.post(stack.app_url + "/api/drafts", json={"task": "summary"},
                    headers={"X-CSRF-Token": csrf_of(page.text)}, timeout=300)
    assert out.status_code == 201, out.text[:300]
    run_id = out.json()["run"]["run_id"]
    assert out.json()["writeback"]["state"] == "held_until_approval"
    assert _docs_of_run(stack, run_id) == []  # nothing in the EHR yet

    shown = http.get(f"{stack.app_url}/drafts/{run_id}", timeout=60)
    assert shown.status_code == 200 and f"/drafts/{run_id}/review" in shown.text
    assert "Held in the app" in shown.text
    csrf = csrf_of(shown.text)
    chart = http.get(stack.app_url + "/", timeout=60).text
    assert "badge-held" in chart

    edit = http.post(f"{stack.app_url}/drafts/{run_id}/review", allow_redirects=False, timeout=120,
                     data={"action": "edit", "text": EDITED, "csrf_token": csrf})
    assert edit.status_code == 302
    assert _docs_of_run(stack, run_id) == []  # an edit of a held draft stays in the app

    approve = http.post(f"{stack.app_url}/drafts/{run_id}/review", allow_redirects=False, timeout=300,
                        data={"action": "approve", "ack_unsupported": "yes", "csrf_token": csrf})
    assert approve.status_code == 302, approve.text[-600:]
    [doc] = _docs_of_run(stack, run_id)
    assert doc["docStatus"] == "final" and doc["authenticator"]["reference"] == "Practitioner/prac-onc-1"
    assert doc["context"]["encounter"][0]["reference"] == "Encounter/enc-onc-03-001"
    assert base64.b64decode(doc["content"][0]["attachment"]["data"]).decode() == EDITED
    provs = [e["resource"] for e in _fhir(stack, "Provenance", target=f"DocumentReference/{doc['id']}")
             .get("entry", [])]
    review_tags = [[t for t in (p.get("meta") or {}).get("tag", []) if t.get("system") == REVIEW_TAG_SYSTEM]
                   for p in provs]
    assert sorted(bool(t) for t in review_tags) == [False, True]  # the AI Provenance and the verifier's
    assert [t[0]["code"] for t in review_tags if t] == ["approved"]

    after = http.get(f"{stack.app_url}/drafts/{run_id}", timeout=60).text
    assert "Approved" in after
    again = http.post(f"{stack.app_url}/drafts/{run_id}/review", allow_redirects=False, timeout=120,
                      data={"action": "approve", "ack_unsupported": "yes", "csrf_token": csrf})
    assert again.status_code == 409  # approved once; nothing more is written
    assert len(_docs_of_run(stack, run_id)) == 1
