"""Stores of the durable web state: runs and drafts, launch context, pending launches, jobs.

Everything a request needs is here, so any worker serves any request of a
session and a restart loses nothing (docs/operations.md). PHI-bearing values
(draft text and citations, edited text and diffs, the launch context with the
patient id, the PKCE verifier) are sealed with the ``Vault``; clear columns
hold ids, codes, counts and timings only.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import sessionmaker

from app.store.models import (
    DraftRecord,
    JobRecord,
    PendingLaunchRecord,
    RunRecord,
    Vault,
    WebSessionRecord,
)

if TYPE_CHECKING:  # the store never imports its users at run time
    from app.agent.runtime import Draft
    from app.smart.launch import PendingLaunch

__all__ = ["JOB_STALE_S", "WORKER_ID", "DraftStore", "JobStore", "PendingStore", "WebSessionStore",
           "draft_from_json", "draft_to_json"]

JOB_STALE_S = 30.0  # a running job without a heartbeat for this long is ended failed (worker_lost)
HEARTBEAT_S = 5.0
FINAL_JOB_STATES = ("done", "failed", "cancelled")
_BOOT = uuid.uuid4().hex[:8]


def worker_id() -> str:
    """``host:pid:boot`` of this process (the pid changes after a fork, so this is computed per call)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{_BOOT}"


WORKER_ID = worker_id  # callable: a forked gunicorn worker gets its own pid


# --- drafts and the run ledger ---------------------------------------------------------------
def draft_to_json(draft: Draft) -> str:
    return json.dumps(asdict(draft))


def draft_from_json(text: str) -> Draft:
    from app.agent.citations import Citation, Sentence
    from app.agent.runtime import Draft

    data = json.loads(text)
    data["sentences"] = [Sentence(text=s["text"], supported=s["supported"],
                                  citations=tuple(Citation(**c) for c in s.get("citations") or ()))
                         for s in data.get("sentences") or []]
    return Draft(**data)


