"""The Bulk Data v2 client against a scripted server (recorded Epic/Oracle-like exchanges).

No network: a fake ``requests.Session`` answers each request from a script and records what was
sent (method, URL, headers). Sleeps go to a list: nothing waits.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests

from app.batch.bulk import (
    BulkClient,
    BulkFileExpired,
    BulkJobFailed,
    BulkNotSupported,
    ExportSpec,
    LocalFilter,
    export_resources,
    retry_after_s,
)
from app.errors import ConfigError, FatalUpstreamError, TemporaryUpstreamError
from app.fhir.client import FhirClient, TokenProvider

BASE = "https://ehr.example/fhir"
STATUS = f"{BASE}/bulkstatus/job-1"


def response(status: int, body: bytes | str | dict | None = None, headers: dict | None = None,
             url: str = "") -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    resp.raw = io.BytesIO(body or b"")
    resp.headers.update(headers or {})
    resp.url = url
    return resp


def ndjson(*resources: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in resources)


def outcome(code: str, severity: str = "error") -> dict:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": severity, "code": code,
                                                          "diagnostics": "Patient Jane Doe MRN 123"}]}


def manifest(*files: tuple[str, str], errors: tuple[str, ...] = (), token: bool = True) -> dict:
    return {"transactionTime": "2026-12-01T08:00:00Z", "request": f"{BASE}/Group/g1/$export",
            "requiresAccessToken": token, "output": [{"type": t, "url": u, "count": 1} for t, u in files],
            "error": [{"type": "OperationOutcome", "url": u} for u in errors]}


class FakeServer(requests.Session):
    """Answers by (method, url-without-query) from queued responses; records every request."""

    def __init__(self) -> None:
        super().__init__()
        self.script: dict[tuple[str, str], list] = {}
        self.sent: list[tuple[str, str, dict]] = []

    def on(self, method: str, url: str, *responses) -> FakeServer:
        self.script.setdefault((method, url), []).extend(responses)
        return self

    def request(self, method, url, params=None, headers=None, **kw):  # type: ignore[override]
        self.sent.append((method, url, dict(headers or {}), dict(params or {})))
        queue = self.script.get((method, url))
        assert queue, f"unexpected {method} {url}"
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        return item() if callable(item) else item


class Tokens(TokenProvider):
    def __init__(self) -> None:
        self.value, self.refreshes = "tok-1", 0

    def token(self) -> str | None:
        return self.value

    def refresh(self) -> bool:
        self.refreshes += 1
        self.value = f"tok-{self.refreshes + 1}"
        return True


def bulk(server: FakeServer, **kw) -> tuple[BulkClient, list[float], Tokens, list[str]]:
    tokens = Tokens()
    sleeps: list[float] = []
    progress: list[str] = []
    client = FhirClient(BASE, tokens, session=server)
    return BulkClient(client, sleep=sleeps.append, on_progress=progress.append, **kw), sleeps, tokens, progress


PATIENT = {"resourceType": "Patient", "id": "p1"}
DOC = {"resourceType": "DocumentReference", "id": "d1", "subject": {"reference": "Patient/p1"},
       "date": "2026-05-01", "meta": {"lastUpdated": "2026-05-02T00:00:00Z"}}
OLD_DOC = {"resourceType": "DocumentReference", "id": "d0", "subject": {"reference": "Patient/p1"},
           "date": "2025-01-01", "meta": {"lastUpdated": "2025-01-02T00:00:00Z"}}


def kickoff_ok() -> requests.Response:
    return response(202, headers={"Content-Location": STATUS})


def test_kickoff_poll_manifest_files_and_delete_with_retry_after_capped():
    server = FakeServer()
    server.on("GET", f"{BASE}/Group/g1/$export", kickoff_ok)
    server.on("GET", STATUS, lambda: response(202, headers={"Retry-After": "7200", "X-Progress": "10%"}),
              lambda: response(202, headers={"X-Progress": "60%"}),
              lambda: response(200, manifest(("Patient", f"{BASE}/files/p.ndjson"),
                                             ("DocumentReference", f"{BASE}/files/d.ndjson"))))
    server.on("GET", f"{BASE}/files/p.ndjson", lambda: response(200, ndjson(PATIENT)))
    server.on("GET", f"{BASE}/files/d.ndjson", lambda: response(200, ndjson(DOC)))
    server.on("DELETE", STATUS, lambda: response(202))
    client, sleeps, _tokens, progress = bulk(server, max_retry_after_s=300)
    got = list(export_resources(client, ExportSpec(group_id="g1", types=("Patient", "DocumentReference"))))
    assert [r["id"] for r in got] == ["p1", "d1"]
    method, url, headers, params = server.sent[0]
    assert headers["Prefer"] == "respond-async" and headers["Accept"] == "application/fhir+json"
    assert params == {"_type": "Patient,DocumentReference"}
    assert sleeps[0] == 300  # the server asked for two hours: capped
    assert sleeps[1] == 4.0  # no Retry-After: exponential backoff (second wait)
    assert progress == ["10%", "60%"]
    assert server.sent[-1][0] == "DELETE" and server.sent[-1][1] == STATUS
    # files were fetched with the token (requiresAccessToken) and as NDJSON
    file_headers = [h for m, u, h, _ in server.sent if "/files/" in u]
    assert all(h["Authorization"] == "Bearer tok-1" and h["Accept"] == "application/fhir+ndjson"
               for h in file_headers)


def test_retry_after_http_date_and_garbage():
    when = datetime.now(UTC) + timedelta(seconds=120)
    assert 100 <= retry_after_s(format_datetime(when, usegmt=True)) <= 121
    assert retry_after_s("soon") is None and retry_after_s(None) is None and retry_after_s("5") == 5


def test_a_429_storm_at_kickoff_is_waited_out_then_gives_up():
    server = FakeServer()
    server.on("GET", f"{BASE}/Group/g1/$export",
              *[lambda: response(429, outcome("throttled"), {"Retry-After": "30"})] * 3, kickoff_ok)
    client, sleeps, _t, _p = bulk(server)
    assert client.kickoff(ExportSpec(group_id="g1")) == STATUS
    assert sleeps == [30, 30, 30]
    storm = FakeServer().on("GET", f"{BASE}/Group/g1/$export", lambda: response(429, headers={"Retry-After": "1"}))
    client, sleeps, _t, _p = bulk(storm, max_transient=4)
    with pytest.raises(TemporaryUpstreamError) as err:
        client.kickoff(ExportSpec(group_id="g1"))
    assert err.value.code == "bulk_kickoff_throttled" and len(sleeps) == 4


def test_transient_poll_failures_retry_a_failed_job_does_not():
    server = FakeServer()
    server.on("GET", STATUS, lambda: response(503, outcome("transient")),
              lambda: response(500, outcome("transient"), {"Retry-After": "3"}),
              lambda: response(200, manifest()))
    client, sleeps, _t, _p = bulk(server)
    assert client.wait(STATUS).output == []
    assert sleeps == [2.0, 3]
    failed = FakeServer().on("GET", STATUS, lambda: response(400, outcome("processing")))
    client, _s, _t, _p = bulk(failed)
    with pytest.raises(BulkJobFailed):
        client.wait(STATUS)


def test_kickoff_not_offered_means_paged_search():
    server = FakeServer().on("GET", f"{BASE}/Group/g1/$export", lambda: response(404, outcome("not-found")))
    client, _s, _t, _p = bulk(server)
    with pytest.raises(BulkNotSupported):
        client.kickoff(ExportSpec(group_id="g1"))


def test_expired_file_refreshes_the_manifest_then_starts_a_new_export():
    status2 = f"{BASE}/bulkstatus/job-2"
    server = FakeServer()
    server.on("GET", f"{BASE}/Group/g1/$export", kickoff_ok,
              lambda: response(202, headers={"Content-Location": status2}))
    server.on("GET", STATUS, lambda: response(200, manifest(("Patient", f"{BASE}/files/old.ndjson"))))
    server.on("GET", f"{BASE}/files/old.ndjson", lambda: response(410, outcome("not-found")))
    server.on("GET", status2, lambda: response(200, manifest(("Patient", f"{BASE}/files/new.ndjson"))))
    server.on("GET", f"{BASE}/files/new.ndjson", lambda: response(200, ndjson(PATIENT)))
    server.on("DELETE", STATUS, lambda: response(202))
    server.on("DELETE", status2, lambda: response(202))
    saved: list[str | None] = []
    client, _s, _t, _p = bulk(server)
    got = list(export_resources(client, ExportSpec(group_id="g1", types=("Patient",)), on_status_url=saved.append))
    assert got == [PATIENT]
    assert saved == [STATUS, None, status2, None]
    assert client.deleted == [STATUS, status2]
    # the old status URL was polled twice: the first manifest, then a fresh one before restarting
    assert [u for m, u, _h, _p in server.sent if u == STATUS and m == "GET"] == [STATUS, STATUS]


def test_expired_again_after_the_restart_is_an_error():
    server = FakeServer()
    server.on("GET", f"{BASE}/Group/g1/$export", kickoff_ok)
    server.on("GET", STATUS, lambda: response(200, manifest(("Patient", f"{BASE}/files/old.ndjson"))))
    server.on("GET", f"{BASE}/files/old.ndjson", lambda: response(404, outcome("not-found")))
    server.on("DELETE", STATUS, lambda: response(202))
    client, _s, _t, _p = bulk(server)
    with pytest.raises(BulkFileExpired):
        list(export_resources(client, ExportSpec(group_id="g1", types=("Patient",)), max_restarts=1))


def test_resume_from_a_saved_status_url_does_not_kick_off_again():
    server = FakeServer()
    server.on("GET", STATUS, lambda: response(200, manifest(("Patient", f"{BASE}/files/p.ndjson"))))
    server.on("GET", f"{BASE}/files/p.ndjson", lambda: response(200, ndjson(PATIENT)))
    server.on("DELETE", STATUS, lambda: response(202))
    client, _s, _t, _p = bulk(server)
    assert list(export_resources(client, ExportSpec(group_id="g1", types=("Patient",)), status_url=STATUS)) == [PATIENT]
    assert not any("$export" in u for _m, u, _h, _p in server.sent)


def test_fatal_error_issues_fail_the_export_after_every_file_was_read():
    server = FakeServer()
    server.on("GET", f"{BASE}/Group/g1/$export", kickoff_ok)
    server.on("GET", STATUS, lambda: response(200, manifest(("Patient", f"{BASE}/files/p.ndjson"),
                                                            errors=(f"{BASE}/files/err.ndjson",))))
    server.on("GET", f"{BASE}/files/p.ndjson", lambda: response(200, ndjson(PATIENT, {**PATIENT, "id": "p2"})))
    server.on("GET", f"{BASE}/files/err.ndjson",
              lambda: response(200, ndjson(outcome("not-found", "warning"), outcome("processing", "fatal"))))
    server.on("DELETE", STATUS, lambda: response(202))
    client, _s, _t, _p = bulk(server)
    got = []
    with pytest.raises(BulkJobFailed) as err:
        for res in export_resources(client, ExportSpec(group_id="g1", types=("Patient",))):
            got.append(res["id"])
    assert got == ["p1", "p2"]  # everything was read first
    assert "processing" in str(err.value) and "Jane" not in str(err.value)  # codes, never diagnostics
    assert client.deleted == [STATUS]
    # warnings alone do not fail
    assert client.error_issues(client.wait(STATUS))[0] == ("warning", "not-found")


def test_token_only_inside_the_base_and_never_for_a_foreign_file():
    foreign = "https://storage.example/bucket/p.ndjson?sig=abc"
    server = FakeServer()
    server.on("GET", foreign, lambda: response(200, ndjson(PATIENT)))
    client, _s, _t, _p = bulk(server)
    with pytest.raises(FatalUpstreamError) as err:  # needs the token but lives elsewhere: refused
        list(client.lines(foreign, requires_token=True))
    assert err.value.code == "bulk_file_foreign" and not server.sent
    assert list(client.lines(foreign, requires_token=False)) == [PATIENT]  # signed URL: no token
    assert "Authorization" not in server.sent[-1][2]


def test_an_expired_backend_token_is_renewed_once_mid_export():
    server = FakeServer()
    server.on("GET", STATUS, lambda: response(401, outcome("login")), lambda: response(200, manifest()))
    client, _s, tokens, _p = bulk(server)
    client.wait(STATUS)
    assert tokens.refreshes == 1
    assert [h.get("Authorization") for _m, _u, h, _p in server.sent] == ["Bearer tok-1", "Bearer tok-2"]


def test_type_filter_and_since_are_applied_again_locally():
    spec = ExportSpec(group_id="g1", types=("Patient", "DocumentReference"), since="2026-01-01",
                      type_filters=("DocumentReference?date=ge2026-03-01",))
    server = FakeServer()
    server.on("GET", f"{BASE}/Group/g1/$export", kickoff_ok)
    server.on("GET", STATUS, lambda: response(200, manifest(("DocumentReference", f"{BASE}/files/d.ndjson"))))
    # this server ignored both _since and _typeFilter
    server.on("GET", f"{BASE}/files/d.ndjson", lambda: response(200, ndjson(OLD_DOC, DOC)))
    server.on("DELETE", STATUS, lambda: response(202))
    client, _s, _t, _p = bulk(server)
    assert [r["id"] for r in export_resources(client, spec)] == ["d1"]
    assert server.sent[0][3]["_typeFilter"] == "DocumentReference?date=ge2026-03-01"
    assert server.sent[0][3]["_since"] == "2026-01-01"
    f = LocalFilter.from_spec(ExportSpec(type_filters=("DocumentReference?type=http://loinc.org|11506-3",)))
    typed = {**DOC, "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]}}
    assert f.keep(typed) and not f.keep(DOC)
    with pytest.raises(ConfigError):
        LocalFilter.from_spec(ExportSpec(type_filters=("DocumentReference?_text=colitis",)))


def test_ndjson_is_streamed_line_by_line():
    lines = [json.dumps({**PATIENT, "id": f"p{i}"}).encode() + b"\n" for i in range(2000)]

    class Counting(io.RawIOBase):
        def __init__(self):
            self.data, self.pos = b"".join(lines), 0

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), 4096, len(self.data) - self.pos)
            b[:n] = self.data[self.pos:self.pos + n]
            self.pos += n
            return n

    raw = Counting()
    resp = response(200)
    resp.raw = raw
    server = FakeServer().on("GET", f"{BASE}/files/p.ndjson", resp)
    client, _s, _t, _p = bulk(server)
    it = client.lines(f"{BASE}/files/p.ndjson", requires_token=True)
    assert next(it)["id"] == "p0"
    assert raw.pos < len(raw.data) // 4  # the first resource came before most of the file was read
    assert sum(1 for _ in it) == 1999
