"""Health and metrics (no PHI: counts and states only)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    s = current_app.extensions["smart_draft"]
    with s.engine.connect():
        pass
    return jsonify({"status": "ok"})


@bp.get("/metrics")
def metrics():  # type: ignore[no-untyped-def]
    s = current_app.extensions["smart_draft"]
    web = current_app.extensions["smart_draft_web"]
    pending = len(s.outbox.pending())
    lines = [
        "# TYPE sda_outbox_pending gauge", f"sda_outbox_pending {pending}",
        "# TYPE sda_sessions_active gauge", f"sda_sessions_active {web.active_count()}",
    ]
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")


@bp.get("/.well-known/jwks.json")
def jwks():  # type: ignore[no-untyped-def]
    """The public key of a confidential-asymmetric client (empty set for public clients)."""
    key = current_app.extensions["smart_draft"].client_key
    return jsonify(key.public_jwks() if key else {"keys": []})
