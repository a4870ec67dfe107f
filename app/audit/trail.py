"""The app's own append-only, hash-chained audit trail of BALP-shaped AuditEvents.

../shared/STANDARDS.md, "AuditEvent (IHE BALP shape)": most EHRs refuse client
AuditEvents, so the app always keeps its own trail. Each entry stores the
canonical JSON of one R4 AuditEvent (``sort_keys``, compact separators) and

    hash = sha256(prev_hash + canonical_json)      (hex; genesis prev_hash = "0" * 64)

``verify()`` walks the chain and reports the first entry that was edited,
deleted or moved. Appends are serialised by a process lock and, across
processes, by a UNIQUE constraint on ``prev_hash`` and the primary key ``seq``
(tail + 1, set by the writer; on SQLite and PostgreSQL alike): two writers
that read the same tail cannot both link to it; the loser retries on the new tail.

PHI guard (STANDARDS "No note text"; STYLE "de-identification by allowlist"):
``append`` accepts only elements on an allowlist of AuditEvent paths (codes,
references, identifiers, the base64 query), refuses free text such as
``text``, ``outcomeDesc``, ``entity.description``/``detail``/``name``,
``entity.what.display`` and ``agent.name``, and caps string lengths. The
trail does not stop a caller putting a name in a reference; callers pass ids.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.errors import AppError
from app.store.models import AuditEntry
from app.writeback.builders import (
    AUDIT_ACTIONS,
    AUDIT_OUTCOMES,
    create_audit_event,
    create_model_call_audit_event,
)

__all__ = ["GENESIS_HASH", "AuditEntry", "AuditTrail", "VerifyResult", "canonical_json",
           "check_phi_free"]

GENESIS_HASH = "0" * 64
MAX_STRING = 256
MAX_QUERY = 4096
_APPEND_ATTEMPTS = 50
_EXPORT_NAMESPACE = uuid.UUID("5b0c7f4e-2f7a-4c55-9a53-6f1d0f2b8a11")


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None


def canonical_json(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, event_json: str) -> str:
    return hashlib.sha256((prev_hash + event_json).encode("utf-8")).hexdigest()


# --- PHI guard: allowlist of AuditEvent element paths (list indices dropped) ----------------
_CODING_KEYS = ("system", "version", "code", "display", "userSelected")
_REF_KEYS = ("reference", "type", "identifier.system", "identifier.value")
_CODINGS = ("type", "subtype", "source.type", "agent.media", "entity.type", "entity.role",
            "entity.lifecycle", "entity.securityLabel", "meta.security", "meta.tag")
_CONCEPTS = ("purposeOfEvent", "agent.type", "agent.role", "agent.purposeOfUse")
_ALLOWED: frozenset[str] = frozenset(
    {"resourceType", "id", "meta.versionId", "meta.lastUpdated", "meta.profile", "action",
     "period.start", "period.end", "recorded", "outcome", "agent.altId", "agent.requestor",
     "agent.policy", "agent.network.address", "agent.network.type", "source.site",
     "entity.query",
     # display allowed only where it names software or a user reference, never an entity
     "agent.who.display", "source.observer.display"}
    | {f"{base}.{k}" for base in _CODINGS for k in _CODING_KEYS}
    | {f"{base}.coding.{k}" for base in _CONCEPTS for k in _CODING_KEYS}
    | {f"{base}.{k}" for base in ("agent.who", "source.observer", "entity.what") for k in _REF_KEYS}
)


def _reject(message: str) -> AppError:
    return AppError(message, code="audit_phi_rejected", http_status=500)


def _walk(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            _walk(child, f"{path}.{key}" if path else str(key))
        return
    if isinstance(value, list):
        for child in value:
            _walk(child, path)
        return
    if path not in _ALLOWED:
        raise _reject(f"Audit event refused: element '{path}' is not allowed in the audit trail.")
    limit = MAX_QUERY if path == "entity.query" else MAX_STRING
    if isinstance(value, str) and len(value) > limit:
        raise _reject(f"Audit event refused: element '{path}' is longer than {limit} characters.")


def check_phi_free(event: dict[str, Any]) -> None:
    """Raise ``AppError(code="audit_phi_rejected")`` unless ``event`` is an allowlisted
    R4 AuditEvent. Messages name the element path, never its value."""
    if not isinstance(event, dict) or event.get("resourceType") != "AuditEvent":
        raise _reject("Audit event refused: not an AuditEvent.")
    _walk(event, "")
    if event.get("action") not in AUDIT_ACTIONS or event.get("outcome") not in AUDIT_OUTCOMES:
        raise _reject("Audit event refused: action or outcome is not an AuditEvent code.")
    from fhir.resources.R4B.auditevent import AuditEvent

    try:
        AuditEvent.model_validate(event)
    except ValidationError:
        # pydantic's message quotes the input values: never surface it.
        raise AppError("Audit event refused: not a valid R4 AuditEvent.",
                       code="audit_invalid", http_status=500) from None


def _is_busy(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text


class AuditTrail:
    """Append-only store over a SQLAlchemy ``sessionmaker``."""

    def __init__(self, maker: sessionmaker[Session]) -> None:
        self._maker = maker
        self._lock = threading.Lock()

    # -- writing ------------------------------------------------------------------------------
    def append(self, event: dict[str, Any]) -> AuditEntry:
        """Check the event, then link it to the tail of the chain and store it."""
        check_phi_free(event)
        body = canonical_json(event)
        recorded = str(event["recorded"])
        with self._lock:
            for attempt in range(_APPEND_ATTEMPTS):
                try:
                    return self._append_once(body, recorded)
                except (IntegrityError, OperationalError) as exc:
                    # another process linked to the same tail, or SQLite was busy
                    if isinstance(exc, OperationalError) and not _is_busy(exc):
                        raise
                    time.sleep(min(0.005 * (attempt + 1), 0.1))
        raise AppError("The audit trail is busy; the event was not recorded.",
                       code="audit_busy", http_status=503)

    def _append_once(self, body: str, recorded: str) -> AuditEntry:
        with self._maker() as session, session.begin():
            tail = session.execute(
                select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
            ).first()
            prev = tail.hash if tail else GENESIS_HASH
            # seq given, not drawn from a sequence: PostgreSQL burns sequence values on a lost race,
            # which would read as deleted entries; a racing writer fails on the primary key or prev_hash
            entry = AuditEntry(seq=(tail.seq + 1) if tail else 1, recorded=recorded, event_json=body,
                               prev_hash=prev, hash=chain_hash(prev, body))
            session.add(entry)
            session.flush()
            session.expunge(entry)  # keep loaded values whatever expire_on_commit says
        return entry

    def record(self, *, action: str, subtype: str, outcome: str, user_reference: str | None,
               client_id: str, token_jti: str | None, entity_references: Sequence[str],
               patient_id: str | None, destination: str | None = None,
               query: str | None = None) -> AuditEntry:
        """Build a BALP AuditEvent (recorded now, UTC) and append it."""
        model = create_audit_event(
            action=action, subtype=subtype, outcome=outcome, recorded=datetime.now(UTC),
            user_reference=user_reference, client_id=client_id, token_jti=token_jti,
            entity_references=entity_references, patient_id=patient_id,
            destination=destination, query=query)
        return self.append(model.model_dump(mode="json", exclude_none=True, by_alias=True))

    def record_model_call(self, *, started: datetime, ended: datetime, outcome: str,
                          user_reference: str | None, client_id: str, token_jti: str | None,
                          backend: str, model_id: str, run_id: str,
                          patient_id: str | None) -> AuditEntry:
        """A language-model call: which model, which run, for which patient, how long; no text."""
        model = create_model_call_audit_event(
            started=started, ended=ended, outcome=outcome, user_reference=user_reference,
            client_id=client_id, token_jti=token_jti, backend=backend, model_id=model_id,
            run_id=run_id, patient_id=patient_id)
        return self.append(model.model_dump(mode="json", exclude_none=True, by_alias=True))

    # -- reading ------------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Every stored AuditEvent, oldest first."""
        with self._maker() as session:
            rows = session.execute(select(AuditEntry.event_json).order_by(AuditEntry.seq)).scalars()
            return [json.loads(row) for row in rows]

    def verify(self) -> VerifyResult:
        """Walk the chain; report the first edited, deleted or reordered entry."""
        expected_prev = GENESIS_HASH
        expected_seq: int | None = None
        checked = 0
        with self._maker() as session:
            rows = session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars()
            for row in rows:
                reason = self._check_row(row, expected_prev, expected_seq)
                if reason:
                    return VerifyResult(False, checked, row.seq, reason)
                checked += 1
                expected_prev, expected_seq = row.hash, row.seq + 1
        return VerifyResult(True, checked)

    @staticmethod
    def _check_row(row: AuditEntry, expected_prev: str, expected_seq: int | None) -> str | None:
        if chain_hash(row.prev_hash, row.event_json) != row.hash:
            return "hash mismatch: the entry was edited"
        if row.prev_hash != expected_prev:
            return "broken link: an entry before this one was deleted, inserted or reordered"
        if expected_seq is not None and row.seq != expected_seq:
            return "sequence gap: an entry was deleted"
        try:
            event = json.loads(row.event_json)
        except ValueError:
            return "entry is not JSON"
        if canonical_json(event) != row.event_json:
            return "entry is not canonical JSON"
        if str(event.get("recorded")) != row.recorded:
            return "recorded column does not match the event"
        return None

    def export_bundle(self) -> dict[str, Any]:
        """A FHIR R4 Bundle (type collection) of the AuditEvents, oldest first.

        Each resource gets ``id`` = its seq and a stable ``urn:uuid`` fullUrl
        derived from its chain hash, so an export can be matched to the trail.
        """
        entries: list[dict[str, Any]] = []
        with self._maker() as session:
            for row in session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars():
                resource = json.loads(row.event_json)
                resource["id"] = str(row.seq)
                entries.append({"fullUrl": f"urn:uuid:{uuid.uuid5(_EXPORT_NAMESPACE, row.hash)}",
                                "resource": resource})
        bundle: dict[str, Any] = {
            "resourceType": "Bundle", "type": "collection",
            "timestamp": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "entry": entries}
        return bundle
