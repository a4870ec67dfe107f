"""Contract tests: a working fake FHIR server, then one thing broken per test."""

import base64

import pytest
import requests
import responses

from app.errors import FatalUpstreamError, FhirError, TemporaryUpstreamError
from app.fhir.attachments import extract_text
from app.fhir.client import FhirClient, StaticToken, TokenProvider

BASE = "https://ehr.test/fhir"


def bundle(entries, next_url=None):
    b = {"resourceType": "Bundle", "type": "searchset",
         "entry": [{"resource": r, "search": {"mode": "match"}} for r in entries]}
    if next_url:
        b["link"] = [{"relation": "next", "url": next_url}]
    return b


def client(**kw):
    return FhirClient(BASE, StaticToken("secret-token"), backoff_s=0.001, total_timeout=5, **kw)


@responses.activate
def test_search_follows_next_links_verbatim():
    responses.get(f"{BASE}/Condition", json=bundle([{"resourceType": "Condition", "id": "1"}],
                                                   f"{BASE}?_getpages=abc&_offset=1"))
    responses.get(f"{BASE}?_getpages=abc&_offset=1", json=bundle([{"resourceType": "Condition", "id": "2"}]))
    ids = [r["id"] for r in client().search("Condition", {"patient": "p 1"})]
    assert ids == ["1", "2"]
    assert responses.calls[0].request.url.endswith("patient=p+1") or "patient=p%201" in responses.calls[0].request.url
    assert responses.calls[0].request.headers["Authorization"] == "Bearer secret-token"


@responses.activate
def test_looping_next_link_is_fatal():
    responses.get(f"{BASE}/Condition", json=bundle([], f"{BASE}/page2"))
    responses.get(f"{BASE}/page2", json=bundle([], f"{BASE}/page2"))
    with pytest.raises(FatalUpstreamError) as exc:
        list(client().search("Condition"))
    assert exc.value.code == "fhir_paging_loop"


@responses.activate
def test_foreign_next_link_is_refused_and_gets_no_token():
    responses.get(f"{BASE}/Condition", json=bundle([], "https://evil.test/steal"))
    with pytest.raises(FatalUpstreamError):
        list(client().search("Condition"))
    assert all("evil.test" not in c.request.url for c in responses.calls)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
@responses.activate
def test_retryable_statuses_are_retried(status):
    responses.get(f"{BASE}/Patient/1", status=status, headers={"Retry-After": "0"})
    responses.get(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    assert client().read("Patient", "1")["id"] == "1"
    assert len(responses.calls) == 2


@pytest.mark.parametrize("status", [400, 403, 404, 409, 412])
@responses.activate
def test_fatal_statuses_are_not_retried_and_hide_the_body(status):
    outcome = {"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": "forbidden", "diagnostics": "Patient Zyxwend Canarywhistle"}]}
    responses.get(f"{BASE}/Patient/1", status=status, json=outcome)
    with pytest.raises(FhirError) as exc:
        client().read("Patient", "1")
    assert len(responses.calls) == 1
    assert exc.value.status == status and exc.value.issue_codes == ("forbidden",)
    assert "Canarywhistle" not in str(exc.value) and "Canarywhistle" not in repr(exc.value.args)


@responses.activate
def test_persistent_503_becomes_temporary_error():
    responses.get(f"{BASE}/Patient/1", status=503)
    with pytest.raises(TemporaryUpstreamError):
        client(max_attempts=3).read("Patient", "1")
    assert len(responses.calls) == 3


@responses.activate
def test_timeout_becomes_temporary_error():
    responses.get(f"{BASE}/Patient/1", body=requests.ConnectTimeout())
    with pytest.raises(TemporaryUpstreamError) as exc:
        client(max_attempts=2).read("Patient", "1")
    assert exc.value.code == "fhir_timeout"


@responses.activate
def test_malformed_json_is_fatal():
    responses.get(f"{BASE}/Patient/1", body="{not json", content_type="application/fhir+json")
    with pytest.raises(FatalUpstreamError) as exc:
        client().read("Patient", "1")
    assert exc.value.code == "fhir_malformed"


class Refreshing(TokenProvider):
    def __init__(self):
        self.value, self.refreshed = "old", 0

    def token(self):
        return self.value

    def refresh(self):
        self.refreshed += 1
        self.value = "new"
        return True


@responses.activate
def test_401_refreshes_once_then_retries():
    responses.get(f"{BASE}/Patient/1", status=401)
    responses.get(f"{BASE}/Patient/1", json={"resourceType": "Patient", "id": "1"})
    tokens = Refreshing()
    FhirClient(BASE, tokens).read("Patient", "1")
    assert tokens.refreshed == 1
    assert responses.calls[1].request.headers["Authorization"] == "Bearer new"


def doc(attachment):
    return {"resourceType": "DocumentReference", "id": "d", "content": [{"attachment": attachment}]}


@responses.activate
def test_attachment_foreign_url_is_refused_never_fetched():
    out = extract_text(client(), doc({"contentType": "text/plain", "url": "https://evil.test/Binary/1"}))
    assert out.text is None and out.skipped == "foreign_url"
    assert len(responses.calls) == 0


@responses.activate
def test_attachment_binary_relative_url_fetched_with_token():
    data = base64.b64encode("Assessment: stable.".encode()).decode()
    responses.get(f"{BASE}/Binary/b1", json={"resourceType": "Binary", "contentType": "text/plain", "data": data})
    out = extract_text(client(), doc({"contentType": "text/plain; charset=utf-8", "url": "Binary/b1"}))
    assert out.text == "Assessment: stable."


def test_html_is_reduced_to_safe_text():
    markup = "<p>Plan: <b>continue</b></p><script>alert('x')</script><img src=x onerror=alert(1)>"
    out = extract_text(client(), doc({"contentType": "text/html",
                                      "data": base64.b64encode(markup.encode()).decode()}))
    assert "alert" not in out.text and "<" not in out.text and "continue" in out.text


def test_invalid_utf8_is_replaced_not_fatal():
    raw = b"Assessment: ok \xff\xfe\xc3\x28 end"
    out = extract_text(client(), doc({"contentType": "text/plain; charset=utf-8",
                                      "data": base64.b64encode(raw).decode()}))
    assert out.text.startswith("Assessment: ok") and out.text.endswith("end")


def test_huge_attachment_is_skipped_by_size():
    out = extract_text(client(), doc({"contentType": "text/plain", "size": 300_000_000, "data": "QQ=="}),
                       max_bytes=1000)
    assert out.skipped == "too_large"
    big = base64.b64encode(b"a" * 5000).decode()
    out = extract_text(client(), doc({"contentType": "text/plain", "data": big}), max_bytes=1000)
    assert out.skipped == "too_large"


def test_unknown_type_reported():
    out = extract_text(client(), doc({"contentType": "image/png", "data": "QQ=="}))
    assert out.skipped == "unsupported_type"
