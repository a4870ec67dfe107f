"""Read-only view models for the clinician's pages: plain words, no raw resource ids.

Nothing here writes: it reads the draft, its write result, the opened chart and the
database (through ``Services``) and shapes them for the templates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import or_, select

from app.agent.tasks import TASKS
from app.logging import opaque

# What each write-back state means for the clinician, in plain words.
WRITEBACK_WORDS = {
    "written": "In the EHR as a preliminary (unsigned) document, waiting for your review.",
    "queued": "Waiting to be written to the EHR: the EHR did not answer; the app retries on its own.",
    "held_until_approval": "Held in the app: this EHR accepts only signed documents, so nothing is written "
                           "until you approve.",
    "disabled": "Not written to the EHR: write-back is off for this session.",
    "not_written": "Not written to the EHR.",
    "not_requested": "Not written to the EHR (not requested).",
    "rejected": "Rejected: nothing of it stays in use in the EHR.",
    "cancelled": "Cancelled before anything was written.",
}

GRADE_BASIS_WORDS = {"explicit": "written in the note", "inferred": "inferred from the documented findings"}


def task_title(task: str) -> str:
    spec = TASKS.get(task)
    return spec.title if spec else task.replace("_", " ")


def when(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def document_url(fhir_base: str | None, reference: str | None) -> str | None:
    """The document on the FHIR server (current version), from ``DocumentReference/<id>/...``."""
    parts = (reference or "").split("/")
    if not fhir_base or len(parts) < 2 or parts[0] != "DocumentReference" or not parts[1]:
        return None
    return f"{fhir_base.rstrip('/')}/DocumentReference/{parts[1]}"


def draft_state(result: dict | None) -> str:
    """One of preliminary, approved, rejected, held, queued, failed, not written, cancelled."""
    result = result or {}
    review = result.get("review") or {}
    if review.get("action") == "approve":
        return "approved"
    if review.get("action") == "reject" or result.get("state") == "rejected":
        return "rejected"
    return {"written": "preliminary", "held_until_approval": "held", "queued": "queued",
            "failed": "failed", "cancelled": "cancelled"}.get(result.get("state") or "", "not written")


def writeback(result: dict | None, fhir_base: str | None) -> dict[str, Any]:
    """Plain-language write-back state and a link to the document where there is one."""
    result = result or {}
    state = draft_state(result)
    words = WRITEBACK_WORDS.get(result.get("state") or "", "Not written to the EHR.")
    if state == "approved":
        words = "Approved: the document in the EHR is final and signed by you."
    elif state == "rejected" and result.get("state") == "written":
        words = "Rejected: the document in the EHR is marked entered in error (kept, not in use)."
    elif state == "rejected":
        words = "Rejected: nothing was written to the EHR."
    ref = (result.get("written") or {}).get("document_reference")
    return {"state": state, "words": words, "reason": result.get("reason"),
            "url": document_url(fhir_base, ref), "version": _version(ref)}


def _version(ref: str | None) -> str | None:
    parts = (ref or "").split("/")
    return parts[3] if len(parts) > 3 else None


# --- the draft: sentences, their citations, and the cited notes inline -------------------------

@dataclass
class Segment:
    text: str
    cites: list[int] = field(default_factory=list)  # citation numbers covering this piece
    anchors: list[int] = field(default_factory=list)  # citations that start here (element ids)


@dataclass
class SourcePanel:
    number: int
    document: str
    date: str | None
    kind: str | None
    segments: list[Segment]


def _segments(text: str, spans: list[tuple[int, int, int]]) -> list[Segment]:
    """Cut ``text`` at every span edge; each piece lists the citations covering it."""
    edges = sorted({0, len(text), *[max(0, min(len(text), e)) for s, t, _ in spans for e in (s, t)]})
    starts: dict[int, list[int]] = {}
    for s, _t, n in spans:
        starts.setdefault(max(0, min(len(text), s)), []).append(n)
    out: list[Segment] = []
    for a, b in zip(edges, edges[1:], strict=False):
        if a == b:
            continue
        cover = [n for s, t, n in spans if s <= a and b <= t]
        out.append(Segment(text[a:b], cover, starts.pop(a, []) if cover else []))
    for ns in starts.values():  # empty spans: anchors of their own at their place
        out.append(Segment("", list(ns), list(ns)))
    return out


def draft_view(draft: Any, chart: Any) -> dict[str, Any]:
    """Sentences with numbered citations and one panel per cited note with every cited span."""
    texts = getattr(chart, "texts", {}) or {}
    documents = getattr(chart, "documents", {}) or {}
    numbered: list[dict[str, Any]] = []
    spans: dict[str, list[tuple[int, int, int]]] = {}
    n = 0
    for i, s in enumerate(draft.sentences):
        cites = []
        for c in s.citations:
            n += 1
            shown = c.document in texts
            cites.append({"n": n, "document": c.document, "start": c.start, "end": c.end, "shown": shown})
            if shown:
                spans.setdefault(c.document, []).append((c.start, c.end, n))
        numbered.append({"index": i, "number": i + 1, "text": s.text, "supported": s.supported,
                         "citations": cites})
    panels = []
    for k, (doc, doc_spans) in enumerate(sorted(spans.items())):
        meta = documents.get(doc)
        panels.append(SourcePanel(number=k + 1, document=doc, date=(meta.date or "")[:10] if meta else None,
                                  kind=_kind(meta), segments=_segments(texts[doc], doc_spans)))
    panel_of = {p.document: p.number for p in panels}
    for s in numbered:
        for c in s["citations"]:
            c["panel"] = panel_of.get(c["document"])
    progress = getattr(chart, "progress", None)
    loading = progress is not None and getattr(progress, "state", "ready") not in ("ready", "failed")
    return {"sentences": numbered, "panels": panels, "citations": n, "loading": loading}


NOTE_KINDS = {"11506-3": "Progress note", "34117-2": "History and physical", "18842-5": "Discharge summary",
              "11488-4": "Consult note", "28570-0": "Procedure note", "34109-9": "Note",
              "11502-2": "Laboratory report", "18748-4": "Imaging report", "60591-5": "Patient summary",
              "34111-5": "Emergency department note", "57133-1": "Referral note", "11504-8": "Surgical operation note"}


def _kind(meta: Any) -> str | None:
    code = getattr(meta, "type_code", None)
    return NOTE_KINDS.get(code or "", code) if code else None


def irae_rows(draft: Any, sentence_citations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The irAE table: organ, term, grade, grade basis, attribution, onset, status, evidence numbers."""
    if not draft.findings:
        return []
    by_index = {s["index"]: s["citations"] for s in sentence_citations}
    rows = []
    for ev in draft.findings.get("events", []):
        cites = [c for i in ev.get("sentence_indexes", []) for c in by_index.get(i, [])]
        seen, evidence = set(), []
        for c in cites:
            if c["document"] not in seen:
                seen.add(c["document"])
                evidence.append(c)
        rows.append({"organ": ev.get("organ"), "term": ev.get("term"), "grade": ev.get("ctcae_grade"),
                     "basis": GRADE_BASIS_WORDS.get(ev.get("grade_basis") or "", ev.get("grade_basis")),
                     "grade_reason": ev.get("grade_reason"), "attribution": ev.get("attribution"),
                     "onset": ev.get("onset"), "status": ev.get("status"), "evidence": evidence})
    return rows


