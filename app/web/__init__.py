"""Thin Flask blueprints over the services: parse, call one service, render."""

from __future__ import annotations

import hmac
import logging

from flask import Flask, current_app, jsonify, render_template, request

from app.errors import AppError, AuthError
from app.logging import event

log = logging.getLogger(__name__)

# What the user can do next, per error code, in plain words.
NEXT_STEPS = {
    "unknown_iss": "Open the app from your EHR's menu. If it still fails, ask your EHR administrator to "
                   "register this EHR with the app (its FHIR address must be on the app's allowlist).",
    "no_iss": "Open the app from your EHR, inside a patient's chart.",
    "consent_refused": "Launch the app again and choose Allow on the EHR's consent screen, or close it if "
                       "you did not mean to open it.",
    "authorize_refused": "Launch the app again. If the EHR keeps refusing, ask your EHR administrator "
                         "whether the app is enabled for your account.",
    "bad_state": "Close this tab and launch the app again from the patient's chart.",
    "state_expired": "The sign-in took too long. Launch the app again from the patient's chart.",
    "session_expired": "Launch the app again from the patient's chart; your drafts already written to "
                       "the EHR are safe there.",
    "no_patient": "Open a patient's chart in the EHR first, then launch the app from it.",
    "invalid_scope": "The EHR did not grant the permissions the app needs. Ask your EHR administrator to "
                     "grant the app read access to Patient, Condition and DocumentReference.",
    "csrf_failed": "Reload the page and try again.",
    "index_not_ready": "The notes are still being prepared. Wait a moment and try again.",
    "index_cancelled": "Preparing the notes was cancelled. On the chart, choose Prepare notes again, then draft.",
}


def register(app: Flask) -> None:
    from app.web import admin, chart, drafts, health, launch, review, style
    from app.web.state import WebState

    app.extensions["smart_draft_web"] = WebState(app.extensions["smart_draft"])
    for bp in (launch.bp, chart.bp, drafts.bp, review.bp, health.bp, style.bp, admin.bp):
        app.register_blueprint(bp)

    import time

    from flask import g

    metrics = app.extensions["smart_draft"].metrics
    app.extensions["sda_metrics"] = metrics
    metrics.add_gauges(lambda: scrape_gauges(app))

    @app.before_request
    def _http_started() -> None:
        g.sda_started = time.monotonic()

    @app.after_request
    def _http_metrics(resp):  # type: ignore[no-untyped-def]
        """Requests by route *rule* (``/drafts/<run_id>``), never the path."""
        started = g.get("sda_started")
        if started is not None:
            rule = request.url_rule.rule if request.url_rule is not None else None
            metrics.record_http(rule=rule, method=request.method, status=resp.status_code,
                                seconds=time.monotonic() - started)
        return resp

    @app.before_request
    def _metrics_need_auth() -> None:
        """``/metrics``: an admin session, or ``Authorization: Bearer APP_METRICS_TOKEN``."""
        if request.path != "/metrics":
            return
        token = current_app.extensions["smart_draft"].settings.metrics_token
        sent = request.headers.get("Authorization", "")
        if token is not None and token.get_secret_value() and sent.startswith("Bearer ") and \
                hmac.compare_digest(sent[7:].encode(), token.get_secret_value().encode()):
            return
        from app.web.context import current

        try:
            role = current().role
        except AppError:
            role = None
        if role != "admin":
            raise AuthError("Metrics need an admin session or the scrape token (APP_METRICS_TOKEN).",
                            code="metrics_unauthorized", http_status=401)

    @app.errorhandler(AppError)
    def _app_error(exc: AppError):  # type: ignore[no-untyped-def]
        event(log, "http.error", error_code=exc.code, http_status=exc.http_status, route=request.path[:80])
        current_app.extensions["smart_draft"].metrics.record_error(exc.code)
        if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
            return jsonify(exc.to_dict()), exc.http_status
        return render_template("error.html", error=exc, next_step=NEXT_STEPS.get(exc.code)), exc.http_status

    @app.errorhandler(413)
    def _too_large(_exc):  # type: ignore[no-untyped-def]
        limit = current_app.config.get("MAX_CONTENT_LENGTH") or 0
        err = AppError(f"The request is too large (at most {limit:,} bytes).",
                       code="request_too_large", http_status=413)
        return _app_error(err)

    @app.errorhandler(404)
    def _not_found(_exc):  # type: ignore[no-untyped-def]
        err = AppError("This page does not exist.", code="not_found", http_status=404)
        return _app_error(err)


def scrape_gauges(app: Flask) -> list:
    """Shared state read from the database at scrape time (any worker answers the same)."""
    from app.monitoring.governance import override_summary
    from app.monitoring.metrics import gauge

    s = app.extensions["smart_draft"]
    web = app.extensions["smart_draft_web"]
    out = [gauge("sda_outbox_depth", "Outbox items waiting to be written", float(len(s.outbox.pending()))),
           gauge("sda_sessions_active", "Launch sessions in the database", float(web.active_count()))]
    rate = override_summary(s, limit=500).get("override_rate")
    if rate is not None:
        out.append(gauge("sda_override_rate", "Share of recent reviews that rejected or substantially edited",
                         float(rate)))
    return out
