"""Contract tests, second set: streaming caps, strict writes, lenient reads, every error status.

Each test starts from a working fake server (``responses``) and breaks one thing.
"""

from __future__ import annotations

import io
import json

import pytest
import responses

from app.errors import FhirError, InvalidResourceError, TemporaryUpstreamError
from app.fhir.attachments import extract_text
from app.fhir.client import FhirClient, StaticToken

BASE = "https://ehr.test/fhir"
MB = 1024 * 1024


def client(**kw):
    kw = {"backoff_s": 0.001, "total_timeout": 5, **kw}
    return FhirClient(BASE, StaticToken("secret-token"), **kw)


class EndlessRaw(io.RawIOBase):
    """A response body of ``size`` bytes produced lazily; counts what the client pulled."""

    def __init__(self, size: int) -> None:
        self.size, self.served = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buf), self.size - self.served)
        buf[:n] = b"a" * n
        self.served += n
        return n


def doc(attachment):
    return {"resourceType": "DocumentReference", "id": "d", "status": "current",
            "content": [{"attachment": attachment}]}


@responses.activate
def test_300_mb_binary_without_length_is_abandoned_after_the_cap():
    raw = EndlessRaw(300 * MB)
    responses.get(f"{BASE}/Binary/huge", body=io.BufferedReader(raw), content_type="text/plain")
    out = extract_text(client(), doc({"contentType": "text/plain", "url": "Binary/huge"}), max_bytes=1 * MB)
    assert out.text is None and out.skipped == "too_large"
    assert raw.served < 3 * MB  # read stopped near the cap, not at 300 MB


@responses.activate
def test_declared_content_length_over_the_cap_is_not_read():
    raw = EndlessRaw(300 * MB)
    responses.get(f"{BASE}/Binary/huge", body=io.BufferedReader(raw), content_type="text/plain",
                  headers={"Content-Length": str(300 * MB)})
    out = extract_text(client(), doc({"contentType": "text/plain", "url": "Binary/huge"}), max_bytes=1 * MB)
    assert out.skipped == "too_large" and raw.served < 1 * MB


@responses.activate
def test_absolute_url_on_the_same_origin_is_fetched_other_origin_port_or_path_is_not():
    responses.get(f"{BASE}/Binary/ok", body=b"Plan: continue.", content_type="text/plain")
    ok = extract_text(client(), doc({"contentType": "text/plain", "url": f"{BASE}/Binary/ok"}))
    assert ok.text == "Plan: continue."
    for hostile in ("https://ehr.test:8443/fhir/Binary/1", "https://ehr.test/other/Binary/1",
                    "http://ehr.test/fhir/Binary/1", "https://ehr.test.evil.test/fhir/Binary/1",
                    "file:///etc/passwd", "https://ehr.test/fhirx/Binary/1", "Binary/../../admin/secrets",
                    "javascript:alert(1)", "//evil.test/fhir/Binary/1"):
        out = extract_text(client(), doc({"contentType": "text/plain", "url": hostile}))
        assert out.text is None, hostile
    assert len(responses.calls) == 1


@responses.activate
def test_binary_as_fhir_json_is_decoded_and_malformed_binary_reported():
    responses.get(f"{BASE}/Binary/j", json={"resourceType": "Binary", "contentType": "text/plain",
                                           "data": "UGxhbjogY29udGludWUu"})
    responses.get(f"{BASE}/Binary/bad", body=b"{not json", content_type="application/fhir+json")
    assert extract_text(client(), doc({"contentType": "text/plain", "url": "Binary/j"})).text == "Plan: continue."
    assert extract_text(client(), doc({"contentType": "text/plain", "url": "Binary/bad"})).skipped == "malformed_binary"


@responses.activate
def test_invalid_resource_is_never_sent():
    with pytest.raises(InvalidResourceError) as exc:
        client().create({"resourceType": "DocumentReference", "status": "current"})  # content is 1..*
    assert exc.value.paths == ("content",)
    with pytest.raises(InvalidResourceError):
        client().update({"resourceType": "DocumentReference", "id": "x", "status": "current",
                         "content": [{"attachment": {}}], "date": "yesterday"}, if_match='W/"1"')
    assert len(responses.calls) == 0


