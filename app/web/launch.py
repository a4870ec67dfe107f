"""Launch, callback and logout (SMART App Launch 2.2, EHR and standalone launch).

An ``iss`` not on the allowlist gets an error page and no outbound request.
"""

from __future__ import annotations

import logging
import re
import secrets

import requests
from flask import Blueprint, current_app, redirect, render_template, request, session, url_for

from app.audit.fhir import AuditedFhirClient
from app.errors import AuthError, LaunchError
from app.logging import event, opaque
from app.smart import launch as smart_launch
from app.smart.discovery import discover
from app.smart.identity import practitioner_reference, resolve_role
from app.smart.scopes import spell_for_server
from app.smart.session import SessionTokens, end_session
from app.smart.tokens import exchange_code
from app.web.state import LaunchState

log = logging.getLogger(__name__)
bp = Blueprint("launch", __name__)


def services():  # type: ignore[no-untyped-def]
    return current_app.extensions["smart_draft"]


def web_state():  # type: ignore[no-untyped-def]
    return current_app.extensions["smart_draft_web"]


@bp.get("/launch")
def launch():  # type: ignore[no-untyped-def]
    s = services()
    settings = s.settings
    iss = request.args.get("iss") or settings.fhir_base_url
    launch_value = request.args.get("launch")
    # The allowlist check happens before any request to the iss.
    iss = smart_launch.check_iss(iss, settings.allowed_iss_list)
    config = discover(iss, requests.Session(), timeout=settings.fhir_timeout_s, cache=s.discovery)
    pending = smart_launch.start_launch(iss, launch_value)
    key = secrets.token_urlsafe(24)
    web_state().put_pending(key, pending)
    session["launch_key"] = key
    event(log, "launch.start", url=opaque(iss), ok=True, token_present=False)
    return redirect(smart_launch.authorize_url(
        config.authorization_endpoint, pending, client_id=settings.client_id,
        redirect_uri=settings.redirect_uri,
        scopes=spell_for_server(settings.scopes, v2=config.permission_v2)))


@bp.get("/callback")
def callback():  # type: ignore[no-untyped-def]
    s = services()
    settings = s.settings
    if request.args.get("error"):
        code = request.args["error"]
        if code == "access_denied":
            raise LaunchError("Access was refused at the EHR's consent screen. Launch again and allow access.",
                              code="consent_refused")
        raise LaunchError("The EHR refused the sign-in. Launch again, or ask your administrator.",
                          code="authorize_refused")
    key = session.pop("launch_key", None)
    pending = smart_launch.check_state(web_state().take_pending(key), request.args.get("state"))
    config = s.discovery.get(pending.iss, fresh_only=False)  # in the database: any worker
    if config is None:
        raise LaunchError("The sign-in could not be completed. Launch again.", code="bad_state")
    code = request.args.get("code")
    if not code:
        raise LaunchError("The EHR sent no authorization code. Launch again.", code="no_code")
    http = requests.Session()
    form, basic = s.client_auth(config.token_endpoint)
    tokens = exchange_code(http, config, code=code, code_verifier=pending.code_verifier,
                           redirect_uri=settings.redirect_uri, client_id=settings.client_id,
                           nonce=pending.nonce, client_auth=form, basic=basic)
    if not tokens.patient:
        raise AuthError("The EHR did not say which patient to open. Launch from a patient's chart.",
                        code="no_patient")
    sid = secrets.token_urlsafe(32)
    s.sessions.save(sid, pending.iss, tokens)
    earlier = _browser_sessions()
    session.clear()
    session["sid"] = sid
    session.permanent = True
    end_sessions(earlier)  # a re-launch ends this browser's earlier session (tokens revoked)
    user_ref = practitioner_reference(tokens.fhir_user)
    client = AuditedFhirClient(pending.iss, SessionTokens(s.sessions, sid, config, settings.client_id, http,
                                                            s.client_auth),
                               trail=s.audit, client_id=settings.client_id,
                               user_reference=user_ref, patient_id=tokens.patient)
    role = resolve_role(client, user_ref)
    web_state().put(LaunchState(
        sid=sid, fhir_base=pending.iss, config=config, patient_id=tokens.patient,
        user_reference=user_ref, role=role, encounter_id=tokens.encounter,
        need_patient_banner=tokens.need_patient_banner, smart_style_url=tokens.smart_style_url))
    event(log, "launch.done", patient=opaque(tokens.patient), user=opaque(user_ref), code=role,
          scopes=len(tokens.grants.raw))
    return redirect(url_for("chart.chart"))


_PATIENT_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR id syntax


@bp.route("/connect", methods=["GET", "POST"])
def connect():  # type: ignore[no-untyped-def]
    """Open-server mode (development only): open a chart on APP_FHIR_BASE_URL without SMART.

    Off unless APP_OPEN_SERVER=true. No token exists in this mode; every page says so.
    """
    settings = services().settings
    if not (settings.open_server and settings.fhir_base_url):
        raise LaunchError("Connecting without authorization is switched off. Launch the app from the EHR "
                          "(developers: set APP_OPEN_SERVER=true and APP_FHIR_BASE_URL).",
                          code="open_server_disabled", http_status=404)
    base = smart_launch.normalise_base(settings.fhir_base_url)
    if request.method == "GET":
        return render_template("connect.html", fhir_base=base)
    patient = (request.form.get("patient") or "").strip()
    if not _PATIENT_ID.match(patient):
        raise LaunchError("That is not a FHIR patient id (letters, digits, '-' and '.', at most 64).",
                          code="bad_patient_id")
    sid = secrets.token_urlsafe(32)
    earlier = _browser_sessions()
    session.clear()
    session["sid"] = sid
    end_sessions(earlier)
    web_state().put(LaunchState(sid=sid, fhir_base=base, config=None, patient_id=patient,
                                user_reference=None, role="clinician", unauthenticated=True))
    event(log, "connect.open_server", patient=opaque(patient), url=opaque(base))
    return redirect(url_for("chart.chart"))


def _browser_sessions() -> list[str]:
    """The launch sessions this browser's cookie names (at most one: a re-launch ends the last)."""
    sid = session.get("sid")
    return [sid] if isinstance(sid, str) and sid else []


def end_sessions(sids: list[str]) -> None:
    """End launch sessions: revoke their tokens at the EHR when it advertises a
    ``revocation_endpoint`` (RFC 7009), delete the server-side tokens, drop the chart and state."""
    s = services()
    for sid in sids:
        state = web_state().get(sid)
        revoked = end_session(s.sessions, sid, state.config if state else None, s.settings.client_id,
                              requests.Session(), s.client_auth)
        web_state().drop(sid)
        event(log, "session.ended", ok=revoked)


@bp.post("/logout")
def logout():  # type: ignore[no-untyped-def]
    """Sign out: every session of this browser ends, and its tokens are revoked at the EHR."""
    earlier = _browser_sessions()
    session.clear()
    end_sessions(earlier)
    return redirect(url_for("chart.signed_out"))
