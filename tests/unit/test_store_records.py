"""The durable web state on SQLite and PostgreSQL: drafts sealed and scoped, ledger, pending launches, jobs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import text

from app.agent.citations import Citation, Sentence
from app.agent.runtime import Draft
from app.smart.launch import PendingLaunch
from app.store.db import make_engine, make_sessionmaker
from app.store.migrate import upgrade
from app.store.models import Vault
from app.store.records import DraftStore, JobStore, PendingStore, WebSessionStore

SECRET_TEXT = "Patient reports severe colitis after ipilimumab"


@pytest.fixture
def maker(database_url):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def _draft(run_id: str = "run-1", status: str = "completed") -> Draft:
    cite = Citation(document="doc-1", version="2", start=3, end=20, quote=SECRET_TEXT[:17], chunk_id="c1")
    return Draft(run_id=run_id, task="summary", patient_id="pat-1", status=status,
                 sentences=[Sentence(text=SECRET_TEXT, supported=True, citations=(cite,)),
                            Sentence(text="Unsupported claim.", supported=False)],
                 findings={"events": []}, injection_suspected=[], backend="offline", model="extractive-1",
                 turns=2, tokens_in=10, tokens_out=5, cost_usd=0.0, latency_ms=42, prompt_version="p1",
                 notes=["n"], answer_found=True)


def test_a_draft_round_trips_sealed_and_only_for_its_session(maker):
    store = DraftStore(maker, Vault(b"k"), patient_hash=lambda p: hashlib.sha256(p.encode()).hexdigest()[:16])
    store.save("sid-a", _draft())
    got = store.get("run-1", "sid-a")
    assert got == _draft() and got.sentences[0].citations[0].document == "doc-1"
    assert store.get("run-1", "sid-b") is None  # another session: not found
    assert [d.run_id for d in store.for_session("sid-a")] == ["run-1"] and store.for_session("sid-b") == []
    store.set_result("run-1", {"state": "written", "text": SECRET_TEXT}, "sid-a")
    store.add_review("run-1", {"action": "edit", "diff": [["+", SECRET_TEXT]]}, "sid-a")
    assert store.result("run-1", "sid-a")["state"] == "written"
    assert store.reviews("run-1", "sid-a") == [{"action": "edit", "diff": [["+", SECRET_TEXT]]}]
    with maker() as db:  # nothing readable at rest
        raw = " ".join(str(v) for row in db.execute(text("SELECT * FROM drafts")).all() for v in row)
        ledger = " ".join(str(v) for row in db.execute(text("SELECT * FROM runs")).all() for v in row)
    assert "colitis" not in raw and "pat-1" not in raw and hashlib.sha256(b"pat-1").hexdigest()[:16] in raw
    assert "colitis" not in ledger and "pat-1" not in ledger


def test_the_ledger_has_a_row_per_run_with_its_figures(maker):
    store = DraftStore(maker, Vault(b"k"))
    store.record_run(_draft("run-2", "limit_exceeded").ledger_row())  # from run_task(ledger=...)
    store.save("sid-a", _draft("run-2", "limit_exceeded"))  # then saved with the session: one row
    [row] = store.runs()
    assert row["run_id"] == "run-2" and row["limits_hit"] == "limit_exceeded" and row["unsupported"] == 1
    assert (row["turns"], row["tokens_in"], row["tokens_out"], row["latency_ms"]) == (2, 10, 5, 42)
    assert row["trace_id"] is None


def test_a_pending_launch_is_single_use_expires_and_keeps_its_verifier_sealed(maker):
    store = PendingStore(maker, Vault(b"k"), ttl_s=600)
    pending = PendingLaunch(state="st", code_verifier="verifier-xyz", nonce="n", iss="https://ehr/fhir", launch="L")
    store.put("key1", pending)
    with maker() as db:
        raw = " ".join(str(v) for row in db.execute(text("SELECT * FROM pending_launches")).all() for v in row)
    assert "verifier-xyz" not in raw
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(store.take("key1"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r for r in results if r is not None] == [pending]  # exactly one caller gets it
    store.put("old", PendingLaunch(state="s2", code_verifier="v", nonce="n", iss="i", created=time.time() - 601))
    assert store.take("old") is None and store.take(None) is None


def test_the_launch_context_is_sealed_and_expires(maker):
    store = WebSessionStore(maker, Vault(b"k"), lifetime_s=3600)
    store.save("sid", {"patient_id": "pat-secret", "role": "clinician"})
    assert store.load("sid")[0] == {"patient_id": "pat-secret", "role": "clinician"}
    with maker() as db:
        assert "pat-secret" not in str(db.execute(text("SELECT context_encrypted FROM web_sessions")).scalar())
    assert store.count() == 1
    short = WebSessionStore(maker, Vault(b"k"), lifetime_s=-1)
    short.save("gone", {})
    assert short.load("gone") is None and store.purge_expired() == 1


def test_cancel_and_write_are_decided_once_across_handles(maker):
    jobs, other = JobStore(maker), JobStore(maker)  # two workers' stores on one database
    jobs.create("j1", "sid", task="summary")
    assert other.cancel("j1") and not jobs.start_writing("j1")
    assert jobs.get("j1")["state"] == "cancelled"
    jobs.finish("j1", "done", run_id="r")  # a cancelled job keeps its end
    assert other.get("j1")["state"] == "cancelled"
    jobs.create("j2", "sid")
    assert jobs.start_writing("j2") and not other.cancel("j2")
    jobs.finish("j2", "done", run_id="r2")
    assert other.get("j2", "sid")["run_id"] == "r2" and other.get("j2", "other-sid") is None


def test_a_job_of_a_killed_worker_ends_failed(maker, database_url):
    """A child process creates a running job and is SIGKILLed; the next look ends it worker_lost."""
    code = ("import sys, time; from app.store.db import make_engine, make_sessionmaker; "
            "from app.store.records import JobStore; "
            f"JobStore(make_sessionmaker(make_engine({database_url!r}))).create('jk', 'sid'); "
            "print('ready', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,  # noqa: S603
                             cwd=os.getcwd())
    try:
        assert child.stdout.readline().strip() == "ready"
        jobs = JobStore(maker)
        assert jobs.get("jk")["state"] == "running"  # alive: untouched
        child.kill()
        child.wait(10)
        row = jobs.get("jk")
        assert row["state"] == "failed" and row["error_code"] == "worker_lost"
    finally:
        if child.poll() is None:
            child.kill()


def test_a_job_without_heartbeat_ends_failed(maker):
    jobs = JobStore(maker, stale_s=0.2)
    jobs.create("jh", "sid")
    with maker.begin() as db:  # as if its worker ran on another host and stopped beating
        db.execute(text("UPDATE jobs SET worker = 'elsewhere:1:x', heartbeat = heartbeat - 10"))
    assert jobs.get("jh")["state"] == "failed"
