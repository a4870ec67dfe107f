"""The sandbox's FHIR proxy enforces token, scopes and the patient compartment."""

from __future__ import annotations

import json

import pytest
import requests

from sandbox import Sandbox
from sandbox.fhirstore import FIXTURE_BUNDLES, free_port
from sandbox.testing import bearer, ehr_launch

pytestmark = pytest.mark.integration

APP = "smart-draft-agent"
PATIENT_SCOPE = "launch patient/Patient.r patient/Condition.rs patient/DocumentReference.rs patient/Binary.r"


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    s = Sandbox(tmp_path_factory.mktemp("sandbox-proxy"), bundles_dir=FIXTURE_BUNDLES, token_lifetime=60,
                clients=[{"client_id": APP, "redirect_uris": [redirect]}])
    s.redirect = redirect  # type: ignore[attr-defined]
    s.start()
    yield s
    s.stop()


def token(sb, scope=PATIENT_SCOPE, patient="pat-onc-01"):
    return ehr_launch(sb, client_id=APP, redirect_uri=sb.redirect, scope=scope, patient=patient)["access_token"]


def test_metadata_is_open(sb):
    r = requests.get(sb.fhir_base + "/metadata", timeout=10)
    assert r.status_code == 200 and r.json()["resourceType"] == "CapabilityStatement"
    assert sb.sekmet_base not in r.text


@pytest.mark.parametrize("auth", [None, "Bearer not-a-token", "Basic abc"])
def test_401_without_valid_token(sb, auth):
    headers = {"Authorization": auth} if auth else {}
    r = requests.get(sb.fhir_base + "/Patient/pat-onc-01", headers=headers, timeout=10)
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_403_missing_scope(sb):
    h = bearer(token(sb, "launch patient/Patient.r"))
    for url in ("/Condition?patient=pat-onc-01", "/Observation?patient=pat-onc-01"):
        r = requests.get(sb.fhir_base + url, headers=h, timeout=10)
        assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
    doc = {"resourceType": "Condition", "subject": {"reference": "Patient/pat-onc-01"}, "code": {"text": "x"}}
    r = requests.post(sb.fhir_base + "/Condition", json=doc, headers=h, timeout=10)
    assert r.status_code == 403


def test_403_other_patients_data(sb):
    h = bearer(token(sb))
    for url in ("/Patient/pat-canary", "/Condition?patient=pat-canary", "/Condition?subject=Patient/pat-canary",
                "/Condition/cond-canary-a", "/DocumentReference/doc-canary-1", "/Patient?_id=pat-canary"):
        r = requests.get(sb.fhir_base + url, headers=h, timeout=10)
        assert r.status_code == 403, url
        assert r.json()["resourceType"] == "OperationOutcome"
    ok = requests.get(sb.fhir_base + "/Condition/cond-onc-01-a", headers=h, timeout=10)
    assert ok.status_code == 200


def test_search_without_patient_is_limited(sb):
    h = bearer(token(sb))
    r = requests.get(sb.fhir_base + "/DocumentReference", headers=h, timeout=10)
    assert r.status_code == 200
    subjects = {e["resource"]["subject"]["reference"] for e in r.json().get("entry", [])}
    assert subjects == {"Patient/pat-onc-01"}
    assert "CANARY" not in r.text


def test_user_scopes_not_compartment_limited(sb):
    h = bearer(token(sb, "launch user/Condition.rs"))
    r = requests.get(sb.fhir_base + "/Condition?patient=pat-canary", headers=h, timeout=10)
    assert r.status_code == 200 and r.json()["total"] == 1


def test_system_scopes_need_backend_token(sb):
    assert "system/" not in " ".join(sb.clients[APP].scopes)
    sb.register_client({"client_id": "greedy-app", "redirect_uris": [sb.redirect],
                        "scopes": "launch system/*.rs"})
    tok = ehr_launch(sb, client_id="greedy-app", redirect_uri=sb.redirect, scope="launch system/*.rs")
    r = requests.get(sb.fhir_base + "/Condition?patient=pat-canary", headers=bearer(tok["access_token"]),
                     timeout=10)
    assert r.status_code == 403


def test_pass_through_links_rewritten(sb):
    h = bearer(token(sb))
    r = requests.get(sb.fhir_base + "/Condition", params={"patient": "pat-onc-01", "_count": "1"},
                     headers=h, timeout=10)
    assert r.status_code == 200
    links = {link["relation"]: link["url"] for link in r.json()["link"]}
    assert links["next"].startswith(sb.fhir_base + "/Condition?")
    assert sb.sekmet_base not in r.text
    page2 = requests.get(links["next"], headers=h, timeout=10)
    assert page2.status_code == 200 and page2.json()["entry"][0]["resource"]["id"] != \
        r.json()["entry"][0]["resource"]["id"]


def test_write_pass_through_and_location(sb):
    scope = "launch patient/Condition.rs user/DocumentReference.cu user/Provenance.c"
    h = dict(bearer(token(sb, scope)), **{"Content-Type": "application/fhir+json",
                                         "Prefer": "return=representation"})
    doc = {"resourceType": "DocumentReference", "status": "current", "docStatus": "preliminary",
           "subject": {"reference": "Patient/pat-onc-01"},
           "identifier": [{"system": "urn:example:sandbox-test", "value": "draft-1"}],
           "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]},
           "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "data": "ZHJhZnQ="}}]}
    r = requests.post(sb.fhir_base + "/DocumentReference", data=json.dumps(doc), headers=h, timeout=10)
    assert r.status_code == 201, r.text
    assert r.headers["Location"].startswith(sb.fhir_base + "/DocumentReference/")
    created = r.json()
    created["docStatus"] = "final"
    put = requests.put(f"{sb.fhir_base}/DocumentReference/{created['id']}", data=json.dumps(created),
                       headers=dict(h, **{"If-Match": r.headers.get("ETag", 'W/"1"')}), timeout=10)
    assert put.status_code == 200, put.text
    gone = requests.delete(f"{sb.fhir_base}/DocumentReference/{created['id']}", headers=h, timeout=10)
    assert gone.status_code == 403  # no d granted


def test_binary_needs_binary_scope(sb):
    assert requests.get(sb.fhir_base + "/Binary/bin-onc-01", headers=bearer(token(sb)),
                        timeout=10).status_code == 200
    no_binary = token(sb, "launch patient/Patient.r")
    assert requests.get(sb.fhir_base + "/Binary/bin-onc-01", headers=bearer(no_binary),
                        timeout=10).status_code == 403


def test_launcher_page_lists_users_and_patients(sb):
    page = requests.get(sb.launcher_url, timeout=10).text
    assert "prac-psych-1" in page and "pat-onc-01" in page and "pat-canary" in page
