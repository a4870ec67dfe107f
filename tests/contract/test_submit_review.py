"""Review workflow against the fake FHIR server: grants, acknowledgement, conflicts, held drafts."""

from __future__ import annotations

import pytest

from app.audit.trail import AuditTrail
from app.errors import AppError, PermissionDenied
from app.fhir.vendors import PROFILES
from app.review.workflow import ConflictError, ReviewConflict, ReviewService, edit_distance
from app.smart.scopes import Grants
from app.writeback.builders import REVIEW_TAG_SYSTEM
from app.writeback.submit import submit
from tests.contract import test_submit as base
from tests.contract.test_submit import CANARY, client, put

# fixtures shared with test_submit.py
fake, maker, outbox = base.fake, base.maker, base.outbox

WRITER = Grants.parse("user/DocumentReference.cruds user/Provenance.c")
READER = Grants.parse("user/DocumentReference.rs user/Provenance.c")
REVIEWER = "Practitioner/prac-1"


@pytest.fixture
def trail(maker):  # type: ignore[no-untyped-def]
    return AuditTrail(maker)


def _svc(maker, trail, outbox=None, grants=WRITER, profile=None) -> ReviewService:  # type: ignore[no-untyped-def]
    return ReviewService(client(), maker, trail, grants, reviewer=REVIEWER, client_id="c",
                         token_jti="j", outbox=outbox, profile=profile)


def _written(outbox, fake) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    put(outbox)
    ref = submit(client(), outbox, PROFILES["sekmet"], "run-1")["document_reference"]
    _, doc_id, _, version = ref.split("/")
    return doc_id, version


