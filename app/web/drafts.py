"""Drafting: run a task, show the draft with its evidence, and the JSON API."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, redirect, render_template, request, url_for

from app.errors import AppError
from app.web.context import actor_for, client_for, current, services, wait_ready

bp = Blueprint("drafts", __name__)


def _run(task: str, question: str | None, write: bool) -> tuple[str, dict]:
    state = current()
    chart = wait_ready(state)
    svc = services().drafting()
    draft = svc.draft(chart, task, question=question)
    state.drafts[draft.run_id] = draft
    result = {"state": "not_requested", "written": None, "reason": None}
    if write:
        result = svc.write(client_for(state), chart, draft, actor_for(state),
                           encounter_id=state.encounter_id)
    state.results[draft.run_id] = result
    return draft.run_id, result


@bp.post("/drafts")
def create_draft():  # type: ignore[no-untyped-def]
    task = request.form.get("task", "")
    run_id, _ = _run(task, request.form.get("question"), write=True)
    return redirect(url_for("drafts.show", run_id=run_id))


@bp.get("/drafts/<run_id>")
def show(run_id: str):  # type: ignore[no-untyped-def]
    state = current()
    draft = state.drafts.get(run_id)
    if draft is None:
        abort(404)
    from app.review.workflow import REJECT_REASONS

    return render_template("draft.html", state=state, draft=draft, result=state.results.get(run_id),
                           reject_reasons=REJECT_REASONS,
                           contract=draft.contract(state.results.get(run_id, {}).get("written")))


@bp.get("/drafts/<run_id>/source/<doc_id>")
def source(run_id: str, doc_id: str):  # type: ignore[no-untyped-def]
    state = current()
    draft = state.drafts.get(run_id)
    chart = state.chart
    if draft is None or chart is None:
        abort(404)
    cited = {c.document for s in draft.sentences for c in s.citations}
    if doc_id not in cited or doc_id not in chart.texts:
        abort(404)  # only cited, permitted notes are shown
    text = chart.texts[doc_id]
    start = max(0, min(len(text), request.args.get("start", 0, type=int)))
    end = max(start, min(len(text), request.args.get("end", start, type=int)))
    return render_template("source.html", draft=draft, doc_id=doc_id, before=text[:start],
                           span=text[start:end], after=text[end:], meta=chart.documents.get(doc_id))


@bp.post("/api/drafts")
def api_create():  # type: ignore[no-untyped-def]
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise AppError("Send a JSON object with 'task'.", code="bad_request", http_status=400)
    run_id, result = _run(str(body.get("task", "")), body.get("question"), write=bool(body.get("write", True)))
    draft = current().drafts[run_id]
    out = draft.contract(result.get("written"))
    out["writeback"] = {"state": result["state"], "reason": result["reason"]}
    return jsonify(out), 201
