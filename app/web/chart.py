"""The chart page: banner, conditions, documents by access decision, index progress."""

from __future__ import annotations

import re

from flask import Blueprint, jsonify, redirect, render_template, request, url_for

from app.agent.tasks import TASKS
from app.retrieval.indexer import patient_name
from app.web import views
from app.web.context import actor_for, current, ensure_chart, services

bp = Blueprint("chart", __name__)


@bp.get("/")
def chart():  # type: ignore[no-untyped-def]
    state = current()
    chart = ensure_chart(state)
    actor = actor_for(state)
    conditions = [
        {"display": (c.get("code") or {}).get("text")
         or next((x.get("display") for x in (c.get("code") or {}).get("coding") or []), "?"),
         "status": next((x.get("code") for x in (c.get("clinicalStatus") or {}).get("coding") or []), "")}
        for c in chart.conditions
    ]
    drafts = list(state.drafts.values())
    date_ok = re.compile(r"^\d{4}-\d{2}-\d{2}$")  # filters from the query string: dates only
    since, until = (request.args.get(k, "") for k in ("from", "to"))
    filters = {"type": request.args.get("type", "")[:80], "from": since if date_ok.match(since) else "",
               "to": until if date_ok.match(until) else ""}
    notes = views.notes_list(chart, drafts, filters["type"] or None, filters["from"] or None,
                             filters["to"] or None)
    return render_template(
        "chart.html", state=state, chart=chart, name=patient_name(chart), conditions=conditions,
        counts=chart.counts, writeback_reason=actor.grants.writeback_reason(), tasks=TASKS,
        history=drafts, results=state.results, notes=notes, filters=filters,
        denied=views.denied_counts(chart.counts),
        patient_drafts=views.patient_drafts(services(), state.patient_id, state.sid),
    )


@bp.post("/index/cancel")
def cancel_index():  # type: ignore[no-untyped-def]
    """Stop preparing notes: what is indexed stays, nothing more is fetched or embedded."""
    chart = ensure_chart(current())
    if chart.progress.state in ("pending", "indexing"):
        chart.progress.cancel.set()
    return redirect(url_for("chart.chart"))


@bp.post("/index/restart")
def restart_index():  # type: ignore[no-untyped-def]
    """Prepare the notes again after a cancel or a failure (the embedding cache keeps what was done)."""
    state = current()
    if state.chart is not None and state.chart.progress.state in ("cancelled", "failed"):
        state.chart = None
    ensure_chart(state)
    return redirect(url_for("chart.chart"))


@bp.get("/api/index-status")
def index_status():  # type: ignore[no-untyped-def]
    state = current()
    chart = ensure_chart(state)
    return jsonify({"progress": chart.progress.as_dict(), "chunks": chart.chunks,
                    "counts": {k: v for k, v in chart.counts.items()}})


@bp.get("/signed-out")
def signed_out():  # type: ignore[no-untyped-def]
    return render_template("signed_out.html")