def review_effects(result: dict | None) -> dict[str, str]:
    """What each review action will do in the EHR, said before it is done."""
    held = (result or {}).get("state") == "held_until_approval"
    if held:
        return {
            "approve": "Writes the document to the EHR now as final, signed by you, with a record that "
                       "you verified it.",
            "edit": "Changes the text held in the app; nothing is sent to the EHR until you approve.",
            "reject": "Discards the draft: nothing is written to the EHR.",
        }
    return {
        "approve": "Makes the preliminary document in the EHR final, signed by you, and records you as "
                   "its verifier.",
        "edit": "Saves your text as a new version of the preliminary document in the EHR; it stays "
                "unsigned until you approve.",
        "reject": "Marks the document in the EHR as entered in error with your reason; it is kept but no "
                  "longer in use.",
    }


# --- the chart: notes list and the patient's drafts across sessions ----------------------------

def notes_list(chart: Any, drafts: list[Any], kind: str | None, since: str | None,
               until: str | None) -> dict[str, Any]:
    """Permitted notes (newest first) filtered by type and date, with their use in drafts."""
    used: dict[str, int] = {}
    for d in drafts:
        for doc in {c.document for s in d.sentences for c in s.citations}:
            used[doc] = used.get(doc, 0) + 1
    rows, kinds = [], set()
    for doc, meta in (getattr(chart, "documents", {}) or {}).items():
        k = _kind(meta) or "Unknown type"
        kinds.add(k)
        date = (meta.date or "")[:10]
        if kind and k != kind:
            continue
        if since and (not date or date < since):
            continue
        if until and (not date or date > until):
            continue
        rows.append({"document": doc, "kind": k, "date": date or "undated", "used": used.get(doc, 0)})
    rows.sort(key=lambda r: (r["date"] != "undated", r["date"]), reverse=True)  # undated last
    return {"rows": rows, "kinds": sorted(kinds), "total": len(getattr(chart, "documents", {}) or {})}


