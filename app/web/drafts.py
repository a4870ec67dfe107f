"""Drafting: run a task (in the background from the page, cancellable), show the draft, the JSON API."""

from __future__ import annotations

import logging
import secrets
import threading

from flask import Blueprint, abort, current_app, jsonify, redirect, render_template, request, url_for

from app.errors import AppError
from app.logging import event
from app.web.bodies import DraftRequest, parse_body
from app.web.context import actor_for, client_for, current, ensure_chart, services, wait_ready
from app.web.state import LaunchState, RunJob

log = logging.getLogger(__name__)
bp = Blueprint("drafts", __name__)


def _run(state: LaunchState, task: str, question: str | None, write: bool,
         job: RunJob | None = None) -> tuple[str | None, dict]:
    """Draft, then write unless cancelled meanwhile. Needs an app context (not a request one).

    Cancelling and starting the write are decided under the job's lock: either the run is
    cancelled and nothing is written, or the write has started and the cancel is refused.
    """
    chart = wait_ready(state)
    svc = services().drafting()
    draft = svc.draft(chart, task, question=question, actor=actor_for(state))
    if job is not None and not job.start_writing():  # one conditional UPDATE: a cancel came first
        event(log, "draft.cancelled", run_id=draft.run_id)
        return None, {"state": "cancelled", "written": None,
                      "reason": "Cancelled before anything was written."}
    state.drafts[draft.run_id] = draft
    result = {"state": "not_requested", "written": None, "reason": None}
    if write:
        result = svc.write(client_for(state), chart, draft, actor_for(state),
                           encounter_id=state.encounter_id)
    state.results[draft.run_id] = result
    return draft.run_id, result


@bp.post("/drafts")
def create_draft():  # type: ignore[no-untyped-def]
    state = current()
    task = request.form.get("task", "")
    from app.agent.tasks import get_task

    get_task(task)  # unknown task: a clear 400 now, not a failed job later
    question = (request.form.get("question") or "").strip() or None
    if task == "question" and not question:
        raise AppError("Type the question to answer.", code="question_missing", http_status=400)
    job = RunJob(key=secrets.token_urlsafe(12), task=task)
    state.jobs[job.key] = job
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def work() -> None:
        with app.app_context():
            try:
                run_id, result = _run(state, task, question, write=True, job=job)
                job.finish("cancelled" if result["state"] == "cancelled" else "done", run_id=run_id)
            except AppError as exc:
                job.finish("failed", error_code=exc.code)
            except Exception as exc:  # noqa: BLE001 - shown as a failed run, logged without content
                job.finish("failed", error_code=type(exc).__name__)
                event(log, "draft.failed", error_code=type(exc).__name__)

    threading.Thread(target=work, name="draft-run", daemon=True).start()
    return redirect(url_for("drafts.run_page", key=job.key))


def _job(key: str) -> RunJob:
    job = current().jobs.get(key)
    if job is None:
        abort(404)
    return job


@bp.get("/runs/<key>")
def run_page(key: str):  # type: ignore[no-untyped-def]
    job = _job(key)
    if job.state == "done" and job.run_id:
        return redirect(url_for("drafts.show", run_id=job.run_id))
    from app.web import NEXT_STEPS, views

    return render_template("run.html", state=current(), job=job, title=views.task_title(job.task),
                           next_step=NEXT_STEPS.get(job.error_code or ""))


@bp.get("/api/runs/<key>")
def run_status(key: str):  # type: ignore[no-untyped-def]
    job = _job(key)
    return jsonify({"state": job.state, "task": job.task, "error_code": job.error_code,
                    "draft_url": url_for("drafts.show", run_id=job.run_id) if job.run_id else None})


@bp.post("/runs/<key>/cancel")
def cancel(key: str):  # type: ignore[no-untyped-def]
    job = _job(key)
    job.request_cancel()  # refused (no change) once the write started
    return redirect(url_for("drafts.run_page", key=key))


