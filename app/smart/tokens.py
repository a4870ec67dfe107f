"""Token exchange, refresh and id_token validation (SMART App Launch 2.2).

https://hl7.org/fhir/smart-app-launch/app-launch.html#obtain-access-token
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#scopes-for-requesting-identity-data

Tokens never leave this module except inside a ``TokenSet`` that the server
side store encrypts; ``repr`` hides them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.errors import AuthError, TemporaryUpstreamError
from app.retry import not_sent, policy
from app.smart.discovery import SmartConfiguration
from app.smart.scopes import Grants


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    scope: str
    expires_at: float
    refresh_token: str | None = field(default=None, repr=False)
    id_claims: dict[str, Any] = field(default_factory=dict)
    patient: str | None = None
    encounter: str | None = None
    need_patient_banner: bool = False
    smart_style_url: str | None = None
    jti: str | None = None

    @property
    def grants(self) -> Grants:
        return Grants.parse(self.scope)

    def expires_within(self, seconds: float) -> bool:
        return time.time() + seconds >= self.expires_at

    @property
    def fhir_user(self) -> str | None:
        value = self.id_claims.get("fhirUser")
        return value if isinstance(value, str) else None

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> TokenSet:
        return cls(**json.loads(raw))


def token_jti(access_token: str) -> str:
    """The ``jti`` of a JWT access token; for opaque tokens a hash (never the token)."""
    parts = access_token.split(".")
    if len(parts) == 3:
        try:
            padded = parts[1] + "=" * (-len(parts[1]) % 4)
            claims = json.loads(base64.urlsafe_b64decode(padded))
            if isinstance(claims, dict) and isinstance(claims.get("jti"), str):
                return claims["jti"][:128]
        except (ValueError, json.JSONDecodeError):
            pass
    return "sha256:" + hashlib.sha256(access_token.encode()).hexdigest()[:32]


def _post(session: requests.Session, url: str, data: dict[str, str], timeout: float,
          basic: tuple[str, str] | None = None) -> dict:
    # the app's retry policy; an authorization code or refresh token is single use, so only a
    # client_credentials request is repeated after an answer was lost (app/retry.py)
    safe = data.get("grant_type") == "client_credentials"
    try:
        resp = policy().run(
            lambda: session.post(url, data=data, headers={"Accept": "application/json"}, timeout=timeout,
                                 auth=basic),
            status_of=lambda r: r.status_code, headers_of=lambda r: r.headers, safe=safe,
            is_connect_error=not_sent, is_transient_error=lambda e: isinstance(e, requests.RequestException),
            deadline=time.monotonic() + 3 * timeout, what="token", method="POST")
    except requests.RequestException:
        raise TemporaryUpstreamError("The EHR's token endpoint is unreachable.", code="token_unreachable") from None
    if resp.status_code >= 500:
        raise TemporaryUpstreamError(
            f"The EHR's token endpoint failed (HTTP {resp.status_code}).", code="token_unavailable"
        )
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code != 200 or not isinstance(body, dict):
        # Only the OAuth error code (RFC 6749 section 5.2) is kept; the description may echo input.
        err = body.get("error") if isinstance(body, dict) else None
        code = err if isinstance(err, str) and err.isidentifier() else "token_refused"
        raise AuthError(f"The EHR refused the token request ({code}).", code=code)
    if not body.get("access_token") or not body.get("token_type") or "scope" not in body:
        raise AuthError("The EHR's token response lacks access_token, token_type or scope.", code="token_invalid")
    if str(body["token_type"]).lower() != "bearer":
        raise AuthError("The EHR issued a token type the app does not support.", code="token_invalid")
    return body


def validate_id_token(
    id_token: str,
    *,
    config: SmartConfiguration,
    client_id: str,
    nonce: str | None,
    session: requests.Session,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Verify signature (via jwks_uri), iss, aud, exp and nonce; return the claims."""
    if not config.jwks_uri:
        raise AuthError("The EHR publishes no jwks_uri to check the id_token.", code="id_token_unverifiable")
    try:
        resp = session.get(config.jwks_uri, timeout=timeout)
        resp.raise_for_status()
        keys = KeySet.import_key_set(resp.json())
    except (requests.RequestException, ValueError, JoseError):
        raise AuthError("Could not load the EHR's signing keys.", code="jwks_unavailable") from None
    try:
        token = jwt.decode(id_token, keys, algorithms=["RS256", "RS384", "ES256", "ES384"])
    except (JoseError, ValueError):
        raise AuthError("The id_token signature is invalid.", code="id_token_invalid") from None
    claims = dict(token.claims)
    expected = {
        "iss": {"essential": True, "value": config.issuer or config.fhir_base},
        "exp": {"essential": True},
        "sub": {"essential": True},
    }
    if nonce:
        expected["nonce"] = {"essential": True, "value": nonce}
    try:
        jwt.JWTClaimsRegistry(**expected).validate(claims)
    except JoseError:
        raise AuthError("The id_token failed validation (issuer, expiry or nonce).", code="id_token_invalid") from None
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if client_id not in auds:
        raise AuthError("The id_token was issued to another client.", code="id_token_invalid")
    return claims