class DraftStore:
    """Drafts (sealed), their write results and review display, and the PHI-free run ledger."""

    def __init__(self, maker: sessionmaker, vault: Vault, patient_hash: Any = None) -> None:
        self._maker = maker
        self._vault = vault
        self._patient_hash = patient_hash or (lambda pid: "")

    # the ledger: run_task(ledger=...) calls this with Draft.ledger_row()
    def record_run(self, row: dict[str, Any], *, session_id: str | None = None,
                   unsupported: int = 0, prompt_version: str | None = None,
                   trace_id: str | None = None) -> None:
        status = str(row.get("status"))
        values = dict(task=str(row["task"]), backend=str(row["backend"]), model=str(row["model"])[:128],
                      status=status, turns=int(row.get("turns") or 0),
                      tokens_in=int(row.get("tokens_in") or 0), tokens_out=int(row.get("tokens_out") or 0),
                      cost_usd=float(row.get("cost_usd") or 0.0), latency_ms=int(row.get("latency_ms") or 0),
                      limits_hit=status if status in ("limit_exceeded", "loop_detected") else None)
        with self._maker.begin() as db:
            rec = db.get(RunRecord, str(row["run_id"]))
            if rec is None:
                rec = RunRecord(run_id=str(row["run_id"]), created=time.time(), unsupported=unsupported,
                                session_id=session_id, prompt_version=prompt_version, trace_id=trace_id,
                                **values)
                db.add(rec)
            else:
                for key, value in values.items():
                    setattr(rec, key, value)
            if session_id is not None:
                rec.session_id = session_id
            if unsupported:
                rec.unsupported = unsupported
            if prompt_version:
                rec.prompt_version = prompt_version
            if trace_id:
                rec.trace_id = trace_id

    def runs(self, limit: int = 500) -> list[dict[str, Any]]:
        with self._maker() as db:
            rows = db.scalars(select(RunRecord).order_by(RunRecord.created.desc()).limit(limit)).all()
            return [{c: getattr(r, c) for c in ("run_id", "task", "backend", "model", "status", "turns",
                                                 "tokens_in", "tokens_out", "cost_usd", "latency_ms",
                                                 "limits_hit", "unsupported", "trace_id", "created")}
                    for r in rows]

    def save(self, session_id: str | None, draft: Draft) -> None:
        """Keep the draft (idempotent per run); its ledger row too."""
        now = time.time()
        sealed = self._vault.seal(draft_to_json(draft))
        with self._maker.begin() as db:
            rec = db.get(DraftRecord, draft.run_id)
            if rec is None:
                db.add(DraftRecord(run_id=draft.run_id, session_id=session_id,
                                   patient_hash=self._patient_hash(draft.patient_id), task=draft.task,
                                   status=draft.status, payload_encrypted=sealed, created=now, version=1,
                                   updated=now))
            else:
                rec.payload_encrypted, rec.status, rec.updated = sealed, draft.status, now
                rec.version = (rec.version or 1) + 1
        self.record_run(draft.ledger_row(), session_id=session_id, unsupported=draft.unsupported,
                        prompt_version=draft.prompt_version)

    def _row(self, db: Any, run_id: str, session_id: str | None) -> DraftRecord | None:
        rec = db.get(DraftRecord, run_id)
        if rec is None or (session_id is not None and rec.session_id != session_id):
            return None  # another session's draft is not found, not forbidden (no oracle)
        return rec

    def get(self, run_id: str, session_id: str | None = None) -> Draft | None:
        with self._maker() as db:
            rec = self._row(db, run_id, session_id)
            return draft_from_json(self._vault.open(rec.payload_encrypted)) if rec else None

    def owner(self, run_id: str) -> tuple[str | None, str] | None:
        """(session id, patient hash) of a stored draft, or None: no PHI, for access decisions."""
        with self._maker() as db:
            rec = db.get(DraftRecord, run_id)
            return (rec.session_id, rec.patient_hash) if rec is not None else None

    def reassign(self, run_id: str, from_session: str | None, to_session: str) -> bool:
        """Move a draft to another session, only if it still belongs to ``from_session`` (atomic:
        of two sessions reopening one draft at once, one wins)."""
        with self._maker.begin() as db:
            cond = (DraftRecord.session_id.is_(None) if from_session is None
                    else DraftRecord.session_id == from_session)
            moved = db.execute(update(DraftRecord).where(DraftRecord.run_id == run_id, cond)
                               .values(session_id=to_session).execution_options(synchronize_session=False))
            return moved.rowcount == 1

    def for_session(self, session_id: str) -> list[Draft]:
        with self._maker() as db:
            rows = db.scalars(select(DraftRecord).where(DraftRecord.session_id == session_id)
                              .order_by(DraftRecord.created)).all()
            return [draft_from_json(self._vault.open(r.payload_encrypted)) for r in rows]

    def run_ids(self, session_id: str) -> list[str]:
        with self._maker() as db:
            return list(db.scalars(select(DraftRecord.run_id).where(DraftRecord.session_id == session_id)
                                   .order_by(DraftRecord.created)).all())

    def result(self, run_id: str, session_id: str | None = None) -> dict | None:
        with self._maker() as db:
            rec = self._row(db, run_id, session_id)
            return json.loads(self._vault.open(rec.result_encrypted)) if rec and rec.result_encrypted else None

    def set_result(self, run_id: str, result: dict, session_id: str | None = None) -> None:
        with self._maker.begin() as db:
            rec = self._row(db, run_id, session_id)
            if rec is None:
                raise KeyError(run_id)
            rec.result_encrypted = self._vault.seal(json.dumps(result))
            rec.updated = time.time()

    def reviews(self, run_id: str, session_id: str | None = None) -> list[dict] | None:
        with self._maker() as db:
            rec = self._row(db, run_id, session_id)
            if rec is None:
                return None
            return json.loads(self._vault.open(rec.reviews_encrypted)) if rec.reviews_encrypted else []

    def add_review(self, run_id: str, record: dict, session_id: str | None = None) -> None:
        with self._maker.begin() as db:
            rec = self._row(db, run_id, session_id)
            if rec is None:
                raise KeyError(run_id)
            items = json.loads(self._vault.open(rec.reviews_encrypted)) if rec.reviews_encrypted else []
            items.append(record)
            rec.reviews_encrypted = self._vault.seal(json.dumps(items))
            rec.updated = time.time()


