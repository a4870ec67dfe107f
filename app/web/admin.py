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
            "breakers": process_breakers().snapshot()}


@bp.get("/admin")
def admin():  # type: ignore[no-untyped-def]
    state = current()
    if state.role != "admin":
        raise PermissionDenied("This page is for administrators.", code="admin_only")
    return render_template("admin.html", state=state, figures=admin_figures())
