"""Durable local outbox: every write is stored here before it goes to the server.

A draft leaves the outbox (state ``sent``) only once the server acknowledged
every resource of it. Between steps of a write sequence the ids the server
already confirmed are kept (``written``), so a restart resumes where it
stopped. The payload holds note-derived text, so it is encrypted at rest.

States::

    pending ──(server acknowledged all)──▶ sent
    pending ──(attempts ≥ MAX_ATTEMPTS)──▶ failed ──(retry --force)──▶ pending
    held_until_approval ──(clinician approves in the app)──▶ pending   (Oracle Health)
    held_until_approval ──(clinician rejects)──▶ rejected              (never written)

Retries back off exponentially from the last attempt (``BACKOFF_BASE_S`` ·
2^(attempts-1), at most ``BACKOFF_MAX_S``); ``due()`` lists what may be tried now.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from app.errors import AppError
from app.store.models import OutboxItem, Vault

PENDING, SENT, FAILED, HELD, REJECTED = "pending", "sent", "failed", "held_until_approval", "rejected"
STATES = (PENDING, SENT, FAILED, HELD, REJECTED)
BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 3600.0
MAX_ATTEMPTS = 12


def backoff_s(attempts: int) -> float:
    """Seconds to wait after ``attempts`` failed attempts before the next one."""
    if attempts <= 0:
        return 0.0
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempts - 1)))


class Outbox:
    def __init__(self, maker: sessionmaker, vault: Vault, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._maker = maker
        self._vault = vault
        self._clock = clock

    def put(self, run_id: str, fhir_base: str, payload: dict, *, state: str = PENDING) -> bool:
        """Store once; putting the same run again keeps the first payload (idempotent).

        Returns True when the item was new."""
        if state not in STATES:
            raise ValueError(f"unknown outbox state {state!r}")
        now = self._clock()
        with self._maker.begin() as db:
            if db.get(OutboxItem, run_id) is not None:
                return False
            db.add(OutboxItem(run_id=run_id, fhir_base=fhir_base, state=state,
                              payload_encrypted=self._vault.seal(json.dumps(payload)),
                              attempts=0, created=now, updated=now))
            return True

    def payload(self, run_id: str) -> dict | None:
        with self._maker() as db:
            row = db.get(OutboxItem, run_id)
            return json.loads(self._vault.open(row.payload_encrypted)) if row else None

    def _update(self, run_id: str, change: Callable[[OutboxItem], None]) -> None:
        with self._maker.begin() as db:
            row = db.get(OutboxItem, run_id)
            if row is None:
                raise AppError("No such draft in the outbox.", code="outbox_missing", http_status=404)
            change(row)
            row.updated = self._clock()

    def replace_payload(self, run_id: str, payload: dict, *, state: str | None = None) -> None:
        """New payload (an edit or an approval of a held draft), optionally a new state."""
        def change(row: OutboxItem) -> None:
            row.payload_encrypted = self._vault.seal(json.dumps(payload))
            if state is not None:
                row.state = state
                row.attempts = 0
                row.last_error_code = None
        self._update(run_id, change)

    def set_state(self, run_id: str, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"unknown outbox state {state!r}")
        self._update(run_id, lambda row: setattr(row, "state", state))

    def record_progress(self, run_id: str, written: dict[str, Any]) -> None:
        """Ids the server confirmed so far; the item stays where it is."""
        self._update(run_id, lambda row: setattr(row, "result_json", json.dumps(written)))

    def mark_attempt(self, run_id: str, error_code: str | None) -> None:
        def change(row: OutboxItem) -> None:
            row.attempts += 1
            row.last_error_code = error_code
            if row.attempts >= MAX_ATTEMPTS and row.state == PENDING:
                row.state = FAILED
        self._update(run_id, change)

    def mark_sent(self, run_id: str, written: dict) -> None:
        def change(row: OutboxItem) -> None:
            row.state = SENT
            row.result_json = json.dumps(written)
            row.last_error_code = None
        self._update(run_id, change)

    def retry_now(self, run_id: str) -> None:
        """Make a failed or backing-off item due now (``outbox retry --force``)."""
        def change(row: OutboxItem) -> None:
            if row.state == FAILED:
                row.state = PENDING
            row.attempts = 0
        self._update(run_id, change)

    def get(self, run_id: str) -> dict | None:
        with self._maker() as db:
            row = db.get(OutboxItem, run_id)
            return self._public(row) if row else None

    def pending(self) -> list[dict]:
        return self._where(OutboxItem.state == PENDING)

    def held(self) -> list[dict]:
        return self._where(OutboxItem.state == HELD)

    def due(self) -> list[dict]:
        """Pending items whose backoff has elapsed."""
        return [i for i in self.pending() if i["next_attempt_at"] <= self._clock()]

    def all(self) -> list[dict]:
        with self._maker() as db:
            return [self._public(r) for r in db.scalars(select(OutboxItem).order_by(OutboxItem.created)).all()]

    def _where(self, condition: Any) -> list[dict]:
        with self._maker() as db:
            rows = db.scalars(select(OutboxItem).where(condition).order_by(OutboxItem.created)).all()
            return [self._public(r) for r in rows]

    @staticmethod
    def _public(row: OutboxItem) -> dict:
        """What may be shown or printed: ids, states and codes; no payload."""
        return {"run_id": row.run_id, "fhir_base": row.fhir_base, "state": row.state, "attempts": row.attempts,
                "last_error_code": row.last_error_code,
                "next_attempt_at": row.updated + backoff_s(row.attempts) if row.attempts else row.created,
                "written": json.loads(row.result_json) if row.result_json else None}
