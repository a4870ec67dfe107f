"""Admin page (admin role only): run ledger, override rate, outbox depth. PHI-free by construction."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import func, select

from app.errors import PermissionDenied
from app.store.models import OutboxItem, ReviewRecord
from app.web.context import current, services

bp = Blueprint("admin", __name__)


def admin_figures() -> dict:
    s = services()
    runs = s.drafts.runs()  # the run ledger in the database: every worker, every restart
    with s.maker() as db:
        by_action = dict(db.execute(select(ReviewRecord.action, func.count()).group_by(ReviewRecord.action)).all())
        depth = db.scalar(select(func.count()).select_from(OutboxItem).where(OutboxItem.state == "pending")) or 0
    total = sum(by_action.get(a, 0) for a in ("approve", "edit", "reject"))
    overridden = by_action.get("reject", 0) + by_action.get("edit", 0)
    from app.agent.backends.breaker import process_breakers

    return {"runs": sorted(runs, key=lambda r: r["run_id"]), "reviews": by_action,
            "override_rate": overridden / total if total else None, "outbox_depth": depth,
            "breakers": process_breakers().snapshot(), **governance_figures(s)}


def _svg_img(svg: str) -> str:
    """A plot as an <img> data URI: the page's CSP (img-src data:) allows it, no inline style or script."""
    import base64

    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def governance_figures(s) -> dict:  # type: ignore[no-untyped-def]
    """Override monitoring (persisted reviews), shadow inference and the model-release gate (docs/governance.md)."""
    from app.agent.backends import build_backend
    from app.errors import AppError
    from app.monitoring import report
    from app.monitoring.governance import override_summary, release_status, shadow_summary

    overrides, shadow = override_summary(s), shadow_summary(s)
    plots = {}
    if overrides["by_group"]:
        weeks: dict[str, dict[str, float]] = {}
        for g in overrides["by_group"]:
            weeks.setdefault(g["week"], {})[f"{g['task']}/{g['model']}"] = g["override_rate"]
        plots["override_weeks"] = _svg_img(report.bar_chart("Override rate per ISO week (task/model)", weeks))
    if overrides["edit_distances"]:
        plots["edit_distances"] = _svg_img(report.histogram(
            "Edit distance of edits (share of the draft)", overrides["edit_distances"], xlabel="normalised edit"))
    if shadow["by_group"]:
        plots["shadow"] = _svg_img(report.bar_chart("Shadow runs: disagreement and agreement", {
            f"{g['task']}/{g['model']}": {"disagreement": g["disagreement"], "agreement": g["agreement_mean"]}
            for g in shadow["by_group"]}))
    try:
        backend = build_backend(s.settings)
        release = {"backend": backend.name, "model": backend.model, "mode": s.settings.model_release_gate,
                   "status": release_status(s.maker, backend.name, backend.model)}
    except AppError as exc:
        release = {"backend": s.settings.llm_backend, "model": "unknown", "mode": s.settings.model_release_gate,
                   "status": None, "error": exc.code}
    return {"overrides": overrides, "shadow": shadow, "release": release, "plots": plots}


@bp.get("/admin")
def admin():  # type: ignore[no-untyped-def]
    state = current()
    if state.role != "admin":
        raise PermissionDenied("This page is for administrators.", code="admin_only")
    return render_template("admin.html", state=state, figures=admin_figures())
