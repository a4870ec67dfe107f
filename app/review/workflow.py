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

A review is two writes (the document update, then its Provenance), so it can fail half way:
the review Provenance is a conditional create (``If-None-Exist`` on a write-step tag keyed by the
document version), safe to retry, and when the update reached the EHR but the Provenance did not,
the same reviewer repeating the same action completes it (``_complete``) instead of a 409; once
the Provenance is there, a repeat is the usual 409.

Review is a state machine on the server (``transition``): preliminary →
(edit)* → approved | rejected, and nothing after a final decision except what
the EHR itself does. The state is read from the EHR's document (``review_state``)
right before each action; a refused transition is a 409 ``review_state_conflict``.
Ids and versions must match the FHIR id grammar before any use (a URL path, the
audit trail); edits are capped at ``MAX_EDIT_CHARS`` (413) and their distance is
computed by rapidfuzz (C, cost bounded by the caps).
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from rapidfuzz.distance import Levenshtein
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from app.errors import AppError, FhirError, PermissionDenied, TemporaryUpstreamError, UpstreamError
from app.fhir.client import FhirClient
from app.fhir.vendors import ServerProfile
from app.smart.scopes import Grants
from app.store.models import ReviewRecord  # the model lives in the store (no import cycle)
from app.writeback import outbox as ob
from app.writeback.builders import (
    IDENTIFIER_SYSTEM,
    REVIEW_TAG_SYSTEM,
    create_rejection_provenance,
    create_verification_provenance,
)
from app.writeback.outbox import Outbox
from app.writeback.submit import edit_held, release_held, search_before_create, submit, write_tag

REJECT_REASONS = ("inaccurate", "unsupported_claims", "not_clinically_useful", "wrong_patient", "other")
MAX_EDIT_CHARS = 50_000  # a long note is ~20k characters; distance cost is bounded by cap x cap
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 id (and versionId) grammar

# -- the review state machine (pure) ---------------------------------------------------------
PRELIMINARY, APPROVED, REJECTED = "preliminary", "approved", "rejected"
ACTIONS = ("approve", "edit", "reject")
TRANSITIONS: dict[tuple[str, str], str] = {
    (PRELIMINARY, "edit"): PRELIMINARY,
    (PRELIMINARY, "approve"): APPROVED,
    (PRELIMINARY, "reject"): REJECTED,
}


class ReviewConflict(AppError):
    """The action is not allowed in the draft's current review state (HTTP 409)."""

    code = "review_state_conflict"
    http_status = 409


def transition(current: str, action: str) -> str:
    """The review state after ``action``; raises ``ReviewConflict`` when it is not allowed."""
    if action not in ACTIONS:
        raise AppError("Unknown review action.", code="bad_action", http_status=400)
    new = TRANSITIONS.get((current, action))
    if new is None:
        if current in (APPROVED, REJECTED):
            raise ReviewConflict(f"This draft was already {current}; it cannot be {_PAST[action]} "
                                 "any more. Changes after a final decision are made in the EHR.")
        raise ReviewConflict(f"This draft cannot be {_PAST[action]} in its current state "
                             f"({current}).")
    return new


_PAST = {"approve": "approved", "edit": "edited", "reject": "rejected"}


def review_state(doc: dict) -> str:
    """The review state of an AI draft as the EHR holds it."""
    if doc.get("status") == "entered-in-error":
        return REJECTED
    if doc.get("docStatus") in ("final", "amended"):
        return APPROVED
    if doc.get("status") == "current" and doc.get("docStatus") in (None, "preliminary"):
        return PRELIMINARY
    return "unknown"


def check_fhir_id(value: object, what: str = "version") -> str:
    """``value`` if it matches the FHIR id grammar; else a 400 that does not echo it."""
    if not isinstance(value, str) or not FHIR_ID.fullmatch(value):
        raise AppError(f"The {what} is not a FHIR id (letters, digits, '-' and '.', at most 64).",
                       code=f"bad_{what.replace(' ', '_')}", http_status=400)
    return value


