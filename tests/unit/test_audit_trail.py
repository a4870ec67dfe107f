"""app.audit.trail: hash chain, tamper detection, PHI guard, export, concurrency."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import Engine, text

from app.audit.trail import GENESIS_HASH, AuditTrail, canonical_json, chain_hash
from app.errors import AppError
from app.store.db import Base, make_engine, make_sessionmaker
from app.writeback.builders import create_audit_event

CANARY = "Zyxwend Canarywhistle"
JTI = "jti-7f3a9c"


@pytest.fixture()
def engine(database_url: str) -> Iterator[Engine]:  # SQLite and PostgreSQL (tests/conftest.py)
    eng = make_engine(database_url)
    Base.metadata.create_all(eng, tables=[Base.metadata.tables["audit_entries"]])
    yield eng
    eng.dispose()


@pytest.fixture()
def trail(engine: Engine) -> AuditTrail:
    return AuditTrail(make_sessionmaker(engine))


def _event(n: int = 0) -> dict:
    model = create_audit_event(
        action="C", subtype="create", outcome="0",
        recorded=datetime(2026, 1, 15, 9, 30, n % 60, tzinfo=UTC),
        user_reference="Practitioner/prac-onc-1", client_id="client-1", token_jti=JTI,
        entity_references=[f"DocumentReference/d{n}/_history/1"], patient_id="pat-1",
        destination="https://ehr.test/fhir/r4")
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)


def _fill(trail: AuditTrail, count: int = 5) -> None:
    for n in range(count):
        trail.append(_event(n))


def _sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def test_append_five_and_verify(trail: AuditTrail) -> None:
    _fill(trail)
    result = trail.verify()
    assert (result.ok, result.checked, result.first_bad_seq, result.reason) == (True, 5, None, None)
    assert [e["entity"][0]["what"]["reference"] for e in trail.entries()] == [
        f"DocumentReference/d{n}/_history/1" for n in range(5)]


def test_chain_links_and_canonical_json(trail: AuditTrail) -> None:
    first = trail.append(_event(0))
    second = trail.append(_event(1))
    assert first.seq == 1 and first.prev_hash == GENESIS_HASH
    assert first.event_json == canonical_json(_event(0))
    assert first.event_json == json.dumps(_event(0), sort_keys=True, separators=(",", ":"))
    assert first.hash == chain_hash(GENESIS_HASH, first.event_json)
    assert second.prev_hash == first.hash and second.seq == 2


def test_empty_trail_verifies(trail: AuditTrail) -> None:
    assert trail.verify().ok and trail.verify().checked == 0


def test_edited_byte_is_detected(trail: AuditTrail, engine: Engine) -> None:
    _fill(trail)
    _sql(engine, "UPDATE audit_entries SET event_json = replace(event_json, '\"outcome\":\"0\"', "
                 "'\"outcome\":\"4\"') WHERE seq = 3")
    result = trail.verify()
    assert not result.ok and result.first_bad_seq == 3 and result.checked == 2
    assert "edited" in (result.reason or "")


def test_edited_entry_with_recomputed_hash_breaks_the_next_link(
        trail: AuditTrail, engine: Engine) -> None:
    _fill(trail)
    forged = _event(2)
    forged["outcome"] = "8"
    body = canonical_json(forged)
    with engine.begin() as conn:
        prev = conn.execute(text("SELECT prev_hash FROM audit_entries WHERE seq = 3")).scalar_one()
        conn.execute(text("UPDATE audit_entries SET event_json = :b, hash = :h WHERE seq = 3"),
                     {"b": body, "h": chain_hash(prev, body)})
    result = trail.verify()
    assert not result.ok and result.first_bad_seq == 4


def test_deleted_middle_row_is_detected(trail: AuditTrail, engine: Engine) -> None:
    _fill(trail)
    _sql(engine, "DELETE FROM audit_entries WHERE seq = 3")
    result = trail.verify()
    assert not result.ok and result.first_bad_seq == 4


def test_deleted_first_row_is_detected(trail: AuditTrail, engine: Engine) -> None:
    _fill(trail)
    _sql(engine, "DELETE FROM audit_entries WHERE seq = 1")
    result = trail.verify()
    assert not result.ok and result.first_bad_seq == 2


def test_swapped_rows_are_detected(trail: AuditTrail, engine: Engine) -> None:
    _fill(trail)
    with engine.begin() as conn:
        rows = {r.seq: r for r in conn.execute(text(
            "SELECT seq, recorded, event_json, prev_hash, hash FROM audit_entries "
            "WHERE seq IN (2, 4)"))}
        # move both rows out of the way of the UNIQUE constraints, then swap the content
        conn.execute(text("UPDATE audit_entries SET prev_hash = 'x' || seq, hash = 'y' || seq "
                          "WHERE seq IN (2, 4)"))
        for seq, other in ((2, 4), (4, 2)):
            o = rows[other]
            conn.execute(text("UPDATE audit_entries SET recorded = :r, event_json = :e, "
                              "prev_hash = :p, hash = :h WHERE seq = :s"),
                         {"r": o.recorded, "e": o.event_json, "p": o.prev_hash, "h": o.hash,
                          "s": seq})
    result = trail.verify()
    assert not result.ok and result.first_bad_seq == 2
    assert "link" in (result.reason or "")


def test_swapped_event_json_only_is_detected(trail: AuditTrail, engine: Engine) -> None:
    _fill(trail)
    with engine.begin() as conn:
        a = conn.execute(text("SELECT event_json FROM audit_entries WHERE seq = 2")).scalar_one()
        c = conn.execute(text("SELECT event_json FROM audit_entries WHERE seq = 4")).scalar_one()
        conn.execute(text("UPDATE audit_entries SET event_json = :e WHERE seq = 2"), {"e": c})
        conn.execute(text("UPDATE audit_entries SET event_json = :e WHERE seq = 4"), {"e": a})
    result = trail.verify()
    assert not result.ok and result.first_bad_seq == 2


def test_export_bundle_validates(trail: AuditTrail) -> None:
    _fill(trail, 3)
    bundle = trail.export_bundle()
    Bundle.model_validate(bundle)
    assert bundle["type"] == "collection" and len(bundle["entry"]) == 3
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["1", "2", "3"]
    assert len({e["fullUrl"] for e in bundle["entry"]}) == 3


def test_record_builds_a_balp_event(trail: AuditTrail) -> None:
    entry = trail.record(action="E", subtype="search-type", outcome="0",
                         user_reference="Practitioner/prac-onc-1", client_id="client-1",
                         token_jti=JTI, entity_references=[], patient_id="pat-1",
                         destination="https://ehr.test/fhir/r4",
                         query="DocumentReference?patient=pat-1")
    event = json.loads(entry.event_json)
    assert event["subtype"][0]["code"] == "search-type"
    assert any(a.get("policy") == [JTI] for a in event["agent"])
    assert trail.verify().ok


@pytest.mark.parametrize("mutate", [
    lambda e: e.__setitem__("text", {"status": "generated", "div": f"<div>{CANARY}</div>"}),
    lambda e: e["entity"][0]["what"].__setitem__("display", CANARY),
    lambda e: e["entity"][0].__setitem__("description", f"note about {CANARY}"),
    lambda e: e["entity"][0].__setitem__("name", CANARY),
    lambda e: e["entity"][0].__setitem__("detail", [{"type": "note", "valueString": CANARY}]),
    lambda e: e.__setitem__("outcomeDesc", f"server said: {CANARY}"),
    lambda e: e.__setitem__("extension", [{"url": "urn:x", "valueString": CANARY}]),
    lambda e: e.__setitem__("noteText", CANARY),
    lambda e: e["agent"][0]["who"].__setitem__("display", "x" * 300),
], ids=["text", "what.display", "description", "name", "detail", "outcomeDesc", "extension",
        "unknown-key", "long-string"])
def test_phi_guard_refuses(trail: AuditTrail, mutate: Callable[[dict], None]) -> None:
    event = _event()
    mutate(event)
    with pytest.raises(AppError) as exc:
        trail.append(event)
    assert exc.value.code == "audit_phi_rejected"
    assert CANARY not in str(exc.value)
    assert trail.entries() == []


@pytest.mark.parametrize("field,code", [("recorded", "audit_invalid"),
                                        ("action", "audit_phi_rejected"),
                                        ("outcome", "audit_phi_rejected")])
def test_invalid_audit_event_is_refused_without_echo(trail: AuditTrail, field: str,
                                                     code: str) -> None:
    event = _event()
    event[field] = CANARY  # an allowlisted path holding free text; pydantic would echo it
    with pytest.raises(AppError) as exc:
        trail.append(event)
    assert exc.value.code == code
    assert CANARY not in str(exc.value) and exc.value.__cause__ is None
    assert trail.entries() == []


def test_not_an_audit_event_is_refused(trail: AuditTrail) -> None:
    with pytest.raises(AppError) as exc:
        trail.append({"resourceType": "Patient", "name": [{"text": CANARY}]})
    assert exc.value.code == "audit_phi_rejected"


def test_no_canary_in_stored_rows(trail: AuditTrail, engine: Engine) -> None:
    _fill(trail)
    with engine.connect() as conn:
        dump = json.dumps([list(r) for r in conn.execute(text("SELECT * FROM audit_entries"))])
    assert CANARY not in dump


def _hammer(trails: list[AuditTrail], per_thread: int) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(len(trails))

    def work(t: AuditTrail, k: int) -> None:
        try:
            start.wait()
            for n in range(per_thread):
                t.append(_event(k * 100 + n))
        except BaseException as exc:  # noqa: BLE001 (collected and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t, k)) for k, t in enumerate(trails)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


def test_concurrent_appends_shared_trail_keep_the_chain(trail: AuditTrail) -> None:
    assert _hammer([trail] * 4, 10) == []
    result = trail.verify()
    assert result.ok and result.checked == 40


def test_concurrent_appends_separate_instances_keep_the_chain(engine: Engine) -> None:
    # One AuditTrail per thread: no shared lock, so the UNIQUE(prev_hash) constraint
    # and the retry are what keep the chain linear (as across worker processes).
    trails = [AuditTrail(make_sessionmaker(engine)) for _ in range(4)]
    assert _hammer(trails, 10) == []
    result = trails[0].verify()
    assert result.ok and result.checked == 40
