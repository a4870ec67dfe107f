"""SMART draft agent: a SMART-on-FHIR app that drafts clinical text for clinician review."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported in create_app: `python -m app --help` must not pay for Flask
    from flask import Flask

    from app.config import Settings

__all__ = ["create_app"]

EXTENSION = "smart_draft"


def create_app(config: Settings | dict | None = None) -> Flask:
    """Application factory: settings validated, collaborators built once, blueprints registered."""
    from flask import Flask, g, request, session

    from app.config import Settings, load_settings
    from app.errors import AppError
    from app.services import Services
    from app.web import register

    if isinstance(config, Settings):
        settings = config
    else:
        settings = load_settings(**(config or {}))
    flask_app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    secure = settings.redirect_uri.startswith("https://")
    flask_app.config.update(
        SECRET_KEY=settings.secret(),
        SESSION_COOKIE_NAME="sda_session",
        SESSION_COOKIE_HTTPONLY=True,
        # Inside an EHR iframe the cookie must be SameSite=None; Secure (HTTPS only).
        SESSION_COOKIE_SAMESITE="None" if secure else "Lax",
        SESSION_COOKIE_SECURE=secure,
        PERMANENT_SESSION_LIFETIME=settings.session_lifetime_s,
        MAX_CONTENT_LENGTH=1_000_000,
        TESTING=settings.testing,
    )
    flask_app.extensions[EXTENSION] = Services(settings)
    register(flask_app)

    services = flask_app.extensions[EXTENSION]
    last_purge = [0.0]

    @flask_app.before_request
    def _expire_sessions() -> None:
        """At most once a minute: delete expired tokens from the store and their in-memory state."""
        now = time.time()
        if now - last_purge[0] < 60:
            return
        last_purge[0] = now
        services.sessions.purge_expired()
        lifetime = settings.session_lifetime_s
        flask_app.extensions["smart_draft_web"].prune(
            lambda st: (st.created + lifetime > now) if st.unauthenticated
            else services.sessions.load(st.sid) is not None)

    @flask_app.before_request
    def _csrf() -> None:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        g.csrf = session["csrf"]
        if request.method == "POST":
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
            if not secrets.compare_digest(str(sent), session["csrf"]):
                raise AppError("The form expired or was not sent by this app. Reload the page.",
                               code="csrf_failed", http_status=403)

    @flask_app.after_request
    def _headers(resp):  # type: ignore[no-untyped-def]
        ancestors = " ".join(["'self'", *settings.allowed_iss_origins])
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"object-src 'none'; base-uri 'none'; form-action 'self' {' '.join(settings.allowed_iss_origins)}; "
            f"frame-ancestors {ancestors}"
        )
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    return flask_app
