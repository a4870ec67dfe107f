"""Review on the server (issue 11, findings 3, 4 and 5), against the contract tests' fake FHIR server.

Finding 3: after approve, edit made new versions that stayed final; reject after approve and
approve after reject succeeded. Finding 4: the JSON ``version`` was pasted into a FHIR URL
(``../../../DocumentReference/x`` read another note) and into the audit trail. Finding 5: a
20,000-character edit took 33 s (pure-Python Levenshtein plus difflib).
"""

from __future__ import annotations

import pytest

from app.audit.trail import AuditTrail
from app.errors import AppError
from app.fhir.vendors import PROFILES
from app.review.workflow import (
    APPROVED,
    MAX_EDIT_CHARS,
    PRELIMINARY,
    REJECTED,
    ReviewConflict,
    ReviewService,
    check_fhir_id,
    edit_distance,
    review_state,
    transition,
)
from app.smart.scopes import Grants
from app.writeback.submit import submit
from tests.contract import test_submit as base
from tests.contract.test_submit import client, put

fake, maker, outbox = base.fake, base.maker, base.outbox
WRITER = Grants.parse("user/DocumentReference.cruds user/Provenance.c")
REVIEWER = "Practitioner/prac-1"


@pytest.fixture
def trail(maker):  # type: ignore[no-untyped-def]
    return AuditTrail(maker)


def _svc(maker, trail) -> ReviewService:  # type: ignore[no-untyped-def]
    return ReviewService(client(), maker, trail, WRITER, reviewer=REVIEWER, client_id="c",
                         token_jti="j")


def _written(outbox, fake) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    put(outbox)
    ref = submit(client(), outbox, PROFILES["sekmet"], "run-1")["document_reference"]
    _, doc_id, _, version = ref.split("/")
    return doc_id, version


# -- the state machine (pure) ------------------------------------------------------------------
def test_transition_table() -> None:
    assert transition(PRELIMINARY, "edit") == PRELIMINARY
    assert transition(PRELIMINARY, "approve") == APPROVED
    assert transition(PRELIMINARY, "reject") == REJECTED
    for final in (APPROVED, REJECTED):
        for action in ("approve", "edit", "reject"):
            with pytest.raises(ReviewConflict) as err:
                transition(final, action)
            assert err.value.http_status == 409 and err.value.code == "review_state_conflict"
            assert final in str(err.value)
    with pytest.raises(AppError) as err:
        transition(PRELIMINARY, "delete")
    assert err.value.http_status == 400


def test_review_state_from_the_ehr_document() -> None:
    assert review_state({"status": "current", "docStatus": "preliminary"}) == PRELIMINARY
    assert review_state({"status": "current", "docStatus": "final"}) == APPROVED
    assert review_state({"status": "entered-in-error", "docStatus": "preliminary"}) == REJECTED
    assert review_state({"status": "superseded"}) == "unknown"
    with pytest.raises(ReviewConflict):
        transition(review_state({"status": "superseded"}), "approve")


