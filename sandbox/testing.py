"""Helpers for tests that drive the sandbox like a SMART app would (no browser).

PKCE per RFC 7636 s4.1-4.2 (S256); the authorization request per SMART App
Launch 2.2.0 "Obtain authorization code"; backend assertions per SMART 2.2.0
"Backend Services" (RFC 7523 s2.2).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import requests
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from sandbox.server import Sandbox


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class AuthorizeResult:
    """Where the authorize endpoint sent the browser, parsed."""

    status: int
    location: str
    params: dict[str, str]
    verifier: str
    body: str = ""


def authorize(sb: Sandbox, *, client_id: str, redirect_uri: str, scope: str, launch: str | None = None,
              aud: str | None = None, challenge_method: str | None = "S256", with_challenge: bool = True,
              extra: dict[str, str] | None = None, form: dict[str, str] | None = None,
              cookies: Any = None) -> AuthorizeResult:
    """GET /auth/authorize (or POST it with ``form`` for the standalone picker); no redirects followed.

    ``cookies``: the browser's cookies from the launcher (a launcher-made launch is bound to them).
    """
    verifier, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
              "scope": scope, "state": secrets.token_urlsafe(16), "aud": aud or sb.fhir_base}
    if with_challenge:
        params["code_challenge"] = challenge if challenge_method != "plain" else verifier
    if challenge_method:
        params["code_challenge_method"] = challenge_method
    if launch:
        params["launch"] = launch
    params.update(extra or {})
    url = sb.base_url + "/auth/authorize"
    if form is not None:
        resp = requests.post(url, data={**params, **form}, allow_redirects=False, timeout=30,
                             cookies=cookies)
    else:
        resp = requests.get(url, params=params, allow_redirects=False, timeout=30, cookies=cookies)
    location = resp.headers.get("Location", "")
    got = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
    return AuthorizeResult(resp.status_code, location, got, verifier, resp.text)


def exchange(sb: Sandbox, code: str, *, client_id: str, redirect_uri: str,
             verifier: str | None) -> requests.Response:
    """POST grant_type=authorization_code as a public client."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": client_id}
    if verifier is not None:
        data["code_verifier"] = verifier
    return requests.post(sb.token_endpoint, data=data, timeout=30)


def ehr_launch(sb: Sandbox, *, client_id: str, redirect_uri: str, scope: str, user: str = "prac-onc-1",
               patient: str | None = "pat-onc-01") -> dict[str, Any]:
    """EHR launch end to end: launch value, authorize with PKCE, code exchange; the token response."""
    launch = sb.create_launch(user, patient)
    res = authorize(sb, client_id=client_id, redirect_uri=redirect_uri, scope=scope, launch=launch)
    if "code" not in res.params:
        raise AssertionError(f"no code: {res.status} {res.params}")
    resp = exchange(sb, res.params["code"], client_id=client_id, redirect_uri=redirect_uri,
                    verifier=res.verifier)
    resp.raise_for_status()
    return dict(resp.json())


def client_assertion(key: RSAKey | ECKey, client_id: str, token_endpoint: str, alg: str = "RS384",
                     jti: str | None = None) -> str:
    """A private_key_jwt client assertion."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_endpoint, "iat": now, "exp": now + 240,
              "jti": jti or secrets.token_urlsafe(16)}
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def backend_token(sb: Sandbox, key: RSAKey | ECKey, *, client_id: str, scope: str, alg: str = "RS384",
                  jti: str | None = None) -> requests.Response:
    """POST grant_type=client_credentials with a JWT assertion."""
    data = {"grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion(key, client_id, sb.token_endpoint, alg, jti)}
    return requests.post(sb.token_endpoint, data=data, timeout=30)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


__all__ = ["AuthorizeResult", "authorize", "backend_token", "bearer", "client_assertion", "ehr_launch",
           "exchange", "pkce_pair", "urlencode"]
