"""The sandbox's one Flask app: SMART discovery, authorize/token, JWKS, launcher, FHIR proxy.

- ``GET /fhir/.well-known/smart-configuration`` (SMART App Launch 2.2.0 s"Conformance");
- ``GET|POST /auth/authorize``: EHR launch (``launch`` bound to the signed-in
  EHR user: no login form) or standalone launch (user and patient picker);
- ``POST /auth/token``, ``POST /auth/revoke`` (RFC 7009), ``GET /auth/jwks`` (RFC 7517);
- ``GET /launcher``: the EHR's "open app" page (SMART 2.2.0 "EHR launch");
- ``GET /smart-style.json`` (SMART 2.2.0 "Styling").
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import requests
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from flask import Flask, Response, jsonify, redirect, render_template_string, request

from sandbox import scopes as sc
from sandbox.store import LaunchContext

if TYPE_CHECKING:
    from sandbox.server import Sandbox

log = logging.getLogger(__name__)
BROWSER_COOKIE = "sandbox_browser"  # binds a launch to the browser that opened the launcher

CAPABILITIES = [
    "launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
    "client-confidential-asymmetric", "context-ehr-patient", "context-ehr-encounter",
    "context-standalone-patient", "context-banner", "context-style", "sso-openid-connect",
    "permission-v1", "permission-v2", "permission-patient", "permission-user", "permission-offline",
    "permission-online",
]
STYLE = {"color_background": "#f6f7f9", "color_error": "#b00020", "color_highlight": "#0b5cad",
         "color_modal_backdrop": "", "color_success": "#2e7d32", "color_text": "#1b1b1b",
         "dim_border_radius": "4px", "dim_font_size": "14px", "dim_spacing_size": "16px",
         "font_family_body": "system-ui, sans-serif", "font_family_heading": "system-ui, sans-serif"}

DARK_STYLE = dict(STYLE, color_background="#16181d", color_text="#e8eaed", color_highlight="#0b5cad",
                  color_error="#ff8a80", color_success="#81c995")  # /smart-style.json?theme=dark

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:40rem}label{display:block;margin:.8rem 0}
select,button{font-size:1rem;padding:.3rem}</style></head><body><h1>{{ title }}</h1>
<form method="{{ method }}" action="{{ action }}">
{% for k, v in hidden %}<input type="hidden" name="{{ k }}" value="{{ v }}">{% endfor %}
<label>User <select name="user">{% for u in users %}<option value="{{ u.id }}"
 {% if u.id == user %}selected{% endif %}>{{ u.display }} ({{ u.role }})</option>{% endfor %}</select></label>
{% if patients %}<label>Patient <select name="patient">{% for p in patients %}<option value="{{ p[0] }}"
 {% if p[0] == patient %}selected{% endif %}>{{ p[1] }} ({{ p[0] }})</option>{% endfor %}</select></label>{% endif %}
{% if encounter_field %}<label>Encounter (optional) <input name="encounter"></label>{% endif %}
{% if go %}<input type="hidden" name="go" value="1">{% endif %}
<button type="submit">{{ button }}</button></form>{% if note %}<p>{{ note }}</p>{% endif %}</body></html>"""


def patient_choices(sekmet_base: str) -> list[tuple[str, str]]:
    """(id, label) for the patients held by sekmet (synthetic names only)."""
    try:
        bundle = requests.get(f"{sekmet_base}/Patient", params={"_count": "500"}, timeout=30,
                              headers={"Accept": "application/fhir+json"}).json()
    except (requests.RequestException, ValueError):
        return []
    out = []
    for entry in bundle.get("entry") or []:
        res = entry.get("resource") or {}
        names = res.get("name") or [{}]
        label = " ".join([*names[0].get("given", []), names[0].get("family", "")]).strip()
        out.append((str(res.get("id")), label or str(res.get("id"))))
    return sorted(out)


