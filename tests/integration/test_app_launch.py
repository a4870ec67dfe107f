"""The app launched by the sandbox EHR over real HTTP, end to end."""

from __future__ import annotations

import json

import pytest
import requests

from tests.integration.conftest import csrf_of, launch, wait_index


def base64_decoded(dumped: str) -> str:
    """BALP puts the query in entity.query as base64: decode every value for the check."""
    import base64

    out = []
    for value in json.loads(dumped):
        try:
            out.append(base64.b64decode(value).decode("utf-8", errors="replace"))
        except ValueError:
            out.append(value)
    return "\n".join(out)

pytestmark = pytest.mark.integration


def session_payload(cookie: str) -> dict:
    """Decode Flask's signed (not encrypted) session cookie to check what it holds."""
    import base64
    import json
    import zlib

    data = cookie.split(".")[0] if not cookie.startswith(".") else cookie.split(".")[1]
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    if cookie.startswith("."):
        raw = zlib.decompress(raw)
    return json.loads(raw)


def test_launch_link_lands_on_chart_naming_the_patient(stack):
    patient = requests.get(f"{stack.sandbox.sekmet_base}/Patient/pat-onc-01",
                           headers={"Accept": "application/fhir+json"}, timeout=30).json()
    family = patient["name"][0]["family"]
    http, resp = launch(stack)
    assert resp.status_code == 200
    assert resp.url.rstrip("/") == stack.app_url
    assert family in resp.text
    # the browser holds only an opaque session id and the CSRF token, never a token
    cookie = http.cookies.get("sda_session")
    assert set(session_payload(cookie)) <= {"sid", "csrf", "_permanent"}
    assert "access_token" not in resp.text and "Bearer" not in resp.text


def test_draft_is_written_and_read_back_preliminary(stack):
    http, resp = launch(stack)
    status = wait_index(stack, http)
    assert status["progress"]["state"] == "ready" and status["chunks"] > 0
    out = http.post(stack.app_url + "/api/drafts", json={"task": "summary"},
                    headers={"X-CSRF-Token": csrf_of(resp.text)}, timeout=300)
    assert out.status_code == 201, out.text[:300]
    body = out.json()
    assert body["writeback"]["state"] == "written"
    assert body["draft"]["sentences"] and any(s["supported"] for s in body["draft"]["sentences"])
    ref = body["written"]["document_reference"].split("/")
    doc = requests.get(f"{stack.sandbox.sekmet_base}/{ref[0]}/{ref[1]}",
                       headers={"Accept": "application/fhir+json"}, timeout=30).json()
    assert doc["docStatus"] == "preliminary" and doc["status"] == "current"
    assert any(s.get("code") == "AIAST" for s in doc["meta"]["security"])
    prov_ref = body["written"]["provenance"].split("/")
    prov = requests.get(f"{stack.sandbox.sekmet_base}/{prov_ref[0]}/{prov_ref[1]}",
                        headers={"Accept": "application/fhir+json"}, timeout=30).json()
    assert prov["target"][0]["reference"].startswith(f"DocumentReference/{doc['id']}")
    cited = {c["document"] for s in body["draft"]["sentences"] for c in s["citations"]}
    sources = {e["what"]["reference"].split("/")[1] for e in prov["entity"] if e["role"] == "source"}
    assert cited == sources


def test_post_without_csrf_is_refused(stack):
    http, _resp = launch(stack)
    out = http.post(stack.app_url + "/api/drafts", json={"task": "summary"}, timeout=60)
    assert out.status_code == 403 and out.json()["error"]["code"] == "csrf_failed"


def test_unknown_iss_gets_error_page(stack):
    resp = requests.get(stack.app_url + "/launch", params={"iss": "https://evil.test/fhir", "launch": "x"},
                        timeout=30, allow_redirects=False)
    assert resp.status_code == 400 and "not registered" in resp.text


def test_callback_with_forged_state_is_refused(stack):
    resp = requests.get(stack.app_url + "/callback", params={"code": "abc", "state": "forged"}, timeout=30)
    assert resp.status_code == 400 and "bad_state" in resp.text


def test_without_session_the_chart_asks_to_launch(stack):
    resp = requests.get(stack.app_url + "/", timeout=30)
    assert resp.status_code == 401 and "Launch the app again" in resp.text


def test_chart_reads_are_in_the_audit_trail(stack):
    http, _resp = launch(stack, patient="pat-onc-03")
    wait_index(stack, http)
    events = stack.flask_app.extensions["smart_draft"].audit.entries()
    mine = [e for e in events if any((ent.get("what") or {}).get("reference") == "Patient/pat-onc-03"
                                     for ent in e.get("entity", []))]
    subtypes = {c.get("code") for e in mine for c in e.get("subtype", [])}
    assert {"read", "search-type"} <= subtypes, subtypes
    assert all(e["action"] in ("R", "E", "C", "U") for e in mine)
    # searches carry parameter names only, never values
    queries = json.dumps([ent.get("query") for e in mine for ent in e.get("entity", []) if ent.get("query")])
    assert "pat-onc-03" not in base64_decoded(queries)
