"""Every table of the app, and the encrypted stores that do not belong to another room.

All models live here, so registering them (``create_tables``, alembic) imports
only this module: the store never imports its users (audit, review, write-back).
Those modules import their model from here and keep their own logic.

PHI rules of the schema: free text and note-derived content (draft text,
citations' quotes, edited text, diffs, launch context with the patient id) is
sealed with ``Vault`` (Fernet, key derived from ``APP_SECRET_KEY``); the
columns in clear hold ids, codes, counts, timings and HMAC'd ids only.
Tokens are encrypted likewise; the browser holds an opaque session id.

Tables (docs/operations.md has the full list and who reads them):
``launch_sessions`` tokens · ``web_sessions`` launch context · ``pending_launches``
state/PKCE between authorize and callback · ``smart_configurations`` cached
discovery · ``runs`` the run ledger · ``drafts`` draft, write result and review
display (encrypted) · ``jobs`` background indexing/drafting · ``reviews`` review
events · ``outbox`` writes to the EHR · ``audit_entries`` the hash-chained trail.
"""

from __future__ import annotations

import base64
import hashlib
import time

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Boolean, Float, Integer, String, Text, or_, select, update
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from app.errors import AuthError
from app.smart.tokens import TokenSet
from app.store.db import Base

__all__ = ["AuditEntry", "DiscoveryDocument", "DraftRecord", "JobRecord", "LaunchSession", "OutboxItem",
           "PendingLaunchRecord", "ReviewRecord", "RunRecord", "SessionStore", "Vault", "WebSessionRecord"]


# --- baseline tables (revision 0001: the schema create_all made before migrations) -------------
class LaunchSession(Base):
    __tablename__ = "launch_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fhir_base: Mapped[str] = mapped_column(String(500))
    tokens_encrypted: Mapped[str] = mapped_column(Text)
    created: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float)
    # revision 0004: until when one worker holds the right to refresh this session's tokens
    refresh_lease: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)


class DraftRecord(Base):
    """A draft the app produced: PHI-bearing, so kept server side and encrypted.

    ``payload_encrypted`` is the whole draft (sentences, citations, findings);
    ``result_encrypted`` the write-back result shown on the page (ids, state,
    edited text); ``reviews_encrypted`` the review history shown on the page
    (with diffs). The PHI-free review events are in ``reviews``.
    """

    __tablename__ = "drafts"
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    patient_hash: Mapped[str] = mapped_column(String(64), index=True)
    task: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    payload_encrypted: Mapped[str] = mapped_column(Text)
    created: Mapped[float] = mapped_column(Float)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # revision 0002
    result_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviews_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated: Mapped[float | None] = mapped_column(Float, nullable=True)


class AuditEntry(Base):
    """One chained entry of the audit trail (``app.audit.trail``); canonical JSON of an AuditEvent."""

    __tablename__ = "audit_entries"
    __table_args__ = {"sqlite_autoincrement": True}  # never reuse a deleted seq

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recorded: Mapped[str] = mapped_column(String(40), nullable=False)
    event_json: Mapped[str] = mapped_column(Text, nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)


class OutboxItem(Base):
    """One draft on its way to the EHR (``app.writeback.outbox``)."""

    __tablename__ = "outbox"
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fhir_base: Mapped[str] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(32), index=True)  # one of outbox.STATES
    payload_encrypted: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result_json: Mapped[str | None] = mapped_column(Text, nullable=True)  # written ids only
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)


class ReviewRecord(Base):
    """One review event (``app.review.workflow``); PHI-free: who, when, action, edit distance, reason."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[str] = mapped_column(String(128), index=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    reviewer: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(16))  # approve | edit | reject
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    edit_distance: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    at: Mapped[float] = mapped_column(Float)


# --- revision 0002 ----------------------------------------------------------------------------
class RunRecord(Base):
    """The run ledger: one row per agent run; PHI-free (no text, no patient, ids and figures)."""

    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    task: Mapped[str] = mapped_column(String(32), index=True)
    backend: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32), index=True)
    turns: Mapped[int] = mapped_column(Integer, default=0)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    limits_hit: Mapped[str | None] = mapped_column(String(32), nullable=True)  # limit_exceeded | loop_detected
    unsupported: Mapped[int] = mapped_column(Integer, default=0)
    prompt_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    trace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created: Mapped[float] = mapped_column(Float, index=True)


class WebSessionRecord(Base):
    """A launched session's context (patient, user, role, encounter...), sealed: any worker serves it."""

    __tablename__ = "web_sessions"
    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    context_encrypted: Mapped[str] = mapped_column(Text)
    created: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float, index=True)


class PendingLaunchRecord(Base):
    """Between the redirect to authorize and the callback: single use, expires; verifier sealed."""

    __tablename__ = "pending_launches"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # browser nonce (cookie)
    state: Mapped[str] = mapped_column(String(128))
    iss: Mapped[str] = mapped_column(String(500))
    secrets_encrypted: Mapped[str] = mapped_column(Text)  # PKCE code_verifier, nonce, launch
    created: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float, index=True)


