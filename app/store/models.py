"""Server-side records: launch sessions (tokens encrypted at rest) and drafts.

Tokens live only here, encrypted with a key derived from ``APP_SECRET_KEY``
(Fernet: AES-128-CBC + HMAC-SHA256). The browser holds an opaque session id.
"""

from __future__ import annotations

import base64
import hashlib
import time

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from app.errors import AuthError
from app.smart.tokens import TokenSet
from app.store.db import Base


class LaunchSession(Base):
    __tablename__ = "launch_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fhir_base: Mapped[str] = mapped_column(String(500))
    tokens_encrypted: Mapped[str] = mapped_column(Text)
    created: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float)


class DraftRecord(Base):
    """A draft the app produced: PHI-bearing, so kept server side and encrypted."""

    __tablename__ = "drafts"
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    patient_hash: Mapped[str] = mapped_column(String(64), index=True)
    task: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    payload_encrypted: Mapped[str] = mapped_column(Text)
    created: Mapped[float] = mapped_column(Float)
    version: Mapped[int] = mapped_column(Integer, default=1)


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
        now = time.time()
        with self._maker.begin() as db:
            row = db.get(LaunchSession, sid)
            sealed = self._vault.seal(tokens.to_json())
            if row is None:
                db.add(LaunchSession(id=sid, fhir_base=fhir_base, tokens_encrypted=sealed,
                                     created=now, expires=now + self._lifetime))
            else:
                row.tokens_encrypted = sealed

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
