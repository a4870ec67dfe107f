"""Review of a written draft: approve, edit (with a diff), reject with a reason."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, redirect, render_template, request, url_for
from rapidfuzz.distance import Indel

from app.errors import AppError
from app.review.workflow import ConflictError, ReviewService, check_edit, check_fhir_id, draft_text
from app.web.bodies import ReviewRequest, parse_body
from app.web.context import actor_for, client_for, current, services

bp = Blueprint("review", __name__)


def _service(state) -> ReviewService:  # type: ignore[no-untyped-def]
    actor = actor_for(state)
    s = services()
    client = client_for(state)
    return ReviewService(client, s.maker, s.audit, actor.grants,
                         reviewer=state.user_reference or "unknown", client_id=actor.client_id,
                         token_jti=actor.token_jti, outbox=s.outbox,
                         profile=s.drafting().profile(client))


def _written(state, run_id: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    result = state.results.get(run_id) or {}
    ref = (result.get("written") or {}).get("document_reference")
    if not ref:
        raise AppError("This draft is not in the EHR, so it cannot be reviewed there yet.",
                       code="not_written", http_status=409)
    parts = ref.split("/")
    return (check_fhir_id(parts[1] if len(parts) > 1 else None, "document id"),
            check_fhir_id(parts[3] if len(parts) > 3 else "1"))


@bp.post("/drafts/<run_id>/review")
def review(run_id: str):  # type: ignore[no-untyped-def]
    state = current()
    action = request.form.get("action")
    if action == "edit":
        check_edit(request.form.get("text", ""))  # size first: before any lookup or request (413)
    draft = state.drafts.get(run_id)
    if draft is None:
        abort(404)
    if (state.results.get(run_id) or {}).get("state") == "held_until_approval":
        return _review_held_form(state, run_id, draft, action)  # Oracle: held in the app, not in the EHR
    doc_id, version = _written(state, run_id)
    svc = _service(state)
    try:
        if action == "approve":
            out = svc.approve(doc_id, version, unsupported=draft.unsupported,
                              acknowledged_unsupported=request.form.get("ack_unsupported") == "yes")
        elif action == "edit":
            out = svc.edit(doc_id, version, check_edit(request.form.get("text", "")))
        elif action == "reject":
            out = svc.reject(doc_id, version, request.form.get("reason", ""))
        else:
            raise AppError("Unknown review action.", code="bad_action", http_status=400)
    except ConflictError as exc:
        return render_template("conflict.html", state=state, draft=draft,
                               current_text=draft_text(exc.current),
                               current_status=exc.current.get("docStatus")), 409
    written = dict(state.results[run_id].get("written") or {})
    written["document_reference"] = out.document_reference
    record: dict = {"action": action, "document_reference": out.document_reference,
                    "provenance": out.provenance}
    if action == "edit":
        before = state.results[run_id].get("text") or draft.text
        after = request.form.get("text", "")
        record["diff"] = line_diff(before, after)
        state.results[run_id]["text"] = after
    if action == "reject":
        record["reason"] = request.form.get("reason", "")
    state.reviews.setdefault(run_id, []).append(record)
    final = record if action in ("approve", "reject") else state.results[run_id].get("review")
    state.results[run_id] = dict(state.results[run_id], written=written, review=final)
    return redirect(url_for("drafts.show", run_id=run_id))


def _decide_held(state, svc, run_id: str, draft, result: dict, record: dict, action: str | None, *,  # type: ignore[no-untyped-def]
                 ack: bool, reason: str) -> None:
    """Approve or reject a held draft (the page and the JSON API alike): the service call, then
    the write result the page shows."""
    if action == "approve":
        out = svc.approve_held(run_id, unsupported=draft.unsupported, acknowledged_unsupported=ack)
        record.update(document_reference=out.document_reference, provenance=out.provenance)
        written = services().outbox.get(run_id)["written"]
        state.results[run_id] = dict(result, state="written", written=written, review=record)
    elif action == "reject":
        svc.reject_held(run_id, reason)
        record["reason"] = reason
        state.results[run_id] = dict(result, state="rejected", review=record)
    else:
        raise AppError("Unknown review action.", code="bad_action", http_status=400)


def _review_held_form(state, run_id: str, draft, action: str | None):  # type: ignore[no-untyped-def]
    """The page's review of a held draft: the same service calls as the JSON API's held branch."""
    svc = _service(state)
    result = state.results.get(run_id) or {}
    record: dict = {"action": action}
    if action == "edit":
        text = check_edit(request.form.get("text", ""))
        record["edit_distance"] = svc.edit_held(run_id, text)
        record["diff"] = line_diff(result.get("text") or draft.text, text)
        state.results[run_id] = dict(result, text=text)
    else:
        _decide_held(state, svc, run_id, draft, result, record, action,
                     ack=request.form.get("ack_unsupported") == "yes", reason=request.form.get("reason", ""))
    state.reviews.setdefault(run_id, []).append(record)
    return redirect(url_for("drafts.show", run_id=run_id))


def line_diff(before: str, after: str) -> list[tuple[str, str]]:
    """(op, line) pairs: op is ' ' kept, '-' removed, '+' added; rendered escaped by the template.

    rapidfuzz's Indel opcodes over the lines (bit-parallel LCS in C): the cost is bounded by
    the edit cap (``MAX_EDIT_CHARS``), unlike difflib's ndiff, which is quadratic per line pair.
    """
    a, b = before.splitlines(), after.splitlines()
    out: list[tuple[str, str]] = []
    removed: list[tuple[str, str]] = []
    added: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in Indel.opcodes(a, b):
        if tag == "equal":
            out += removed + added + [(" ", line) for line in a[i1:i2]]
            removed, added = [], []
            continue
        removed += [("-", line) for line in a[i1:i2]]  # a changed block: removals, then additions
        added += [("+", line) for line in b[j1:j2]]
    return out + removed + added


@bp.post("/api/drafts/<run_id>/review")
def api_review(run_id: str):  # type: ignore[no-untyped-def]
    """JSON review: ``{"action": "approve"|"edit"|"reject", "version"?, "text"?, "reason"?,
    "ack_unsupported"?: bool}``. A 409 ``review_conflict`` carries what changed."""
    state = current()
    body = parse_body(ReviewRequest)
    action = body.action
    text, reason = body.text or "", body.reason or ""
    if action == "edit":
        check_edit(text)  # size first: before any lookup or request (413)
    draft = state.drafts.get(run_id)
    if draft is None:
        abort(404)
    svc = _service(state)
    result = state.results.get(run_id) or {}
    ack = body.ack_unsupported
    record: dict = {"action": action}
    if result.get("state") == "held_until_approval":
        if action == "edit":
            record["edit_distance"] = svc.edit_held(run_id, text)
        else:
            _decide_held(state, svc, run_id, draft, result, record, action, ack=ack, reason=reason)
        state.reviews.setdefault(run_id, []).append(record)
        return jsonify(record)
    doc_id, version = _written(state, run_id)
    version = check_fhir_id(body.version or version)  # the model checked it too: never in a URL raw
    try:
        if action == "approve":
            out = svc.approve(doc_id, version, unsupported=draft.unsupported, acknowledged_unsupported=ack)
        elif action == "edit":
            out = svc.edit(doc_id, version, text)
        else:
            out = svc.reject(doc_id, version, reason)
    except ConflictError as exc:
        return jsonify(exc.to_dict() | {"changes": exc.changes}), 409
    record.update(document_reference=out.document_reference, provenance=out.provenance)
    if action == "reject":
        record["reason"] = reason
    written = dict(result.get("written") or {}, document_reference=out.document_reference)
    final = record if action in ("approve", "reject") else result.get("review")
    state.results[run_id] = dict(result, written=written, review=final)
    state.reviews.setdefault(run_id, []).append(record)
    return jsonify(record)