def check_edit(text: object) -> str:
    """The edited text: a non-empty string of at most ``MAX_EDIT_CHARS`` characters."""
    if not isinstance(text, str):
        raise AppError("The edited text must be a string.", code="bad_edit", http_status=400)
    if len(text) > MAX_EDIT_CHARS:
        raise AppError(f"The edited text is too long (at most {MAX_EDIT_CHARS} characters).",
                       code="edit_too_large", http_status=413)
    if not text.strip():
        raise AppError("The edited text is empty.", code="empty_edit", http_status=400)
    return text


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
    """Levenshtein distance (rapidfuzz, bit-parallel C; the edit cap bounds its cost)."""
    return int(Levenshtein.distance(a, b))


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

    def _create_provenance(self, prov, patient: str | None, key: str) -> str:  # type: ignore[no-untyped-def]
        """Conditional create keyed by ``key`` (document version and action): a retried request, or
        a repeat after a lost answer, finds the one already there."""
        body = prov.model_dump(mode="json", exclude_none=True, by_alias=True)
        try:
            created = self.client.create(body, if_none_exist=write_tag(body, key, "review"))
        except UpstreamError:
            self._audit("C", "create", "8", [], patient)
            raise TemporaryUpstreamError(
                "The EHR saved your review but not its review record (Provenance). Do the same "
                "action again to finish it.", code="review_incomplete") from None
        ref = f"Provenance/{created['id']}"
        self._audit("C", "create", "0", [ref], patient)
        return ref

    def _review_provenance(self, action: str, doc_id: str, version: str | None, target: str,
                           patient: str | None, reason: str | None = None) -> str:
        """The verifier (approve) or rejection Provenance of one document version, created once."""
        if action == "approve":
            model = create_verification_provenance(target_reference=target, recorded=self._now(),
                                                   verifier_reference=self.reviewer)
        else:
            model = create_rejection_provenance(target_reference=target, recorded=self._now(),
                                                reviewer_reference=self.reviewer, reason_code=reason or "other")
        return self._create_provenance(model, patient, key=f"{doc_id}.{version}.{action}")

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

    def _read(self, doc_id: str, action: str | None = None, seen_version: str | None = None) -> dict:
        """The draft as the EHR holds it now; with ``action``, refused unless its state allows it.

        When the EHR's version is not the one the reviewer saw, the action is refused as a
        409 ``review_conflict`` saying what changed (without relying on the EHR's If-Match).
        """
        check_fhir_id(doc_id, "document id")
        doc = self.client.read("DocumentReference", doc_id, no_cache=True)
        patient = ((doc.get("subject") or {}).get("reference") or "").split("/")[-1] or None
        self._audit("R", "read", "0", [f"DocumentReference/{doc_id}"], patient)
        current = (doc.get("meta") or {}).get("versionId")
        if action is not None and seen_version is not None and current not in (None, seen_version):
            try:
                seen = self.client.vread("DocumentReference", doc_id, check_fhir_id(seen_version))
            except UpstreamError:
                seen = None
            raise ConflictError(doc, describe_changes(seen, doc))
        if action is not None:
            transition(review_state(doc), action)
        return doc

    def _put(self, doc: dict, version: str) -> dict:
        check_fhir_id(version)
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
        check_fhir_id(seen_version)
        doc, done = self._read_or_complete(doc_id, "approve", seen_version)
        if done is not None:
            return done
        doc["docStatus"] = "final"
        doc["authenticator"] = {"reference": self.reviewer}
        updated = self._put(doc, seen_version)
        version = (updated.get("meta") or {}).get("versionId")
        target = f"DocumentReference/{doc_id}" + (f"/_history/{version}" if version else "")
        patient = ((doc.get("subject") or {}).get("reference") or "").split("/")[-1] or None
        self._record(doc_id, "approve", version=version, patient_id=patient)
        prov = self._review_provenance("approve", doc_id, version, target, patient)
        return ReviewResult(document_reference=target, provenance=prov)

    def edit(self, doc_id: str, seen_version: str, new_text: str) -> ReviewResult:
        self._require_write()
        check_edit(new_text)
        check_fhir_id(seen_version)
        doc = self._read(doc_id, "edit", seen_version)
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
        check_fhir_id(seen_version)
        doc, done = self._read_or_complete(doc_id, "reject", seen_version)
        if done is not None:
            return done
        doc["status"] = "entered-in-error"
        updated = self._put(doc, seen_version)
        version = (updated.get("meta") or {}).get("versionId")
        patient = ((doc.get("subject") or {}).get("reference") or "").split("/")[-1] or None
        self._record(doc_id, "reject", version=version, reason=reason, patient_id=patient)
        target = f"DocumentReference/{doc_id}/_history/{version}"
        prov = self._review_provenance("reject", doc_id, version, target, patient, reason)
        return ReviewResult(document_reference=target, provenance=prov)

    def _read_or_complete(self, doc_id: str, action: str, seen_version: str,
                          ) -> tuple[dict, ReviewResult | None]:
        """The document to act on; or, when the action is refused because this reviewer already
        did it and only its Provenance is missing, the finished review (``_complete``)."""
        try:
            return self._read(doc_id, action, seen_version), None
        except (ReviewConflict, ConflictError):
            done = self._complete(doc_id, action)
            if done is None:
                raise
            return {}, done

    def _complete(self, doc_id: str, action: str) -> ReviewResult | None:
        """Finish this reviewer's own ``action`` whose document update reached the EHR but whose
        review Provenance did not (the request failed half way). None when there is nothing to
        finish: the last review is someone else's or another action, the document moved on, or
        the Provenance is there (then a repeat is the usual 409)."""
        with self.maker() as db:
            last = db.scalars(select(ReviewRecord).where(ReviewRecord.document_id == doc_id)
                              .order_by(ReviewRecord.at.desc()).limit(1)).first()
        if last is None or last.action != action or last.reviewer != self.reviewer or not last.version:
            return None
        doc = self.client.read("DocumentReference", doc_id, no_cache=True)
        if (doc.get("meta") or {}).get("versionId") != last.version or \
                review_state(doc) != {"approve": APPROVED, "reject": REJECTED}[action]:
            return None
        target = f"DocumentReference/{doc_id}/_history/{last.version}"
        tag = {"approve": "approved", "reject": "rejected"}[action]
        found = search_before_create(self.client, "Provenance", {"target": f"DocumentReference/{doc_id}",
                                                                 "_tag": f"{REVIEW_TAG_SYSTEM}|{tag}"})
        if found is None:
            return None  # may not read Provenance here: whether it is missing cannot be known
        if any(t.get("reference") == target for prov in found for t in prov.get("target") or []):
            return None  # complete already
        patient = ((doc.get("subject") or {}).get("reference") or "").split("/")[-1] or None
        prov_ref = self._review_provenance(action, doc_id, last.version, target, patient, last.reason)
        return ReviewResult(document_reference=target, provenance=prov_ref)

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
        check_edit(new_text)
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
