"""Review of a written draft: approve, edit (with a diff), reject with a reason."""

from __future__ import annotations

import difflib

from flask import Blueprint, abort, jsonify, redirect, render_template, request, url_for

from app.errors import AppError
from app.review.workflow import ConflictError, ReviewService, draft_text
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
    return parts[1], parts[3] if len(parts) > 3 else "1"


@bp.post("/drafts/<run_id>/review")
def review(run_id: str):  # type: ignore[no-untyped-def]
    state = current()
    draft = state.drafts.get(run_id)
    if draft is None:
        abort(404)
    doc_id, version = _written(state, run_id)
    svc = _service(state)
    action = request.form.get("action")
    try:
        if action == "approve":
            out = svc.approve(doc_id, version, unsupported=draft.unsupported,
                              acknowledged_unsupported=request.form.get("ack_unsupported") == "yes")
        elif action == "edit":
            out = svc.edit(doc_id, version, request.form.get("text", ""))
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


def line_diff(before: str, after: str) -> list[tuple[str, str]]:
    """(op, line) pairs: op is ' ' kept, '-' removed, '+' added; rendered escaped by the template."""
    out = []
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        if line[:1] in (" ", "-", "+"):
            out.append((line[0], line[2:]))
    return out


@bp.post("/api/drafts/<run_id>/review")
def api_review(run_id: str):  # type: ignore[no-untyped-def]
    """JSON review: ``{"action": "approve"|"edit"|"reject", "version"?, "text"?, "reason"?,
    "ack_unsupported"?: bool}``. A 409 ``review_conflict`` carries what changed."""
    state = current()
    draft = state.drafts.get(run_id)
    if draft is None:
        abort(404)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise AppError("Send a JSON object with 'action'.", code="bad_request", http_status=400)
    action = body.get("action")
    svc = _service(state)
    result = state.results.get(run_id) or {}
    ack = body.get("ack_unsupported") is True
    record: dict = {"action": action}
    if result.get("state") == "held_until_approval":
        if action == "approve":
            out = svc.approve_held(run_id, unsupported=draft.unsupported, acknowledged_unsupported=ack)
            record.update(document_reference=out.document_reference, provenance=out.provenance)
            written = services().outbox.get(run_id)["written"]
            state.results[run_id] = dict(result, state="written", written=written, review=record)
        elif action == "edit":
            record["edit_distance"] = svc.edit_held(run_id, str(body.get("text", "")))
        elif action == "reject":
            svc.reject_held(run_id, str(body.get("reason", "")))
            record["reason"] = body.get("reason")
            state.results[run_id] = dict(result, state="rejected", review=record)
        else:
            raise AppError("Unknown review action.", code="bad_action", http_status=400)
        state.reviews.setdefault(run_id, []).append(record)
        return jsonify(record)
    doc_id, version = _written(state, run_id)
    version = str(body.get("version") or version)
    try:
        if action == "approve":
            out = svc.approve(doc_id, version, unsupported=draft.unsupported, acknowledged_unsupported=ack)
        elif action == "edit":
            out = svc.edit(doc_id, version, str(body.get("text", "")))
        elif action == "reject":
            out = svc.reject(doc_id, version, str(body.get("reason", "")))
        else:
            raise AppError("Unknown review action.", code="bad_action", http_status=400)
    except ConflictError as exc:
        return jsonify(exc.to_dict() | {"changes": exc.changes}), 409
    record.update(document_reference=out.document_reference, provenance=out.provenance)
    if action == "reject":
        record["reason"] = body.get("reason")
    written = dict(result.get("written") or {}, document_reference=out.document_reference)
    final = record if action in ("approve", "reject") else result.get("review")
    state.results[run_id] = dict(result, written=written, review=final)
    state.reviews.setdefault(run_id, []).append(record)
    return jsonify(record)