@responses.activate
def test_invalid_resource_message_names_elements_not_values():
    with pytest.raises(InvalidResourceError) as exc:
        client().create({"resourceType": "Patient", "birthDate": "Zyxwend-Canarywhistle"})
    assert "birthDate" in str(exc.value) and "Canarywhistle" not in str(exc.value)


@responses.activate
def test_lenient_read_skips_and_counts_invalid_resources():
    entries = [{"resourceType": "DocumentReference", "id": "ok", "status": "current",
                "content": [{"attachment": {"contentType": "text/plain"}}]},
               {"resourceType": "DocumentReference", "id": "bad", "status": "current", "date": "last tuesday",
                "content": [{"attachment": {}}]}]
    responses.get(f"{BASE}/DocumentReference", json={
        "resourceType": "Bundle", "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in entries]})
    c = client()
    assert [r["id"] for r in c.search("DocumentReference", validate=True)] == ["ok"]
    assert c.skipped["invalid_DocumentReference"] == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 412, 422])
@responses.activate
def test_fatal_statuses_carry_status_and_issue_codes_not_the_body(status):
    outcome = {"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": "conflict", "diagnostics": "Zyxwend Canarywhistle"}]}
    responses.put(f"{BASE}/DocumentReference/x", status=status, json=outcome)
    with pytest.raises(FhirError) as exc:
        client().update({"resourceType": "DocumentReference", "id": "x", "status": "current",
                         "content": [{"attachment": {"contentType": "text/plain"}}]}, if_match='W/"1"')
    assert exc.value.status == status and exc.value.issue_codes == ("conflict",)
    assert "Canarywhistle" not in str(exc.value) and "Canarywhistle" not in repr(exc.value.to_dict())
    assert len(responses.calls) == 1  # not retried
    assert responses.calls[0].request.headers["If-Match"] == 'W/"1"'


@responses.activate
def test_retry_after_is_honoured(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("app.fhir.client.time.sleep", slept.append)
    responses.get(f"{BASE}/Patient/1", status=429, headers={"Retry-After": "2"})
    responses.get(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    assert client(total_timeout=30).read("Patient", "1")["id"] == "1"
    assert slept and slept[0] >= 2


@responses.activate
def test_retry_after_beyond_the_time_budget_gives_up_at_once(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("app.fhir.client.time.sleep", slept.append)
    responses.get(f"{BASE}/Patient/1", status=503, headers={"Retry-After": "3600"})
    with pytest.raises(TemporaryUpstreamError):
        client(total_timeout=10).read("Patient", "1")
    assert slept == [] and len(responses.calls) == 1


@responses.activate
def test_read_back_sends_no_cache_and_params_are_percent_encoded():
    responses.get(f"{BASE}/DocumentReference/d1", json={"resourceType": "DocumentReference", "id": "d1"})
    responses.get(f"{BASE}/DocumentReference", json={"resourceType": "Bundle", "type": "searchset"})
    c = client()
    c.read("DocumentReference", "d1", no_cache=True)
    list(c.search("DocumentReference", {"identifier": "urn:ietf:rfc:3986|urn:uuid:a&b=c", "_count": 50}))
    assert responses.calls[0].request.headers["Cache-Control"] == "no-cache"
    url = responses.calls[1].request.url
    assert "identifier=urn%3Aietf%3Arfc%3A3986%7Curn%3Auuid%3Aa%26b%3Dc" in url and "_count=50" in url


@responses.activate
def test_create_asks_for_the_representation_and_conditional_create():
    body = {"resourceType": "Provenance", "id": "p1", "recorded": "2026-01-01T00:00:00Z",
            "target": [{"reference": "DocumentReference/d1/_history/1"}],
            "agent": [{"who": {"reference": "Device/dev"}}]}
    responses.post(f"{BASE}/Provenance", status=201, json=body)
    client().create({k: v for k, v in body.items() if k != "id"}, if_none_exist="identifier=x|1")
    sent = responses.calls[0].request
    assert sent.headers["Prefer"] == "return=representation" and sent.headers["If-None-Exist"] == "identifier=x|1"
    assert json.loads(sent.body)["resourceType"] == "Provenance"