# --- launch context of a session -------------------------------------------------------------
class WebSessionStore:
    def __init__(self, maker: sessionmaker, vault: Vault, lifetime_s: int) -> None:
        self._maker = maker
        self._vault = vault
        self._lifetime = lifetime_s

    def save(self, sid: str, context: dict[str, Any]) -> None:
        now = time.time()
        sealed = self._vault.seal(json.dumps(context))
        with self._maker.begin() as db:
            rec = db.get(WebSessionRecord, sid)
            if rec is None:
                db.add(WebSessionRecord(sid=sid, context_encrypted=sealed, created=now,
                                        expires=now + self._lifetime))
            else:
                rec.context_encrypted = sealed

    def load(self, sid: str) -> tuple[dict[str, Any], float] | None:
        """(context, created) of a live session, or None."""
        with self._maker() as db:
            rec = db.get(WebSessionRecord, sid)
            if rec is None or rec.expires < time.time():
                return None
            return json.loads(self._vault.open(rec.context_encrypted)), rec.created

    def live(self, sid: str | None) -> bool:
        """Whether a session is still open (neither ended nor expired); reads no context."""
        if not sid:
            return False
        with self._maker() as db:
            rec = db.get(WebSessionRecord, sid)
            return rec is not None and rec.expires >= time.time()

    def delete(self, sid: str) -> None:
        with self._maker.begin() as db:
            db.execute(delete(WebSessionRecord).where(WebSessionRecord.sid == sid))

    def purge_expired(self) -> int:
        with self._maker.begin() as db:
            return db.execute(delete(WebSessionRecord).where(WebSessionRecord.expires < time.time())).rowcount

    def count(self) -> int:
        from sqlalchemy import func

        with self._maker() as db:
            return int(db.scalar(select(func.count()).select_from(WebSessionRecord)
                                 .where(WebSessionRecord.expires >= time.time())) or 0)


# --- pending launches (state and PKCE between authorize and callback) ------------------------
class PendingStore:
    def __init__(self, maker: sessionmaker, vault: Vault, ttl_s: float) -> None:
        self._maker = maker
        self._vault = vault
        self._ttl = ttl_s

    def put(self, key: str, pending: PendingLaunch) -> None:
        now = time.time()
        sealed = self._vault.seal(json.dumps({"code_verifier": pending.code_verifier, "nonce": pending.nonce,
                                              "launch": pending.launch}))
        with self._maker.begin() as db:
            db.execute(delete(PendingLaunchRecord).where(PendingLaunchRecord.expires < now))
            db.add(PendingLaunchRecord(key=key, state=pending.state, iss=pending.iss, secrets_encrypted=sealed,
                                       created=pending.created, expires=pending.created + self._ttl))

    def take(self, key: str | None) -> PendingLaunch | None:
        """Single use: the row is deleted by the one caller that gets it; expired ones are None."""
        if not key:
            return None
        from app.smart.launch import PendingLaunch

        with self._maker.begin() as db:
            rec = db.get(PendingLaunchRecord, key)
            if rec is None:
                return None
            gone = db.execute(delete(PendingLaunchRecord).where(PendingLaunchRecord.key == key)).rowcount
            if gone != 1 or rec.expires < time.time():
                return None
            extra = json.loads(self._vault.open(rec.secrets_encrypted))
            return PendingLaunch(state=rec.state, code_verifier=extra["code_verifier"], nonce=extra["nonce"],
                                 iss=rec.iss, created=rec.created, launch=extra.get("launch"))


