"""Fault injection against the real sekmet-fhir server (no token; 127.0.0.1 only).

The same matrix as tests/contract/test_outbox_faults.py, but the server is
real: the process dies at every step boundary of every write mode, or the
connection breaks after the server committed a write; after a restart over
the same database file each draft is on the server exactly once (counted by
its run identifier), with exactly one AI Provenance.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime

import pytest
import requests

from app.errors import AppError
from app.fhir.client import FhirClient
from app.writeback.builders import DEVICE_IDENTIFIER_SYSTEM, IDENTIFIER_SYSTEM, REVIEW_TAG_SYSTEM
from app.writeback.submit import Submitter, outbox_payload, release_held
from tests.contract.test_outbox_faults import MODES, Killed, Restartable, _points, _requests
from tests.contract.test_submit import CTX, spec

_runs = itertools.count(1)


@pytest.fixture(scope="module")
def sekmet(tmp_path_factory):  # type: ignore[no-untyped-def]
    from sandbox.fhirstore import SekmetProcess

    proc = SekmetProcess(tmp_path_factory.mktemp("sekmet"))
    proc.start()
    yield proc.base
    proc.stop()


class BreakAfterCommit(requests.Session):
    """Sends the request to the real server, then loses the answer once for ``(method, path)``."""

    def __init__(self, method: str, resource: str) -> None:
        super().__init__()
        self.target = (method, resource)
        self.fired = False

    def request(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        resp = super().request(method, url, *args, **kwargs)
        path = url.split("/fhir", 1)[1].strip("/").split("?")[0]
        if not self.fired and (method, path) == self.target:
            self.fired = True
            raise requests.ConnectionError("answer lost after commit")
        return resp


def _client(base: str, session: requests.Session | None = None) -> FhirClient:
    return FhirClient(base, session=session, max_attempts=1, backoff_s=0.001)


def _count(base: str, run_id: str) -> tuple[list[dict], list[dict], list[dict]]:
    h = {"Accept": "application/fhir+json", "Cache-Control": "no-cache"}
    docs = [e["resource"] for e in requests.get(
        f"{base}/DocumentReference", params={"identifier": f"{IDENTIFIER_SYSTEM}|{run_id}"},
        headers=h, timeout=30).json().get("entry", [])]
    provs: list[dict] = []
    for doc in docs:
        provs += [e["resource"] for e in requests.get(
            f"{base}/Provenance", params={"target": f"DocumentReference/{doc['id']}"},
            headers=h, timeout=30).json().get("entry", [])]
    review = [p for p in provs if any(t.get("system") == REVIEW_TAG_SYSTEM
                                      for t in (p.get("meta") or {}).get("tag") or [])]
    return docs, [p for p in provs if p not in review], review


def _prepare(db: Restartable, base: str, mode: str) -> str:
    run_id = f"real-{mode}-{next(_runs)}"
    box = db.outbox()
    # a model of its own per run, so the Device is created (and counted) in this test too
    box.put(run_id, base, outbox_payload(dataclasses.replace(spec(run_id), model_id=f"m-{run_id}"), CTX))
    if mode == "oracle-approved":
        Submitter(_client(base), box, MODES[mode]).submit(run_id)
        release_held(box, run_id, reviewer="Practitioner/prac-1", at=datetime(2026, 11, 2, tzinfo=UTC))
    return run_id


def _assert_once(base: str, db: Restartable, mode: str, run_id: str) -> None:
    docs, ai, review = _count(base, run_id)
    assert len(docs) == 1, f"{len(docs)} drafts for one run"
    assert len(ai) == 1
    devices = requests.get(f"{base}/Device", params={"identifier": f"{DEVICE_IDENTIFIER_SYSTEM}|m-{run_id}@a"},
                           headers={"Cache-Control": "no-cache"}, timeout=30).json().get("entry", [])
    assert len(devices) == 1
    assert db.outbox().get(run_id)["state"] == "sent"
    if mode == "oracle-approved":
        assert docs[0]["docStatus"] == "final" and len(review) == 1
    else:
        assert docs[0]["docStatus"] == "preliminary" and review == []


KILLS = [(m, p) for m in MODES for p in _points(m)]


@pytest.mark.parametrize(("mode", "point"), KILLS, ids=[f"{m}-{p}" for m, p in KILLS])
def test_killed_between_steps_on_sekmet(sekmet, tmp_path, mode: str, point: str) -> None:  # type: ignore[no-untyped-def]
    db = Restartable(tmp_path / "app.db")
    run_id = _prepare(db, sekmet, mode)

    def die(at: str) -> None:
        if at == point:
            raise Killed(at)

    with pytest.raises(Killed):
        Submitter(_client(sekmet), db.outbox(), MODES[mode], hook=die).submit(run_id)
    assert db.outbox().get(run_id)["state"] == "pending"
    Submitter(_client(sekmet), db.outbox(), MODES[mode]).submit(run_id)
    _assert_once(sekmet, db, mode, run_id)
    Submitter(_client(sekmet), db.outbox(), MODES[mode]).submit(run_id)  # again: nothing new
    _assert_once(sekmet, db, mode, run_id)


WRITES = [(m, t) for m in MODES for meth, t in _requests(m) if meth == "POST"]


@pytest.mark.parametrize(("mode", "target"), WRITES, ids=[f"{m}-{t}" for m, t in WRITES])
def test_answer_lost_after_commit_on_sekmet(sekmet, tmp_path, mode: str, target: str) -> None:  # type: ignore[no-untyped-def]
    db = Restartable(tmp_path / "app.db")
    run_id = _prepare(db, sekmet, mode)
    session = BreakAfterCommit("POST", "" if target == "transaction" else target)
    with pytest.raises(AppError):
        Submitter(_client(sekmet, session), db.outbox(), MODES[mode]).submit(run_id)
    assert session.fired
    Submitter(_client(sekmet), db.outbox(), MODES[mode]).submit(run_id)
    _assert_once(sekmet, db, mode, run_id)