@bp.get("/drafts/<run_id>")
def show(run_id: str):  # type: ignore[no-untyped-def]
    state = current()
    draft = state.drafts.get(run_id)
    if draft is None:
        abort(404)
    from app.review.workflow import REJECT_REASONS
    from app.web import views

    result = state.results.get(run_id) or {}
    chart = state.chart or ensure_chart(state)  # the cited notes go into the page (no page per citation)
    view = views.draft_view(draft, chart)
    return render_template("draft.html", state=state, draft=draft, result=result,
                           reject_reasons=REJECT_REASONS, reviews=state.reviews.get(run_id, []),
                           may_review=actor_for(state).grants.allows("DocumentReference", "update"),
                           contract=draft.contract(result.get("written")), view=view,
                           title=views.task_title(draft.task), irae=views.irae_rows(draft, view["sentences"]),
                           writeback=views.writeback(result, state.fhir_base),
                           effects=views.review_effects(result), log=views.review_log(services(), run_id, result),
                           held=result.get("state") == "held_until_approval")


@bp.post("/drafts/<run_id>/reopen")
def reopen(run_id: str):  # type: ignore[no-untyped-def]
    """Open a draft of this patient made in a session that has ended (a re-launch ends the earlier
    one), so it can be reviewed here. Refused when the draft belongs to another patient (404, as for
    any unknown draft), to a session that is still open (409), or cites a note this session may not
    see, or has a sentence no note supports (403: what it says may come from notes withheld here)."""
    from app.logging import opaque
    from app.review.workflow import check_fhir_id

    state = current()
    s = services()
    check_fhir_id(run_id, what="draft id")
    if state.drafts.get(run_id) is not None:
        return redirect(url_for("drafts.show", run_id=run_id))
    owner = s.drafts.owner(run_id)
    if owner is None or not state.patient_id or owner[1] != opaque(state.patient_id):
        abort(404)
    if s.web_sessions.live(owner[0]):
        raise AppError("This draft is open in another session that is still active. Ask the clinician "
                       "who made it, or make a new draft.", code="draft_in_other_session", http_status=409)
    draft = s.drafts.get(run_id)
    if draft is None:
        abort(404)
    chart = state.chart or ensure_chart(state)
    permitted = set(chart.documents) | set(chart.pending)  # allowed now, indexed or still pending
    cited = {doc for doc, _ in draft.cited_documents()}
    if draft.unsupported or not cited <= permitted:
        event(log, "draft.reopen_refused", run_id=run_id, error_code="draft_not_permitted")
        raise AppError("This draft cites notes your access does not include here, so it cannot be "
                       "opened in this session. Make a new draft.", code="draft_not_permitted",
                       http_status=403)
    if not s.drafts.reassign(run_id, owner[0], state.sid):
        raise AppError("Someone else opened this draft just now. Reload the chart.",
                       code="draft_in_other_session", http_status=409)
    event(log, "draft.reopened", run_id=run_id)
    return redirect(url_for("drafts.show", run_id=run_id))


@bp.get("/drafts/<run_id>/source/<doc_id>")
def source(run_id: str, doc_id: str):  # type: ignore[no-untyped-def]
    state = current()
    draft = state.drafts.get(run_id)
    chart = state.chart or (ensure_chart(state) if draft is not None else None)  # another worker: reopen
    if draft is None or chart is None:
        abort(404)
    cited = {c.document for s in draft.sentences for c in s.citations}
    if doc_id not in cited or doc_id not in chart.texts:
        abort(404)  # only cited, permitted notes are shown
    text = chart.texts[doc_id]
    start = max(0, min(len(text), request.args.get("start", 0, type=int)))
    end = max(start, min(len(text), request.args.get("end", start, type=int)))
    return render_template("source.html", state=state, draft=draft, doc_id=doc_id, before=text[:start],
                           span=text[start:end], after=text[end:], meta=chart.documents.get(doc_id))


@bp.post("/api/drafts")
def api_create():  # type: ignore[no-untyped-def]
    body = parse_body(DraftRequest)
    state = current()
    from app.agent.tasks import get_task

    get_task(body.task)  # unknown task: a clear 400
    question = (body.question or "").strip() or None
    if body.task == "question" and not question:
        raise AppError("Type the question to answer.", code="question_missing", http_status=400)
    run_id, result = _run(state, body.task, question, write=body.write)
    draft = state.drafts[run_id]  # type: ignore[index]
    out = draft.contract(result.get("written"))
    out["writeback"] = {"state": result["state"], "reason": result["reason"]}
    return jsonify(out), 201
