"""A POST answered 504 after the server committed it, then retried: exactly one resource (real sekmet).

The retry policy (app.retry) repeats only conditional creates; every create
of a write-back is conditional (run identifier, model identifier, or the
write-step tag for Provenance and AuditEvent, also inside the transaction).
So the retry finds what the first attempt created, in every write mode, for
every POST. A plain POST is not retried at all (control).
"""

from __future__ import annotations

import pytest
import requests

from app.errors import TemporaryUpstreamError
from app.fhir.client import FhirClient
from app.writeback.submit import WRITE_TAG_SYSTEM, Submitter
from tests.contract.test_outbox_faults import MODES, Restartable, _requests
from tests.integration.test_writeback_faults import _assert_once, _prepare, sekmet  # noqa: F401

pytestmark = pytest.mark.integration


class GatewayTimeoutAfterCommit(requests.Session):
    """Forwards the first POST to ``target`` to the real server, then answers it 504 instead."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.sent: list[str] = []

    def request(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        resp = super().request(method, url, *args, **kwargs)
        path = url.split("/fhir", 1)[1].strip("/").split("?")[0]
        if method == "POST":
            self.sent.append(path or "transaction")
        if method == "POST" and (path or "transaction") == self.target and self.sent.count(self.target) == 1:
            lost = requests.Response()
            lost.status_code, lost._content, lost.url = 504, b"", url
            lost._content_consumed = True
            lost.headers["Retry-After"] = "0"
            return lost
        return resp


WRITES = [(m, t) for m in MODES for meth, t in _requests(m) if meth == "POST"]


@pytest.mark.parametrize(("mode", "target"), WRITES, ids=[f"{m}-{t}" for m, t in WRITES])
def test_504_then_201_leaves_exactly_one_resource(sekmet, tmp_path, mode: str, target: str) -> None:  # noqa: F811
    db = Restartable(tmp_path / "app.db")
    run_id = _prepare(db, sekmet, mode)
    session = GatewayTimeoutAfterCommit(target)
    client = FhirClient(sekmet, session=session, backoff_s=0.001)  # the app's policy: 4 attempts
    written = Submitter(client, db.outbox(), MODES[mode]).submit(run_id)  # succeeds on the retry
    assert session.sent.count(target) >= 2 and written["document_reference"]
    _assert_once(sekmet, db, mode, run_id)
    if target in ("Provenance", "AuditEvent", "transaction"):
        rtype = "Provenance" if target == "transaction" else target
        code = f"{run_id}:{'verification' if mode == 'oracle-approved' and target == 'Provenance' else 'provenance'}"
        if target == "AuditEvent":
            code = f"{run_id}:audit_event"
        found = requests.get(f"{sekmet}/{rtype}", params={"_tag": f"{WRITE_TAG_SYSTEM}|{code}"},
                             headers={"Cache-Control": "no-cache"}, timeout=30).json().get("entry", [])
        assert len(found) == 1, f"{len(found)} {rtype} tagged {code}"


def test_a_plain_post_answered_504_is_not_repeated(sekmet) -> None:  # noqa: F811
    session = GatewayTimeoutAfterCommit("Basic")
    client = FhirClient(sekmet, session=session, backoff_s=0.001)
    basic = {"resourceType": "Basic", "code": {"text": "retry-control"}}
    with pytest.raises(TemporaryUpstreamError):
        client.create(basic)  # not conditional: a retry could duplicate, so it is sent once
    assert session.sent == ["Basic"]
