"""Clinician review of AI drafts: approve, edit, reject (../shared/STANDARDS.md, DocumentReference).

- Approve: PUT ``docStatus=final`` with ``If-Match`` of the version the reviewer
  saw, ``authenticator`` = the clinician, then a Provenance with the clinician
  as verifier. A 412 means someone changed the draft: the current version is
  reloaded and the caller shows what changed.
- Edit: the new text becomes a new version (still preliminary); the edit
  distance to the previous text is recorded (it feeds the override rate).
- Reject: ``status=entered-in-error``; the reason code is kept in the local
  review record and the audit trail, never free text on the server.
Only a user whose grants allow DocumentReference update may approve, edit or
reject; a draft with unsupported sentences needs an explicit acknowledgement.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Float, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from app.errors import AppError, FhirError, PermissionDenied
from app.fhir.client import FhirClient
from app.smart.scopes import Grants
from app.store.db import Base
from app.writeback.builders import create_verification_provenance

REJECT_REASONS = ("inaccurate", "unsupported_claims", "not_clinically_useful", "wrong_patient", "other")


class ReviewRecord(Base):
    """One review action; PHI-free (ids, codes, counts)."""

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


class ConflictError(AppError):
    """The draft changed since the reviewer loaded it (HTTP 412)."""

    code = "review_conflict"
    http_status = 409

    def __init__(self, current: dict) -> None:
        super().__init__("The draft was changed by someone else; review the current version.")
        self.current = current


@dataclass(frozen=True)
class ReviewResult:
    document_reference: str  # versioned reference after the action
    provenance: str | None = None


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (two rows; fine for note-sized texts)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def draft_text(doc: dict) -> str:
    for content in doc.get("content") or []:
        data = (content.get("attachment") or {}).get("data")
        if data:
            return base64.b64decode(data).decode("utf-8", errors="replace")
    return ""


class ReviewService:
    def __init__(self, client: FhirClient, maker: sessionmaker, audit, grants: Grants,  # type: ignore[no-untyped-def]
                 reviewer: str, client_id: str, token_jti: str | None) -> None:
        self.client = client
        self.maker = maker
        self.audit = audit
        self.grants = grants
        self.reviewer = reviewer
        self.client_id = client_id
        self.jti = token_jti

    def _require_write(self) -> None:
        if not self.grants.allows("DocumentReference", "update"):
            raise PermissionDenied("You do not have permission to sign or change documents in the EHR.",
                                   code="review_not_permitted")

    def _put(self, doc: dict, version: str) -> dict:
        try:
            return self.client.update(doc, if_match=f'W/"{version}"')
        except FhirError as exc:
            if exc.status in (409, 412):
                raise ConflictError(self.client.read("DocumentReference", doc["id"], no_cache=True)) from None
            raise

    def _record(self, doc_id: str, action: str, *, version: str | None, reason: str | None = None,
                distance: int | None = None, run_id: str | None = None, outcome: str = "0",
                patient_id: str | None = None) -> None:
        with self.maker.begin() as db:
            db.add(ReviewRecord(document_id=doc_id, run_id=run_id, reviewer=self.reviewer, action=action,
                                reason=reason, edit_distance=distance, version=version, at=time.time()))
        self.audit.record(action="U", subtype="update", outcome=outcome, user_reference=self.reviewer,
                          client_id=self.client_id, token_jti=self.jti,
                          entity_references=[f"DocumentReference/{doc_id}"], patient_id=patient_id,
                          destination=self.client.base_url)

    def approve(self, doc_id: str, seen_version: str, *, acknowledged_unsupported: bool,
                unsupported: int) -> ReviewResult:
        self._require_write()
        if unsupported and not acknowledged_unsupported:
            raise AppError("This draft has sentences without a verified source; review them first.",
                           code="unsupported_not_acknowledged", http_status=400)
        doc = self.client.read("DocumentReference", doc_id, no_cache=True)
        doc["docStatus"] = "final"
        doc["authenticator"] = {"reference": self.reviewer}
        updated = self._put(doc, seen_version)
        version = (updated.get("meta") or {}).get("versionId")
        target = f"DocumentReference/{doc_id}" + (f"/_history/{version}" if version else "")
        prov = create_verification_provenance(
            target_reference=target, recorded=datetime.now(UTC).replace(microsecond=0),
            verifier_reference=self.reviewer)
        created = self.client.create(prov.model_dump(mode="json", exclude_none=True, by_alias=True))
        patient = ((doc.get("subject") or {}).get("reference") or "").split("/")[-1] or None
        self._record(doc_id, "approve", version=version, patient_id=patient)
        return ReviewResult(document_reference=target, provenance=f"Provenance/{created['id']}")

    def edit(self, doc_id: str, seen_version: str, new_text: str) -> ReviewResult:
        self._require_write()
        if not new_text.strip():
            raise AppError("The edited text is empty.", code="empty_edit", http_status=400)
        doc = self.client.read("DocumentReference", doc_id, no_cache=True)
        old = draft_text(doc)
        attachment = doc["content"][0]["attachment"]
        raw = new_text.encode("utf-8")
        attachment["data"] = base64.b64encode(raw).decode("ascii")
        attachment["size"] = len(raw)
        attachment.pop("hash", None)
        updated = self._put(doc, seen_version)
        version = (updated.get("meta") or {}).get("versionId")
        patient = ((doc.get("subject") or {}).get("reference") or "").split("/")[-1] or None
        self._record(doc_id, "edit", version=version, distance=edit_distance(old, new_text), patient_id=patient)
        return ReviewResult(document_reference=f"DocumentReference/{doc_id}/_history/{version}")

    def reject(self, doc_id: str, seen_version: str, reason: str) -> ReviewResult:
        self._require_write()
        if reason not in REJECT_REASONS:
            raise AppError(f"Choose a reason: {', '.join(REJECT_REASONS)}.", code="reason_missing",
                           http_status=400)
        doc = self.client.read("DocumentReference", doc_id, no_cache=True)
        doc["status"] = "entered-in-error"
        updated = self._put(doc, seen_version)
        version = (updated.get("meta") or {}).get("versionId")
        patient = ((doc.get("subject") or {}).get("reference") or "").split("/")[-1] or None
        self._record(doc_id, "reject", version=version, reason=reason, patient_id=patient)
        return ReviewResult(document_reference=f"DocumentReference/{doc_id}/_history/{version}")

    def history(self, doc_id: str) -> list[dict]:
        with self.maker() as db:
            rows = db.scalars(select(ReviewRecord).where(ReviewRecord.document_id == doc_id)
                              .order_by(ReviewRecord.id)).all()
            return [{"action": r.action, "reason": r.reason, "edit_distance": r.edit_distance,
                     "version": r.version, "reviewer": r.reviewer} for r in rows]
