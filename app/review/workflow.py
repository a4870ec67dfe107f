"""Clinician review of AI drafts: approve, edit, reject (../shared/STANDARDS.md, DocumentReference).

- Approve: PUT ``docStatus=final`` with ``If-Match`` of the version the reviewer
  saw, ``authenticator`` = the clinician, then a Provenance with the clinician
  as verifier. A 412 means someone changed the draft: the current version is
  reloaded and the caller shows what changed.
- Edit: the new text becomes a new version (still preliminary); the edit
  distance to the previous text is recorded (it feeds the override rate).
- Reject: ``status=entered-in-error`` and a review Provenance (activity
  NULLIFY) whose reason is the coded reason; never free text on the server.
- Held drafts (Oracle Health accepts no preliminary documents): they live in
  the outbox; approve writes them ``docStatus=final`` with their Provenance
  and the verifier Provenance, edit changes the text there, reject retires
  them without anything reaching the EHR.
Only a user whose grants allow DocumentReference update may approve, edit or
reject; a draft with unsupported sentences needs an explicit acknowledgement.
Every action is in the audit trail (update, plus the Provenance create).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from app.errors import AppError, FhirError, PermissionDenied, UpstreamError
from app.fhir.client import FhirClient
from app.fhir.vendors import ServerProfile
from app.smart.scopes import Grants
from app.store.models import ReviewRecord  # the model lives in the store (no import cycle)
from app.writeback import outbox as ob
from app.writeback.builders import (
    IDENTIFIER_SYSTEM,
    create_rejection_provenance,
    create_verification_provenance,
)
from app.writeback.outbox import Outbox
from app.writeback.submit import edit_held, release_held, submit

REJECT_REASONS = ("inaccurate", "unsupported_claims", "not_clinically_useful", "wrong_patient", "other")


class ConflictError(AppError):
    """The draft changed since the reviewer loaded it (HTTP 412).

    ``current`` is the reloaded document; ``changes`` names what differs from
    the version the reviewer saw (element names and codes only, no text).
    """

    code = "review_conflict"
    http_status = 409

    def __init__(self, current: dict, changes: dict | None = None) -> None:
        super().__init__("The draft was changed by someone else; review the current version.")
        self.current = current
        self.changes = changes or {}


def describe_changes(seen: dict | None, current: dict) -> dict:
    """What changed between two versions of a draft: versions, status codes, text changed or not."""
    seen = seen or {}
    out: dict = {"seen_version": (seen.get("meta") or {}).get("versionId"),
                 "current_version": (current.get("meta") or {}).get("versionId")}
    for key in ("status", "docStatus"):
        if seen.get(key) != current.get(key):
            out[key] = {"seen": seen.get(key), "current": current.get(key)}
    if draft_text(seen) != draft_text(current):
        out["text_changed"] = True
    if seen.get("authenticator") != current.get("authenticator"):
        out["authenticator"] = (current.get("authenticator") or {}).get("reference")
    return out


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
                 reviewer: str, client_id: str, token_jti: str | None, *,
                 outbox: Outbox | None = None, profile: ServerProfile | None = None) -> None:
        self.client = client
        self.maker = maker
        self.audit = audit
        self.grants = grants
        self.reviewer = reviewer
        self.client_id = client_id
        self.jti = token_jti
        self.outbox = outbox
        self.profile = profile

    def _now(self) -> datetime:
        return datetime.now(UTC).replace(microsecond=0)

    def _create_provenance(self, prov, patient: str | None) -> str:  # type: ignore[no-untyped-def]
        try:
            created = self.client.create(prov.model_dump(mode="json", exclude_none=True, by_alias=True))
        except UpstreamError:
            self._audit("C", "create", "8", [], patient)
            raise
        ref = f"Provenance/{created['id']}"
        self._audit("C", "create", "0", [ref], patient)
        return ref

    def _audit(self, action: str, subtype: str, outcome: str, refs: list[str],
               patient: str | None) -> None:
        if getattr(self.client, "trail", None) is not None:
            return  # an AuditedFhirClient already recorded this interaction, once (app.audit.fhir)
        self.audit.record(action=action, subtype=subtype, outcome=outcome, user_reference=self.reviewer,
                          client_id=self.client_id, token_jti=self.jti, entity_references=refs,
                          patient_id=patient, destination=self.client.base_url)

    def _require_write(self) -> None:
        if not self.grants.allows("DocumentReference", "update"):
            raise PermissionDenied("You do not have permission to sign or change documents in the EHR.",
                                   code="review_not_permitted")

    def _read(self, doc_id: str) -> dict:
        doc = self.client.read("DocumentReference", doc_id, no_cache=True)
        patient = ((doc.get("subject") or {}).get("reference") or "").split("/")[-1] or None
        self._audit("R", "read", "0", [f"DocumentReference/{doc_id}"], patient)
        return doc

    def _put(self, doc: dict, version: str) -> dict:
        try:
            return self.client.update(doc, if_match=f'W/"{version}"')
        except FhirError as exc:
            if exc.status in (409, 412):
                current = self.client.read("DocumentReference", doc["id"], no_cache=True)
                try:
                    seen = self.client.vread("DocumentReference", doc["id"], version)
                except UpstreamError:
                    seen = None
                raise ConflictError(current, describe_changes(seen, current)) from None
            raise

    def _record(self, doc_id: str, action: str, *, version: str | None, reason: str | None = None,
                distance: int | None = None, run_id: str | None = None, outcome: str = "0",
                patient_id: str | None = None) -> None:
        with self.maker.begin() as db:
            db.add(ReviewRecord(document_id=doc_id, run_id=run_id, reviewer=self.reviewer, action=action,
                                reason=reason, edit_distance=distance, version=version, at=time.time()))
        self._audit("U", "update", outcome, [f"DocumentReference/{doc_id}"], patient_id)

    def approve(self, doc_id: str, seen_version: str, *, acknowledged_unsupported: bool,
                unsupported: int) -> ReviewResult:
        self._require_write()
        if unsupported and not acknowledged_unsupported:
            raise AppError("This draft has sentences without a verified source; review them first.",
                           code="unsupported_not_acknowledged", http_status=400)
        doc = self._read(doc_id)
        doc["docStatus"] = "final"
        doc["authenticator"] = {"reference": self.reviewer}
        updated = self._put(doc, seen_version)
        version = (updated.get("meta") or {}).get("versionId")
        target = f"DocumentReference/{doc_id}" + (f"/_history/{version}" if version else "")
        patient = ((doc.get("subject") or {}).get("reference") or "").split("/")[-1] or None
        self._record(doc_id, "approve", version=version, patient_id=patient)
        prov = self._create_provenance(create_verification_provenance(
            target_reference=target, recorded=self._now(), verifier_reference=self.reviewer), patient)
        return ReviewResult(document_reference=target, provenance=prov)

    def edit(self, doc_id: str, seen_version: str, new_text: str) -> ReviewResult:
        self._require_write()
        if not new_text.strip():
            raise AppError("The edited text is empty.", code="empty_edit", http_status=400)
        doc = self._read(doc_id)
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
        doc = self._read(doc_id)
        doc["status"] = "entered-in-error"
        updated = self._put(doc, seen_version)
        version = (updated.get("meta") or {}).get("versionId")
        patient = ((doc.get("subject") or {}).get("reference") or "").split("/")[-1] or None
        self._record(doc_id, "reject", version=version, reason=reason, patient_id=patient)
        target = f"DocumentReference/{doc_id}/_history/{version}"
        prov = self._create_provenance(create_rejection_provenance(
            target_reference=target, recorded=self._now(), reviewer_reference=self.reviewer,
            reason_code=reason), patient)
        return ReviewResult(document_reference=target, provenance=prov)

    # -- drafts held in the app until approval (Oracle Health) ------------------------------
    def _held(self, run_id: str) -> dict:
        if self.outbox is None or self.profile is None:
            raise AppError("Held drafts need the outbox.", code="outbox_missing", http_status=500)
        item = self.outbox.get(run_id)
        if item is None or item["state"] != ob.HELD:
            raise AppError("This draft is not waiting for approval in the app.", code="not_held",
                           http_status=409)
        return self.outbox.payload(run_id) or {}

    def approve_held(self, run_id: str, *, acknowledged_unsupported: bool, unsupported: int,
                     text: str | None = None) -> ReviewResult:
        """Write a held draft as final with its Provenance and the verifier Provenance."""
        self._require_write()
        if unsupported and not acknowledged_unsupported:
            raise AppError("This draft has sentences without a verified source; review them first.",
                           code="unsupported_not_acknowledged", http_status=400)
        payload = self._held(run_id)
        patient = payload["spec"]["patient_id"]
        release_held(self.outbox, run_id, reviewer=self.reviewer, at=self._now(), text=text)  # type: ignore[arg-type]
        try:
            written = submit(self.client, self.outbox, self.profile, run_id)  # type: ignore[arg-type]
        except AppError:
            self._audit("C", "create", "8", [], patient)
            raise  # the approval is kept in the outbox and retried
        doc_ref = str(written["document_reference"])
        self._audit("C", "create", "0", [w for w in written.values() if w], patient)
        doc_id = doc_ref.split("/")[1]
        with self.maker.begin() as db:
            db.add(ReviewRecord(document_id=doc_id, run_id=run_id, reviewer=self.reviewer,
                                action="approve", version=doc_ref.rsplit("/", 1)[-1], at=time.time()))
        return ReviewResult(document_reference=doc_ref, provenance=written.get("verification"))

    def edit_held(self, run_id: str, new_text: str) -> int:
        """Edit a held draft in the app; returns the edit distance (recorded)."""
        self._require_write()
        if not new_text.strip():
            raise AppError("The edited text is empty.", code="empty_edit", http_status=400)
        self._held(run_id)
        old = edit_held(self.outbox, run_id, new_text)  # type: ignore[arg-type]
        distance = edit_distance(old, new_text)
        with self.maker.begin() as db:
            db.add(ReviewRecord(document_id=f"held:{run_id}", run_id=run_id, reviewer=self.reviewer,
                                action="edit", edit_distance=distance, at=time.time()))
        return distance

    def reject_held(self, run_id: str, reason: str) -> None:
        """Retire a held draft: nothing was and nothing will be written to the EHR."""
        self._require_write()
        if reason not in REJECT_REASONS:
            raise AppError(f"Choose a reason: {', '.join(REJECT_REASONS)}.", code="reason_missing",
                           http_status=400)
        self._held(run_id)
        self.outbox.set_state(run_id, ob.REJECTED)  # type: ignore[union-attr]
        with self.maker.begin() as db:
            db.add(ReviewRecord(document_id=f"held:{run_id}", run_id=run_id, reviewer=self.reviewer,
                                action="reject", reason=reason, at=time.time()))

    # -- the review queue ----------------------------------------------------------------------
    def queue(self, *, patient_id: str | None = None, author: str | None = None) -> list[dict]:
        """AI drafts awaiting review (preliminary, current), per patient and/or per clinician."""
        params: dict[str, str] = {"identifier": f"{IDENTIFIER_SYSTEM}|"}
        if patient_id:
            params["patient"] = f"Patient/{patient_id}"
        if author:
            params["author"] = author
        out = []
        for doc in self.client.search("DocumentReference", params, no_cache=True):
            if doc.get("docStatus") != "preliminary" or doc.get("status") != "current":
                continue
            run = next((i.get("value") for i in doc.get("identifier") or []
                        if i.get("system") == IDENTIFIER_SYSTEM), None)
            out.append({"document_reference": f"DocumentReference/{doc['id']}",
                        "version": (doc.get("meta") or {}).get("versionId"), "run_id": run,
                        "patient": (doc.get("subject") or {}).get("reference"),
                        "author": [a.get("reference") for a in doc.get("author") or []],
                        "date": doc.get("date")})
        self._audit("E", "search-type", "0", [], patient_id)
        return out

    def history(self, doc_id: str) -> list[dict]:
        with self.maker() as db:
            rows = db.scalars(select(ReviewRecord).where(ReviewRecord.document_id == doc_id)
                              .order_by(ReviewRecord.id)).all()
            return [{"action": r.action, "reason": r.reason, "edit_distance": r.edit_distance,
                     "version": r.version, "reviewer": r.reviewer} for r in rows]