class DiscoveryDocument(Base):
    """A cached ``.well-known/smart-configuration`` of an allowed ``iss`` (public data)."""

    __tablename__ = "smart_configurations"
    fhir_base: Mapped[str] = mapped_column(String(500), primary_key=True)
    document_json: Mapped[str] = mapped_column(Text)
    fetched: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float)


class JobRecord(Base):
    """A background job (indexing or drafting) of a session; polled from any worker.

    ``worker`` is ``host:pid:boot`` of the process running it; ``heartbeat``
    is refreshed while it runs. A job whose worker died (pid gone on this
    host, or no heartbeat for ``JOB_STALE_S``) is ended ``failed`` with
    ``error_code=worker_lost`` by whoever looks at it next.
    """

    __tablename__ = "jobs"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # draft | index
    task: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # running | writing | done | failed | cancelled
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str] = mapped_column(String(128))
    heartbeat: Mapped[float] = mapped_column(Float)
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)


# --- encryption at rest and the token store ----------------------------------------------------
class Vault:
    """Symmetric encryption for what the store keeps at rest."""

    def __init__(self, secret: bytes) -> None:
        key = base64.urlsafe_b64encode(hashlib.sha256(b"store-at-rest:" + secret).digest())
        self._fernet = Fernet(key)

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise AuthError("Stored session data could not be read. Launch again.", code="store_corrupt") from None


class SessionStore:
    def __init__(self, maker: sessionmaker, vault: Vault, lifetime_s: int) -> None:
        self._maker = maker
        self._vault = vault
        self._lifetime = lifetime_s

    def save(self, sid: str, fhir_base: str, tokens: TokenSet) -> None:
        """Store the session's tokens (and release its refresh lease, if one was held)."""
        now = time.time()
        with self._maker.begin() as db:
            row = db.get(LaunchSession, sid)
            sealed = self._vault.seal(tokens.to_json())
            if row is None:
                db.add(LaunchSession(id=sid, fhir_base=fhir_base, tokens_encrypted=sealed,
                                     created=now, expires=now + self._lifetime))
            else:
                row.tokens_encrypted = sealed
                row.refresh_lease = None

    def acquire_refresh(self, sid: str, lease_s: float) -> bool:
        """Take the session's refresh lease for ``lease_s`` seconds: True for exactly one caller
        among all workers sharing the database (a conditional UPDATE, atomic on SQLite and
        PostgreSQL), until ``save`` or ``release_refresh`` or the lease's expiry."""
        now = time.time()
        with self._maker.begin() as db:
            taken = db.execute(
                update(LaunchSession)
                .where(LaunchSession.id == sid,
                       or_(LaunchSession.refresh_lease.is_(None), LaunchSession.refresh_lease < now))
                .values(refresh_lease=now + lease_s)
                .execution_options(synchronize_session=False))
            return taken.rowcount == 1

    def release_refresh(self, sid: str) -> None:
        with self._maker.begin() as db:
            db.execute(update(LaunchSession).where(LaunchSession.id == sid)
                       .values(refresh_lease=None).execution_options(synchronize_session=False))

    def load(self, sid: str) -> tuple[str, TokenSet] | None:
        with self._maker() as db:
            row = db.get(LaunchSession, sid)
            if row is None:
                return None
            if row.expires < time.time():
                db.delete(row)
                db.commit()
                return None
            return row.fhir_base, TokenSet.from_json(self._vault.open(row.tokens_encrypted))

    def delete(self, sid: str) -> None:
        with self._maker.begin() as db:
            row = db.get(LaunchSession, sid)
            if row is not None:
                db.delete(row)

    def purge_expired(self) -> int:
        with self._maker.begin() as db:
            rows = db.scalars(select(LaunchSession).where(LaunchSession.expires < time.time())).all()
            for row in rows:
                db.delete(row)
            return len(rows)


# --- revision 0003 ----------------------------------------------------------------------------
class ShadowRunRecord(Base):
    """A shadow run (APP_SHADOW_BACKEND): never written or shown; only figures (docs/governance.md)."""

    __tablename__ = "shadow_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)  # the primary run it shadowed
    task: Mapped[str] = mapped_column(String(32))
    backend: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32))
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    primary_latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    primary_cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    disagree: Mapped[bool] = mapped_column(Boolean, default=False)  # irae_detected or organ set differs
    agreement: Mapped[float] = mapped_column(Float, default=1.0)  # Jaccard: organs (irae), cited documents
    created: Mapped[float] = mapped_column(Float, index=True)


class ModelReleaseRecord(Base):
    """A gold-set run of a backend + model (``eval --record``): the model-release gate reads it."""

    __tablename__ = "model_releases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backend: Mapped[str] = mapped_column(String(32), index=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    passed: Mapped[bool] = mapped_column(Boolean, default=False)
    f1: Mapped[float | None] = mapped_column(Float, nullable=True)
    precision: Mapped[float | None] = mapped_column(Float, nullable=True)
    corpus: Mapped[str] = mapped_column(String(200))
    created: Mapped[float] = mapped_column(Float)
