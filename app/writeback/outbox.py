"""Durable local outbox: every write is stored here before it goes to the server.

A draft leaves the outbox (state ``sent``) only once the server acknowledged
it. The payload holds note-derived text, so it is encrypted at rest.
"""

from __future__ import annotations

import json
import time

from sqlalchemy import Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from app.store.db import Base
from app.store.models import Vault


class OutboxItem(Base):
    __tablename__ = "outbox"
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fhir_base: Mapped[str] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending | sent | disabled
    payload_encrypted: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result_json: Mapped[str | None] = mapped_column(Text, nullable=True)  # written ids only
    created: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)


class Outbox:
    def __init__(self, maker: sessionmaker, vault: Vault) -> None:
        self._maker = maker
        self._vault = vault

    def put(self, run_id: str, fhir_base: str, payload: dict, *, state: str = "pending") -> None:
        """Store once; putting the same run again keeps the first payload (idempotent)."""
        now = time.time()
        with self._maker.begin() as db:
            if db.get(OutboxItem, run_id) is None:
                db.add(OutboxItem(run_id=run_id, fhir_base=fhir_base, state=state,
                                  payload_encrypted=self._vault.seal(json.dumps(payload)),
                                  attempts=0, created=now, updated=now))

    def payload(self, run_id: str) -> dict | None:
        with self._maker() as db:
            row = db.get(OutboxItem, run_id)
            return json.loads(self._vault.open(row.payload_encrypted)) if row else None

    def mark_attempt(self, run_id: str, error_code: str | None) -> None:
        with self._maker.begin() as db:
            row = db.get(OutboxItem, run_id)
            if row is not None:
                row.attempts += 1
                row.last_error_code = error_code
                row.updated = time.time()

    def mark_sent(self, run_id: str, written: dict) -> None:
        with self._maker.begin() as db:
            row = db.get(OutboxItem, run_id)
            if row is not None:
                row.state = "sent"
                row.result_json = json.dumps(written)
                row.last_error_code = None
                row.updated = time.time()

    def get(self, run_id: str) -> dict | None:
        with self._maker() as db:
            row = db.get(OutboxItem, run_id)
            return _public(row) if row else None

    def pending(self) -> list[dict]:
        with self._maker() as db:
            rows = db.scalars(select(OutboxItem).where(OutboxItem.state == "pending")
                              .order_by(OutboxItem.created)).all()
            return [_public(r) for r in rows]

    def all(self) -> list[dict]:
        with self._maker() as db:
            return [_public(r) for r in db.scalars(select(OutboxItem).order_by(OutboxItem.created)).all()]


def _public(row: OutboxItem) -> dict:
    """What may be shown or printed: no payload."""
    return {"run_id": row.run_id, "state": row.state, "attempts": row.attempts,
            "last_error_code": row.last_error_code,
            "written": json.loads(row.result_json) if row.result_json else None}