def denied_counts(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Notes withheld by the access rules, by reason (counts only, never content)."""
    return sorted((k.split(":", 1)[1].replace("_", " "), v) for k, v in counts.items()
                  if k.startswith("denied:") and v)


def patient_drafts(services: Any, patient_id: str | None, session_id: str) -> list[dict[str, Any]]:
    """This patient's drafts from the database, from every session, newest first, with their state and
    who reviewed them when. This session's drafts link to their page; a draft of a session that has
    ended can be reopened here (``drafts.reopen`` checks it); one of another open session cannot."""
    from app.store.models import DraftRecord, ReviewRecord

    if not patient_id:
        return []
    key = opaque(patient_id)
    out = []
    with services.maker() as db:
        recs = db.scalars(select(DraftRecord).where(DraftRecord.patient_hash == key)
                          .order_by(DraftRecord.created.desc()).limit(100)).all()
        for r in recs:
            result = services.drafts.result(r.run_id) or {}
            if not result:
                held = services.outbox.get(r.run_id) or {}
                if held.get("state"):
                    result = {"state": {"sent": "written", "pending": "queued"}.get(held["state"], held["state"])}
            last = db.scalars(select(ReviewRecord).where(_reviews_where(r.run_id, result))
                              .order_by(ReviewRecord.at.desc()).limit(1)).first()
            out.append({"run_id": r.run_id, "title": task_title(r.task), "created": when(r.created),
                        "state": {"approve": "approved", "reject": "rejected"}.get(
                            last.action if last else "", draft_state(result)),
                        "this_session": r.session_id == session_id,
                        "reopenable": r.session_id != session_id
                        and not services.web_sessions.live(r.session_id),
                        "reviewer": last.reviewer if last else None,
                        "reviewed": when(last.at) if last else None,
                        "review_action": last.action if last else None})
    return out


def _doc_id(result: dict | None) -> str | None:
    parts = ((result or {}).get("written") or {}).get("document_reference", "") or ""
    bits = parts.split("/")
    return bits[1] if len(bits) > 1 and bits[0] == "DocumentReference" else None


def _reviews_where(run_id: str, result: dict | None) -> Any:
    from app.store.models import ReviewRecord

    doc = _doc_id(result)  # a written draft's reviews are recorded by its document id
    return or_(ReviewRecord.run_id == run_id, ReviewRecord.document_id == doc) if doc \
        else ReviewRecord.run_id == run_id


def review_log(services: Any, run_id: str, result: dict | None) -> list[dict[str, Any]]:
    """Who did what to this draft, when (from the review records in the database)."""
    from app.store.models import ReviewRecord

    words = {"approve": "Approved", "edit": "Edited", "reject": "Rejected"}
    with services.maker() as db:
        rows = db.scalars(select(ReviewRecord).where(_reviews_where(run_id, result))
                          .order_by(ReviewRecord.at)).all()
        return [{"action": words.get(r.action, r.action), "reviewer": r.reviewer, "at": when(r.at),
                 "reason": (r.reason or "").replace("_", " ") or None, "version": r.version} for r in rows]
