"""Thin Flask blueprints over the services: parse, call one service, render."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request

from app.errors import AppError
from app.logging import event

log = logging.getLogger(__name__)


def register(app: Flask) -> None:
    from app.web import chart, drafts, health, launch, review
    from app.web.state import WebState

    app.extensions["smart_draft_web"] = WebState()
    for bp in (launch.bp, chart.bp, drafts.bp, review.bp, health.bp):
        app.register_blueprint(bp)

    @app.errorhandler(AppError)
    def _app_error(exc: AppError):  # type: ignore[no-untyped-def]
        event(log, "http.error", error_code=exc.code, http_status=exc.http_status, route=request.path[:80])
        if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
            return jsonify(exc.to_dict()), exc.http_status
        return render_template("error.html", error=exc), exc.http_status

    @app.errorhandler(404)
    def _not_found(_exc):  # type: ignore[no-untyped-def]
        err = AppError("This page does not exist.", code="not_found", http_status=404)
        return _app_error(err)