def _reviews(fake, code: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return [p for p in fake.resources("Provenance")
            if any(t == {"system": REVIEW_TAG_SYSTEM, "code": code, "display": code}
                   for t in (p.get("meta") or {}).get("tag") or [])]


def test_only_writers_may_review(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    doc_id, version = _written(outbox, fake)
    svc = _svc(maker, trail, grants=READER)
    for call in (lambda: svc.approve(doc_id, version, acknowledged_unsupported=True, unsupported=0),
                 lambda: svc.edit(doc_id, version, "x"), lambda: svc.reject(doc_id, version, "other")):
        with pytest.raises(PermissionDenied):
            call()
    assert fake.drafts("run-1")[0]["meta"]["versionId"] == "1" and not _reviews(fake, "approved")


def test_unsupported_sentences_need_acknowledgement(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    doc_id, version = _written(outbox, fake)
    with pytest.raises(AppError) as err:
        _svc(maker, trail).approve(doc_id, version, acknowledged_unsupported=False, unsupported=2)
    assert err.value.code == "unsupported_not_acknowledged"
    out = _svc(maker, trail).approve(doc_id, version, acknowledged_unsupported=True, unsupported=2)
    [doc] = fake.drafts("run-1")
    assert doc["docStatus"] == "final" and doc["authenticator"] == {"reference": REVIEWER}
    [prov] = _reviews(fake, "approved")
    assert out.provenance == f"Provenance/{prov['id']}"
    assert prov["target"] == [{"reference": f"DocumentReference/{doc_id}/_history/2"}]


def test_conflict_reports_what_changed(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    doc_id, version = _written(outbox, fake)
    _svc(maker, trail).edit(doc_id, version, "Someone else's edit.")
    with pytest.raises(ConflictError) as err:
        _svc(maker, trail).approve(doc_id, version, acknowledged_unsupported=True, unsupported=0)
    changes = err.value.changes
    assert changes["seen_version"] == "1" and changes["current_version"] == "2"
    assert changes["text_changed"] is True and "docStatus" not in changes
    assert CANARY not in str(changes) and CANARY not in str(err.value)
    assert fake.drafts("run-1")[0]["docStatus"] == "preliminary"


def test_edit_records_distance_and_reject_writes_provenance(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    doc_id, version = _written(outbox, fake)
    svc = _svc(maker, trail)
    svc.edit(doc_id, version, "Short text.")
    [record] = svc.history(doc_id)
    assert record["action"] == "edit" and record["edit_distance"] == edit_distance(
        f"{CANARY}: problem list (active): melanoma.", "Short text.")
    with pytest.raises(AppError):
        svc.reject(doc_id, "2", "free text reason")
    out = svc.reject(doc_id, "2", "inaccurate")
    assert fake.drafts("run-1")[0]["status"] == "entered-in-error"
    [prov] = _reviews(fake, "rejected")
    assert out.provenance == f"Provenance/{prov['id']}"
    events = trail.entries()
    assert [e["action"] for e in events].count("U") == 2  # edit and reject
    assert any(e["action"] == "R" for e in events) and trail.verify().ok


def test_oracle_held_draft_edit_then_approve_writes_final_once(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    put(outbox)
    submit(client(), outbox, PROFILES["oracle"], "run-1")
    assert fake.requests == []
    svc = _svc(maker, trail, outbox, profile=PROFILES["oracle"])
    assert svc.edit_held("run-1", "Edited before approval.") > 0
    with pytest.raises(AppError):
        svc.approve_held("run-1", acknowledged_unsupported=False, unsupported=1)
    out = svc.approve_held("run-1", acknowledged_unsupported=False, unsupported=0)
    [doc] = fake.drafts("run-1")
    assert doc["docStatus"] == "final" and doc["authenticator"] == {"reference": REVIEWER}
    assert not any(d.get("docStatus") == "preliminary" for d in fake.resources("DocumentReference"))
    import base64

    assert base64.b64decode(doc["content"][0]["attachment"]["data"]).decode() == "Edited before approval."
    [approval] = _reviews(fake, "approved")
    assert out.provenance == f"Provenance/{approval['id']}"
    assert outbox.get("run-1")["state"] == "sent"
    with pytest.raises(AppError):
        svc.approve_held("run-1", acknowledged_unsupported=True, unsupported=0)  # not held any more


def test_oracle_held_draft_rejected_never_reaches_the_ehr(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    put(outbox)
    submit(client(), outbox, PROFILES["oracle"], "run-1")
    svc = _svc(maker, trail, outbox, profile=PROFILES["oracle"])
    with pytest.raises(PermissionDenied):
        _svc(maker, trail, outbox, grants=READER, profile=PROFILES["oracle"]).reject_held("run-1", "other")
    svc.reject_held("run-1", "wrong_patient")
    assert outbox.get("run-1")["state"] == "rejected"
    with pytest.raises(AppError):
        submit(client(), outbox, PROFILES["oracle"], "run-1")
    assert fake.requests == []


def test_queue_lists_preliminary_drafts_per_patient_and_author(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    doc_id, _ = _written(outbox, fake)
    put(outbox, "run-2")
    submit(client(), outbox, PROFILES["sekmet"], "run-2")
    svc = _svc(maker, trail)
    svc.reject(fake.drafts("run-2")[0]["id"], "1", "other")
    fake_match = fake._match

    def match(res, params):  # type: ignore[no-untyped-def]
        keep = [(k, v) for k, v in params if k not in ("patient", "author")]
        ok = all((k != "patient" or res["subject"]["reference"] == v) and
                 (k != "author" or {"reference": v} in res["author"]) for k, v in params)
        ident = [(k, v) for k, v in keep if k == "identifier" and v.endswith("|")]
        keep = [(k, v) for k, v in keep if (k, v) not in ident]
        return ok and fake_match(res, keep) and all(
            any(i["system"] == v[:-1] for i in res.get("identifier", [])) for _, v in ident)

    fake._match = match
    queue = svc.queue(patient_id="p1", author=REVIEWER)
    assert [q["document_reference"] for q in queue] == [f"DocumentReference/{doc_id}"]
    assert svc.queue(patient_id="other") == []


# -- a review that fails half way (the update reached the EHR, its Provenance did not) ----------
def test_approve_whose_provenance_failed_is_completed_by_approving_again(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    from tests.contract.test_submit import Fault

    doc_id, version = _written(outbox, fake)
    fake.faults.append(Fault("POST", "Provenance", 503, times=50))  # outlasts every retry
    with pytest.raises(AppError) as err:
        _svc(maker, trail).approve(doc_id, version, acknowledged_unsupported=True, unsupported=0)
    assert err.value.code == "review_incomplete" and "again" in str(err.value)
    [doc] = fake.drafts("run-1")
    assert doc["docStatus"] == "final" and not _reviews(fake, "approved")  # half done
    fake.faults.clear()
    # the page still shows the version the reviewer saw; approving again finishes the review
    out = _svc(maker, trail).approve(doc_id, version, acknowledged_unsupported=True, unsupported=0)
    [prov] = _reviews(fake, "approved")
    assert out.provenance == f"Provenance/{prov['id']}"
    assert prov["target"] == [{"reference": f"DocumentReference/{doc_id}/_history/2"}]
    assert fake.drafts("run-1")[0]["meta"]["versionId"] == "2"  # no second update
    with pytest.raises(ReviewConflict):  # complete now: a repeat is the usual conflict
        _svc(maker, trail).approve(doc_id, "2", acknowledged_unsupported=True, unsupported=0)
    assert len(_reviews(fake, "approved")) == 1
    assert [r["action"] for r in _svc(maker, trail).history(doc_id)] == ["approve"]


def test_review_provenance_whose_answer_was_lost_is_not_written_twice(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    from tests.contract.test_submit import Fault

    doc_id, version = _written(outbox, fake)
    from app.fhir.client import FhirClient
    from tests.contract.test_submit import BASE

    fake.faults.append(Fault("POST", "Provenance", "connection", after_commit=True))  # made, answer lost
    retrying = ReviewService(FhirClient(BASE, backoff_s=0.001, max_attempts=3), maker, trail, WRITER,
                             reviewer=REVIEWER, client_id="c", token_jti="j")
    out = retrying.reject(doc_id, version, "inaccurate")  # the conditional create is retried
    [prov] = _reviews(fake, "rejected")  # and finds the one the server made: one, not two
    assert out.provenance == f"Provenance/{prov['id']}"
    with pytest.raises((ReviewConflict, ConflictError)) as err:  # nothing left to finish: a 409
        _svc(maker, trail).reject(doc_id, version, "inaccurate")
    assert err.value.http_status == 409 and len(_reviews(fake, "rejected")) == 1


# -- a token that may create Provenance but not read it (user/Provenance.c alone) ---------------
def test_a_refused_provenance_search_neither_blocks_a_write_nor_duplicates_a_review(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    from tests.contract.test_submit import GENERIC_NO_TX, Fault

    fake.faults.append(Fault("GET", "search:Provenance", 403, times=100))  # every Provenance search refused
    put(outbox)
    written = submit(client(), outbox, GENERIC_NO_TX, "run-1")  # the sequence searches before creating
    [doc] = fake.drafts("run-1")
    assert written["document_reference"] == f"DocumentReference/{doc['id']}/_history/1"
    assert len(fake.resources("Provenance")) == 1
    again = submit(client(), outbox, GENERIC_NO_TX, "run-1")  # a retry: nothing written twice
    assert again["document_reference"] == written["document_reference"]
    assert len(fake.resources("Provenance")) == 1 and len(fake.drafts("run-1")) == 1

    _svc(maker, trail).approve(doc["id"], "1", acknowledged_unsupported=True, unsupported=0)
    assert len(_reviews(fake, "approved")) == 1
    with pytest.raises((ReviewConflict, ConflictError)):  # cannot tell what is missing: the usual 409
        _svc(maker, trail).approve(doc["id"], "1", acknowledged_unsupported=True, unsupported=0)
    assert len(_reviews(fake, "approved")) == 1
