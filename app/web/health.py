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
    """prometheus-client exposition (app.monitoring.metrics); the admin/scrape-token check is in
    app.web.register's before_request."""
    from app.monitoring.metrics import CONTENT_TYPE

    return Response(current_app.extensions["sda_metrics"].exposition(), content_type=CONTENT_TYPE)


@bp.get("/.well-known/jwks.json")
def jwks():  # type: ignore[no-untyped-def]
    """The public key of a confidential-asymmetric client (empty set for public clients)."""
    key = current_app.extensions["smart_draft"].client_key
    return jsonify(key.public_jwks() if key else {"keys": []})