def create_web_app(sb: Sandbox) -> Flask:
    """Build the Flask app for a started Sandbox."""
    app = Flask("sandbox")
    auth = sb.auth
    app.register_blueprint(sb.proxy.blueprint())
    from sandbox.bulk import bulk_blueprint  # $export (Bulk Data v2) over sekmet

    app.register_blueprint(bulk_blueprint(sb))

    @app.get("/fhir/.well-known/smart-configuration")
    def smart_configuration() -> Response:
        supported = sorted({s for c in sb.clients.values() for s in c.scopes})
        return jsonify({
            "issuer": auth.issuer,
            "jwks_uri": f"{sb.base_url}/auth/jwks",
            "authorization_endpoint": f"{sb.base_url}/auth/authorize",
            "token_endpoint": auth.token_endpoint,
            "revocation_endpoint": f"{sb.base_url}/auth/revoke",
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post",
                                                      "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "scopes_supported": supported,
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "capabilities": CAPABILITIES,
        })

    @app.get("/auth/jwks")
    def jwks() -> Response:
        return jsonify({"keys": [auth.key.as_dict(private=False)]})

    @app.get("/smart-style.json")
    def style() -> Response:
        return jsonify(DARK_STYLE if request.args.get("theme") == "dark" else STYLE)

    @app.post("/auth/token")
    def token() -> Response:
        resp: Response = auth.create_token_response()
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.post("/auth/revoke")
    def revoke() -> Response:
        resp: Response = auth.create_endpoint_response("revocation")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.route("/auth/authorize", methods=["GET", "POST"])
    def authorize() -> Any:
        try:
            grant = auth.get_consent_grant(end_user=None)
        except OAuth2Error as err:
            return _auth_error(err)
        params = request.values
        granted = sc.split(grant.request.scope)
        launch = params.get("launch")
        if launch:
            ctx = sb.store.take_launch(launch, request.cookies.get(BROWSER_COOKIE)) \
                if "launch" in granted else None
            if ctx is None:
                return _auth_error(InvalidRequestError(
                    "Unknown, expired or already used 'launch', a launch opened in another "
                    "browser, or the 'launch' scope is missing", redirect_uri=grant.redirect_uri))
            log.info("EHR launch authorized for client %s", grant.client.client_id)
            return auth.create_authorization_response(grant=grant, grant_user=_narrow(ctx, granted))
        if request.method == "POST" and params.get("user") in sb.users:
            user = sb.users[params["user"]]
            patient = params.get("patient") or None
            if patient and patient not in {p for p, _ in patient_choices(sb.sekmet_base)}:
                return Response("Unknown patient", status=400)
            ctx = LaunchContext(user=user.id, practitioner=user.practitioner, role=user.role,
                                patient=patient, smart_style_url=sb.style_url)
            return auth.create_authorization_response(grant=grant, grant_user=_narrow(ctx, granted))
        keep = [(k, v) for k, v in params.items(multi=True) if k not in ("user", "patient")]
        patients = patient_choices(sb.sekmet_base) if "launch/patient" in granted else []
        return render_template_string(PAGE, title="Sign in to the sandbox EHR", method="post",
                                      action="/auth/authorize", hidden=keep, users=list(sb.users.values()),
                                      patients=patients, user=None, patient=None, go=False,
                                      encounter_field=False, button="Authorize",
                                      note=f"{grant.client.client_id} asks for: {' '.join(granted)}")

    @app.get("/launcher")
    def launcher() -> Any:
        args = request.args
        user = args.get("user") or sb.launcher_defaults.get("user")
        patient = args.get("patient") or sb.launcher_defaults.get("patient")
        if args.get("go") and args.get("user"):
            if args["user"] not in sb.users:
                return Response("Unknown user", status=400)
            browser = request.cookies.get(BROWSER_COOKIE) or secrets.token_urlsafe(24)
            resp = redirect(sb.launch_redirect(args["user"], args.get("patient") or None,
                                               args.get("encounter") or None, browser=browser),
                            code=302)
            resp.set_cookie(BROWSER_COOKIE, browser, httponly=True, samesite="Lax",
                            path="/auth/authorize")
            return resp
        return render_template_string(PAGE, title="Sandbox EHR: launch the app", method="get",
                                      action="/launcher", hidden=[], users=list(sb.users.values()),
                                      patients=patient_choices(sb.sekmet_base), user=user, patient=patient,
                                      go=True, encounter_field=True, button="Launch app",
                                      note=f"App launch URL: {sb.app_launch_url}")

    return app


def _narrow(ctx: LaunchContext, granted: list[str]) -> LaunchContext:
    """Drop the patient from the context when no launch scope was granted."""
    if "launch" in granted or "launch/patient" in granted:
        return ctx
    return LaunchContext(user=ctx.user, practitioner=ctx.practitioner, role=ctx.role,
                         need_patient_banner=ctx.need_patient_banner, smart_style_url=ctx.smart_style_url)


def _auth_error(err: OAuth2Error) -> Response:
    """Redirect errors to a validated redirect_uri; otherwise show them (RFC 6749 s4.1.2.1)."""
    if err.redirect_uri:
        params = {"error": err.error, "error_description": err.description or ""}
        state = request.values.get("state")
        if state:
            params["state"] = state
        sep = "&" if "?" in err.redirect_uri else "?"
        return redirect(f"{err.redirect_uri}{sep}{urlencode(params)}", code=302)
    log.info("authorize refused: %s", err.error)
    return Response(f"Authorization error: {err.error}: {err.description or ''}", status=400,
                    content_type="text/plain; charset=utf-8")