# -- finding 3: nothing after a final decision ---------------------------------------------------
def test_edit_and_reject_after_approve_are_refused(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    doc_id, version = _written(outbox, fake)
    svc = _svc(maker, trail)
    svc.approve(doc_id, version, acknowledged_unsupported=True, unsupported=0)
    [doc] = fake.drafts("run-1")
    approved_version = doc["meta"]["versionId"]
    for call in (lambda: svc.edit(doc_id, approved_version, "changed after approval"),
                 lambda: svc.reject(doc_id, approved_version, "inaccurate"),
                 lambda: svc.approve(doc_id, approved_version, acknowledged_unsupported=True,
                                     unsupported=0)):
        with pytest.raises(ReviewConflict) as err:
            call()
        assert err.value.http_status == 409
    [doc] = fake.drafts("run-1")
    assert doc["meta"]["versionId"] == approved_version and doc["docStatus"] == "final"
    assert doc["status"] == "current"
    assert [r["action"] for r in svc.history(doc_id)] == ["approve"]


def test_approve_and_edit_after_reject_are_refused(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    doc_id, version = _written(outbox, fake)
    svc = _svc(maker, trail)
    svc.reject(doc_id, version, "inaccurate")
    [doc] = fake.drafts("run-1")
    v = doc["meta"]["versionId"]
    with pytest.raises(ReviewConflict):
        svc.approve(doc_id, v, acknowledged_unsupported=True, unsupported=0)
    with pytest.raises(ReviewConflict):
        svc.edit(doc_id, v, "resurrected")
    [doc] = fake.drafts("run-1")
    assert doc["status"] == "entered-in-error" and doc["docStatus"] == "preliminary"
    assert "authenticator" not in doc
    assert [r["action"] for r in svc.history(doc_id)] == ["reject"]


def test_edits_before_the_decision_stay_allowed(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    doc_id, version = _written(outbox, fake)
    svc = _svc(maker, trail)
    svc.edit(doc_id, version, "first edit")
    svc.edit(doc_id, "2", "second edit")
    svc.approve(doc_id, "3", acknowledged_unsupported=True, unsupported=0)
    assert [r["action"] for r in svc.history(doc_id)] == ["edit", "edit", "approve"]


# -- finding 4: versions are FHIR ids before any use ---------------------------------------------
BAD_VERSIONS = ["../../../DocumentReference/doc-gen-06-004", "1/../2", "John Smith 1970-01-01",
                "123-45-6789 " * 30, "", "1?x=1", "1#f", "%2e%2e", "a" * 65]


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_a_bad_version_is_refused_before_any_request(maker, trail, outbox, fake, version: str) -> None:  # type: ignore[no-untyped-def]
    doc_id, _ = _written(outbox, fake)
    before = len(fake.requests)
    svc = _svc(maker, trail)
    for call in (lambda: svc.edit(doc_id, version, "p"), lambda: svc.reject(doc_id, version, "other"),
                 lambda: svc.approve(doc_id, version, acknowledged_unsupported=True, unsupported=0)):
        with pytest.raises(AppError) as err:
            call()
        assert err.value.http_status == 400 and err.value.code == "bad_version"
        assert version not in str(err.value) or not version
    assert len(fake.requests) == before  # nothing fetched, nothing written
    audit = str(trail.entries())
    assert "doc-gen-06-004" not in audit and "Smith" not in audit and "123-45" not in audit


def test_fhir_id_grammar() -> None:
    assert check_fhir_id("1") == "1" and check_fhir_id("a-b.C9") == "a-b.C9"
    for bad in (None, 1, "a/b", "a b", "", "x" * 65):
        with pytest.raises(AppError):
            check_fhir_id(bad)


# -- finding 5: edits are capped, distance and diff in C ------------------------------------------
def test_an_edit_over_the_cap_is_a_413(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    doc_id, version = _written(outbox, fake)
    before = len(fake.requests)
    with pytest.raises(AppError) as err:
        _svc(maker, trail).edit(doc_id, version, "x" * (MAX_EDIT_CHARS + 1))
    assert err.value.http_status == 413 and err.value.code == "edit_too_large"
    assert len(fake.requests) == before


def test_edit_distance_and_diff_use_rapidfuzz() -> None:
    import app.review.workflow as wf
    from app.web.review import line_diff

    assert wf.Levenshtein.__name__.startswith("rapidfuzz")  # the C implementation, not a Python loop
    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3
    assert edit_distance("same", "same") == 0
    assert line_diff("a\nb\nc", "a\nx\nc") == [(" ", "a"), ("-", "b"), ("+", "x"), (" ", "c")]
    assert line_diff("", "new") == [("+", "new")] and line_diff("old", "") == [("-", "old")]
    # a cap-sized rewrite still gives exact figures (benchmarks/bench_review_edit.py times it)
    a, b = "ab" * (MAX_EDIT_CHARS // 4), "ba" * (MAX_EDIT_CHARS // 4)
    assert edit_distance(a, b) == 2
    lines = line_diff("\n".join("x" * 2000), "\n".join("y" * 2000))
    assert len(lines) == 4000


def test_a_stale_version_is_refused_without_writing(maker, trail, outbox, fake) -> None:  # type: ignore[no-untyped-def]
    """Checked by the app itself, not left to the EHR's If-Match (which a server may ignore)."""
    from app.review.workflow import ConflictError

    doc_id, version = _written(outbox, fake)
    svc = _svc(maker, trail)
    svc.reject(doc_id, version, "inaccurate")
    puts = [r for r in fake.requests if r[0] == "PUT"]
    with pytest.raises(ConflictError) as err:  # the version seen before the reject
        svc.approve(doc_id, version, acknowledged_unsupported=True, unsupported=0)
    assert err.value.http_status == 409 and err.value.changes["current_version"] != version
    [doc] = fake.drafts("run-1")
    assert doc["status"] == "entered-in-error" and doc["docStatus"] == "preliminary"
    assert [r for r in fake.requests if r[0] == "PUT"] == puts  # nothing written
