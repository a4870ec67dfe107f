"""The chart page: banner, conditions, documents by access decision, index progress."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template

from app.agent.tasks import TASKS
from app.retrieval.indexer import patient_name
from app.web.context import actor_for, current, ensure_chart

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
    return render_template(
        "chart.html", state=state, chart=chart, name=patient_name(chart), conditions=conditions,
        counts=chart.counts, writeback_reason=actor.grants.writeback_reason(), tasks=TASKS,
        history=list(state.drafts.values()), results=state.results,
    )


@bp.get("/api/index-status")
def index_status():  # type: ignore[no-untyped-def]
    state = current()
    chart = ensure_chart(state)
    return jsonify({"progress": chart.progress.as_dict(), "chunks": chart.chunks,
                    "counts": {k: v for k, v in chart.counts.items()}})


@bp.get("/signed-out")
def signed_out():  # type: ignore[no-untyped-def]
    return render_template("signed_out.html")