def _token_set(body: dict, id_claims: dict[str, Any], previous: TokenSet | None = None) -> TokenSet:
    expires_in = body.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else 300.0
    access = str(body["access_token"])
    return TokenSet(
        access_token=access,
        scope=str(body.get("scope") or (previous.scope if previous else "")),
        expires_at=time.time() + lifetime,
        refresh_token=body.get("refresh_token") or (previous.refresh_token if previous else None),
        id_claims=id_claims or (previous.id_claims if previous else {}),
        patient=body.get("patient") or (previous.patient if previous else None),
        encounter=body.get("encounter") or (previous.encounter if previous else None),
        need_patient_banner=bool(body.get("need_patient_banner", previous.need_patient_banner if previous else False)),
        smart_style_url=body.get("smart_style_url") or (previous.smart_style_url if previous else None),
        jti=token_jti(access),
    )


def exchange_code(
    session: requests.Session,
    config: SmartConfiguration,
    *,
    code: str,
    code_verifier: str,
    redirect_uri: str,
    client_id: str,
    nonce: str | None,
    client_auth: dict[str, str] | None = None,
    basic: tuple[str, str] | None = None,
    timeout: float = 15.0,
) -> TokenSet:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    data.update(client_auth or ({} if basic else {"client_id": client_id}))
    body = _post(session, config.token_endpoint, data, timeout, basic)
    claims: dict[str, Any] = {}
    if body.get("id_token"):
        claims = validate_id_token(
            str(body["id_token"]), config=config, client_id=client_id, nonce=nonce, session=session
        )
    return _token_set(body, claims)


def refresh(
    session: requests.Session,
    config: SmartConfiguration,
    tokens: TokenSet,
    *,
    client_id: str,
    client_auth: dict[str, str] | None = None,
    basic: tuple[str, str] | None = None,
    timeout: float = 15.0,
) -> TokenSet:
    if not tokens.refresh_token:
        raise AuthError("The session expired and cannot be renewed. Launch the app again.", code="session_expired")
    data = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
    data.update(client_auth or ({} if basic else {"client_id": client_id}))
    body = _post(session, config.token_endpoint, data, timeout, basic)
    new = _token_set(body, {}, previous=tokens)
    # A narrower scope in the refresh response replaces the old one (grants may shrink).
    return replace(new, scope=str(body.get("scope") or tokens.scope))


def revoke(
    session: requests.Session,
    config: SmartConfiguration,
    tokens: TokenSet,
    *,
    client_id: str,
    client_auth: Callable[[str], tuple[dict[str, str] | None, tuple[str, str] | None]] | None = None,
    timeout: float = 10.0,
) -> int:
    """Revoke the refresh and access tokens at the EHR (RFC 7009); returns how many were accepted.

    Only when the EHR advertises a ``revocation_endpoint``. The refresh token goes first (RFC
    7009 s2.1: revoking it may revoke the access tokens of the same grant). ``client_auth``
    (endpoint -> form fields, basic auth) is called per request: a private_key_jwt assertion
    is single use. Best effort: the caller deletes the server-side copy whatever happens here,
    and a failure is never an error for a user who is signing out; no token is ever logged.
    """
    if not config.revocation_endpoint:
        return 0
    done = 0
    for value, hint in ((tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")):
        if not value:
            continue
        form, basic = client_auth(config.token_endpoint) if client_auth else (None, None)
        data = {"token": value, "token_type_hint": hint}
        data.update(form or ({} if basic else {"client_id": client_id}))
        try:
            resp = session.post(config.revocation_endpoint, data=data, timeout=timeout, auth=basic,
                                headers={"Accept": "application/json"})
        except requests.RequestException:
            continue
        done += resp.status_code == 200  # RFC 7009 s2.2: 200 also for an already invalid token
    return done
