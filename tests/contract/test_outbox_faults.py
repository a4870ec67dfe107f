"""Fault injection: the process dies or the server fails between any two write steps.

After a restart (a fresh engine, outbox and client over the same database
file) the draft must be neither lost (the outbox still has it and finishes
it) nor duplicated (exactly one DocumentReference per run identifier, one AI
Provenance, one Device, one AuditEvent where written, one verifier
Provenance where approved). Parametrised over every step boundary of every
write mode, and over every request of every mode failing with 500, a
timeout, 409 or 412, before and after the server committed.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import responses

from app.errors import AppError
from app.fhir.vendors import PROFILES
from app.store.db import create_tables, make_engine, make_sessionmaker
from app.store.models import Vault
from app.writeback.builders import REVIEW_TAG_SYSTEM
from app.writeback.outbox import Outbox
from app.writeback.submit import Submitter, release_held
from tests.contract.test_submit import GENERIC_NO_TX, FakeFhir, Fault, client, put

MODES = {
    "transaction": PROFILES["sekmet"],
    "epic": PROFILES["epic"],
    "generic-no-tx": GENERIC_NO_TX,
    "oracle-approved": PROFILES["oracle"],
}
STEPS = {
    "transaction": ["lookup", "transaction"],
    "epic": ["document_reference", "device", "provenance"],
    "generic-no-tx": ["document_reference", "device", "provenance", "audit_event"],
    "oracle-approved": ["document_reference", "device", "provenance", "verification"],
}
REVIEWER = "Practitioner/prac-1"


def _points(mode: str) -> list[str]:
    out = []
    for step in STEPS[mode]:
        out.append(f"before:{step}")
        if step != "lookup":  # the lookup writes nothing
            out.append(f"after:{step}")
    return out


KILL_POINTS = [(mode, point) for mode in MODES for point in _points(mode)]


# requests each mode sends, and which of them write
def _requests(mode: str) -> list[tuple[str, str]]:
    if mode == "transaction":
        return [("GET", "search:DocumentReference"), ("POST", "transaction")]
    types = {"document_reference": "DocumentReference", "device": "Device", "provenance": "Provenance",
             "audit_event": "AuditEvent", "verification": "Provenance"}
    out: list[tuple[str, str]] = []
    for step in STEPS[mode]:
        for req in (("GET", f"search:{types[step]}"), ("POST", types[step])):
            if req not in out:
                out.append(req)
    return out


SERVER_FAULTS = [
    (mode, method, target, status, after)
    for mode in MODES
    for method, target in _requests(mode)
    for status in (500, "timeout", 409, 412)
    for after in ((False, True) if method == "POST" else (False,))
]


class Killed(BaseException):
    """The process died here (not an Exception: nothing in the app may catch it)."""


class Restartable:
    """One database file; ``outbox()`` opens it as a freshly started process would."""

    def __init__(self, path) -> None:  # type: ignore[no-untyped-def]
        self.url = str(path) if "://" in str(path) else f"sqlite:///{path}"  # a file or a database URL
        create_tables(make_engine(self.url))

    def outbox(self) -> Outbox:
        return Outbox(make_sessionmaker(make_engine(self.url)), Vault(b"k"))


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    server = FakeFhir()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        server.install(rsps)
        yield server


@pytest.fixture
def db(database_url) -> Restartable:  # type: ignore[no-untyped-def]
    return Restartable(database_url)  # SQLite and PostgreSQL (tests/conftest.py)


def _prepare(db: Restartable, mode: str, run_id: str = "run-1") -> None:
    box = db.outbox()
    put(box, run_id)
    if mode == "oracle-approved":
        Submitter(client(), box, MODES[mode]).submit(run_id)
        assert box.get(run_id)["state"] == "held_until_approval"
        release_held(box, run_id, reviewer=REVIEWER, at=datetime(2026, 11, 2, tzinfo=UTC))


def _assert_exactly_once(fake: FakeFhir, box: Outbox, mode: str, written: dict, run_id: str = "run-1") -> None:
    [doc] = fake.drafts(run_id)
    assert box.get(run_id)["state"] == "sent"
    assert written["document_reference"].split("/_history")[0] == f"DocumentReference/{doc['id']}"
    target = f"DocumentReference/{doc['id']}"
    provs = fake.search("Provenance", [("target", target)])
    ai = [p for p in provs if not any(t.get("system") == REVIEW_TAG_SYSTEM
                                      for t in (p.get("meta") or {}).get("tag") or [])]
    review = [p for p in provs if p not in ai]
    assert len(ai) == 1 and written["provenance"] == f"Provenance/{ai[0]['id']}"
    assert len(fake.resources("Device")) == 1
    audits = fake.search("AuditEvent", [("entity", target)])
    assert len(audits) == (1 if mode in ("transaction", "generic-no-tx") else 0)
    if mode == "oracle-approved":
        assert doc["docStatus"] == "final" and doc["authenticator"] == {"reference": REVIEWER}
        assert len(review) == 1 and written["verification"] == f"Provenance/{review[0]['id']}"
        assert not [d for d in fake.resources("DocumentReference") if d.get("docStatus") == "preliminary"]
    else:
        assert doc["docStatus"] == "preliminary" and review == []


def test_the_matrix_covers_every_hook_point(fake, db) -> None:  # type: ignore[no-untyped-def]
    """The static parametrisation equals the hook points the submitter really calls."""
    for i, mode in enumerate(MODES):
        run_id = f"run-cover-{i}"
        _prepare(db, mode, run_id)
        seen: list[str] = []
        Submitter(client(), db.outbox(), MODES[mode], hook=seen.append).submit(run_id)
        assert seen == _points(mode), mode


@pytest.mark.parametrize(("mode", "point"), KILL_POINTS, ids=[f"{m}-{p}" for m, p in KILL_POINTS])
def test_process_killed_between_steps_then_restarted(fake, db, mode: str, point: str) -> None:  # type: ignore[no-untyped-def]
    _prepare(db, mode)

    def die(at: str) -> None:
        if at == point:
            raise Killed(at)

    with pytest.raises(Killed):
        Submitter(client(), db.outbox(), MODES[mode], hook=die).submit("run-1")
    # a new process: new engine, outbox and client over the same database file
    box = db.outbox()
    item = box.get("run-1")
    assert item is not None and item["state"] == "pending", "the draft must not be lost"
    assert len(fake.drafts("run-1")) <= 1
    written = Submitter(client(), box, MODES[mode]).submit("run-1")
    _assert_exactly_once(fake, box, mode, written)
    # and one more restart plus submit changes nothing on the server
    before = len(fake.requests)
    assert Submitter(client(), db.outbox(), MODES[mode]).submit("run-1") == written
    assert len(fake.requests) == before


@pytest.mark.parametrize(("mode", "method", "target", "status", "after_commit"), SERVER_FAULTS,
                         ids=[f"{m}-{me}-{t}-{s}-{'committed' if a else 'refused'}"
                              for m, me, t, s, a in SERVER_FAULTS])
def test_server_fails_at_each_request_then_restart(fake, db, mode, method, target, status,  # type: ignore[no-untyped-def]
                                                   after_commit) -> None:
    _prepare(db, mode)
    fake.faults.append(Fault(method, target, status, after_commit=after_commit))
    with pytest.raises(AppError):
        Submitter(client(), db.outbox(), MODES[mode]).submit("run-1")
    assert fake.faults[0].times == 0, "the fault was not reached"
    box = db.outbox()
    assert box.get("run-1")["state"] == "pending" and box.get("run-1")["attempts"] == 1
    assert box.get("run-1")["last_error_code"] in ("fhir_temporary", "fhir_timeout", "fhir_error")
    written = Submitter(client(), box, MODES[mode]).submit("run-1")
    _assert_exactly_once(fake, box, mode, written)


def test_two_runs_interleaved_with_a_crash_stay_separate(fake, db) -> None:  # type: ignore[no-untyped-def]
    _prepare(db, "epic", "run-a")
    _prepare(db, "epic", "run-b")

    def die(at: str) -> None:
        if at == "after:document_reference":
            raise Killed(at)

    with pytest.raises(Killed):
        Submitter(client(), db.outbox(), PROFILES["epic"], hook=die).submit("run-a")
    Submitter(client(), db.outbox(), PROFILES["epic"]).submit("run-b")
    Submitter(client(), db.outbox(), PROFILES["epic"]).submit("run-a")
    assert len(fake.drafts("run-a")) == 1 and len(fake.drafts("run-b")) == 1
    assert len(fake.resources("Provenance")) == 2 and len(fake.resources("Device")) == 1