# --- background jobs -------------------------------------------------------------------------
class JobStore:
    """Job state in the database: any worker polls it; a killed worker's job ends ``failed``."""

    def __init__(self, maker: sessionmaker, *, stale_s: float = JOB_STALE_S) -> None:
        self._maker = maker
        self._stale = stale_s
        self._mine: set[str] = set()
        self._lock = threading.Lock()
        self._beat: threading.Thread | None = None
        self._beat_pid: int | None = None

    def create(self, key: str, session_id: str, *, kind: str = "draft", task: str | None = None) -> None:
        now = time.time()
        with self._maker.begin() as db:
            db.add(JobRecord(key=key, session_id=session_id, kind=kind, task=task, state="running",
                             cancel_requested=False, worker=worker_id(), heartbeat=now, created=now,
                             updated=now))
        with self._lock:
            self._mine.add(key)
        self._ensure_heartbeat()

    def _set(self, key: str, condition: Any = None, **values: Any) -> bool:
        stmt = update(JobRecord).where(JobRecord.key == key)
        if condition is not None:
            stmt = stmt.where(condition)
        with self._maker.begin() as db:
            changed = db.execute(stmt.values(updated=time.time(), **values)).rowcount == 1
        return changed

    def finish(self, key: str, state: str, *, run_id: str | None = None, error_code: str | None = None) -> None:
        values: dict[str, Any] = {"state": state}
        if run_id is not None:
            values["run_id"] = run_id
        if error_code is not None:
            values["error_code"] = error_code
        # a job already ended (cancelled, or declared lost) keeps its end
        self._set(key, JobRecord.state.in_(("running", "writing")), **values)
        with self._lock:
            self._mine.discard(key)

    def start_writing(self, key: str) -> bool:
        """Atomically running → writing unless a cancel came first; False means cancelled."""
        return self._set(key, (JobRecord.state == "running") & (JobRecord.cancel_requested.is_(False)),
                         state="writing")

    def cancel(self, key: str) -> bool:
        """Atomically running → cancelled; False when the write already started (or it ended)."""
        return self._set(key, JobRecord.state == "running", state="cancelled", cancel_requested=True)

    def get(self, key: str, session_id: str | None = None) -> dict[str, Any] | None:
        self.reap(key)
        with self._maker() as db:
            rec = db.get(JobRecord, key)
            if rec is None or (session_id is not None and rec.session_id != session_id):
                return None
            return {"key": rec.key, "task": rec.task, "kind": rec.kind, "state": rec.state,
                    "run_id": rec.run_id, "error_code": rec.error_code,
                    "cancel_requested": bool(rec.cancel_requested), "worker": rec.worker,
                    "session_id": rec.session_id}

    def keys(self, session_id: str) -> list[str]:
        with self._maker() as db:
            return list(db.scalars(select(JobRecord.key).where(JobRecord.session_id == session_id)
                                   .order_by(JobRecord.created)).all())

    # -- liveness ----------------------------------------------------------------------------
    def _ensure_heartbeat(self) -> None:
        with self._lock:
            if self._beat is not None and self._beat.is_alive() and self._beat_pid == os.getpid():
                return
            self._beat_pid = os.getpid()
            self._beat = threading.Thread(target=self._heartbeat_loop, name="job-heartbeat", daemon=True)
            self._beat.start()

    def _heartbeat_loop(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            self.heartbeat()

    def heartbeat(self) -> None:
        with self._lock:
            keys = list(self._mine)
        if not keys:
            return
        try:
            with self._maker.begin() as db:
                db.execute(update(JobRecord).where(JobRecord.key.in_(keys),
                                                   JobRecord.state.in_(("running", "writing")))
                           .values(heartbeat=time.time()))
        except Exception:  # noqa: BLE001, S110 - a missed beat is retried; stale_s tolerates several
            pass

    @staticmethod
    def _dead_here(worker: str) -> bool:
        host, _, rest = worker.partition(":")
        pid_s, _, boot = rest.partition(":")
        if host != socket.gethostname()[:64] or not pid_s.isdigit():
            return False
        if int(pid_s) == os.getpid():
            return boot != _BOOT  # our pid, another boot: the earlier process is gone
        try:
            os.kill(int(pid_s), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def reap(self, key: str | None = None) -> int:
        """End ``failed`` (error ``worker_lost``) the running jobs whose worker is gone."""
        now = time.time()
        with self._maker() as db:
            stmt = select(JobRecord).where(JobRecord.state.in_(("running", "writing")))
            if key is not None:
                stmt = stmt.where(JobRecord.key == key)
            rows = db.scalars(stmt).all()
            lost = [r.key for r in rows if r.heartbeat < now - self._stale or self._dead_here(r.worker)]
        for k in lost:
            self._set(k, JobRecord.state.in_(("running", "writing")), state="failed", error_code="worker_lost")
        return len(lost)
