"""Attachment URLs judged after decoding, and /metrics behind auth (issue 11, finding 9).

``…/fhir/%2e%2e/%2e%2e/x`` passed the "inside the FHIR base" check and the token was sent;
``/metrics`` needed no login.
"""

from __future__ import annotations

import base64

import pytest
import responses

from app import create_app
from app.fhir.attachments import extract_text, safe_reference
from app.fhir.client import FhirClient
from app.web.state import LaunchState

BASE = "https://ehr.test/fhir"


@pytest.mark.parametrize("url", [
    f"{BASE}/%2e%2e/%2e%2e/x", f"{BASE}/%2E%2E/admin", f"{BASE}/Binary/%2e%2e/%2e%2e/x",
    "Binary/%2e%2e/%2e%2e/secret", "%2e%2e/%2e%2e/x", f"{BASE}/%252e%252e/x",
    f"{BASE}/Binary/..%2fx", f"{BASE}/Binary/.%2e/x", f"{BASE}/Binary/%5c..%5cx",
    "https://other.test/fhir/Binary/1", f"{BASE}/Binary/a%00b", "Binary/./1",
])
def test_encoded_dot_segments_and_foreign_urls_are_refused_and_never_fetched(url: str) -> None:
    client = FhirClient(BASE, max_attempts=1)
    assert not safe_reference(client, url)
    doc = {"content": [{"attachment": {"contentType": "text/plain", "url": url}}]}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        out = extract_text(client, doc)
        assert len(mock.calls) == 0  # the token went nowhere
    assert out.text is None and out.skipped == "foreign_url"


def test_plain_binary_references_are_still_fetched() -> None:
    client = FhirClient(BASE, max_attempts=1)
    assert safe_reference(client, "Binary/bin-1") and safe_reference(client, f"{BASE}/Binary/b.1")
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/Binary/bin-1", json={"resourceType": "Binary", "contentType": "text/plain",
                                                "data": base64.b64encode(b"note text").decode()})
        out = extract_text(client, {"content": [{"attachment": {"contentType": "text/plain",
                                                                 "url": "Binary/bin-1"}}]})
    assert out.text == "note text"


def _app(tmp_path, **extra):  # type: ignore[no-untyped-def]
    return create_app({"testing": True, "data_dir": tmp_path, "allowed_iss": BASE, **extra})


def _login(app, client, role: str) -> None:  # type: ignore[no-untyped-def]
    app.extensions["smart_draft_web"].put(LaunchState(
        sid="s1", fhir_base=BASE, config=None, patient_id="p1", user_reference=None, role=role,
        unauthenticated=True))
    with client.session_transaction() as sess:
        sess["sid"] = "s1"


def test_metrics_need_an_admin_session(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = _app(tmp_path)
    client = app.test_client()
    resp = client.get("/metrics")
    assert resp.status_code == 401 and b"sda_" not in resp.data
    _login(app, client, "clinician")
    assert client.get("/metrics").status_code == 401
    _login(app, client, "admin")
    resp = client.get("/metrics")
    assert resp.status_code == 200 and b"sda_" in resp.data


def test_metrics_with_the_scrape_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = _app(tmp_path, metrics_token="scrape-secret-1").test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Basic scrape-secret-1"}).status_code == 401
    resp = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-1"})
    assert resp.status_code == 200 and b"sda_" in resp.data
