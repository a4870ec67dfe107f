"""Launch parameters of SMART App Launch 2.2 (pure, no I/O).

https://hl7.org/fhir/smart-app-launch/app-launch.html#obtain-authorization-code

PKCE is always S256 (RFC 7636 section 4.2), even when the server omits
``code_challenge_methods_supported``. ``state`` carries 256 random bits.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from app.errors import LaunchError

STATE_TTL_S = 600


def normalise_base(url: str) -> str:
    return url.strip().rstrip("/")


def check_iss(iss: str | None, allowed: tuple[str, ...]) -> str:
    """Return the normalised ``iss`` if allowed; LaunchError otherwise (no request is made)."""
    if not iss:
        raise LaunchError("The launch did not say which EHR it came from (no iss).", code="no_iss")
    norm = normalise_base(iss)
    if norm not in {normalise_base(a) for a in allowed}:
        raise LaunchError(
            "This EHR is not registered with the app. Ask your administrator to add it to "
            "APP_ALLOWED_ISS.",
            code="unknown_iss",
        )
    return norm


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)[:96]
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


@dataclass(frozen=True)
class PendingLaunch:
    """What the app remembers between the redirect to authorize and the callback."""

    state: str
    code_verifier: str
    nonce: str
    iss: str
    created: float = field(default_factory=time.time)
    launch: str | None = None

    def expired(self, now: float | None = None) -> bool:
        return (now or time.time()) - self.created > STATE_TTL_S


def start_launch(iss: str, launch: str | None) -> PendingLaunch:
    verifier, _ = pkce_pair()
    return PendingLaunch(
        state=secrets.token_urlsafe(32),
        code_verifier=verifier,
        nonce=secrets.token_urlsafe(16),
        iss=iss,
        launch=launch,
    )


def challenge_for(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_url(
    authorization_endpoint: str,
    pending: PendingLaunch,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: str,
) -> str:
    """Build the authorize redirect. EHR launch adds ``launch``; standalone ``launch/patient``."""
    scope_list = scopes.split()
    if pending.launch:
        if "launch" not in scope_list:
            scope_list.insert(0, "launch")
        scope_list = [s for s in scope_list if s != "launch/patient"]
    else:
        scope_list = [s for s in scope_list if s != "launch"]
        if "launch/patient" not in scope_list:
            scope_list.insert(0, "launch/patient")
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(scope_list),
        "state": pending.state,
        "aud": pending.iss,
        "code_challenge": challenge_for(pending.code_verifier),
        "code_challenge_method": "S256",
        "nonce": pending.nonce,
    }
    if pending.launch:
        params["launch"] = pending.launch
    sep = "&" if "?" in authorization_endpoint else "?"
    return authorization_endpoint + sep + urlencode(params)


def check_state(pending: PendingLaunch | None, state: str | None) -> PendingLaunch:
    """The callback's ``state`` must match the one this browser session started, unexpired."""
    if pending is None or not state:
        raise LaunchError(
            "This sign-in was not started from this browser or has already been used. "
            "Launch the app again from the EHR.",
            code="bad_state",
        )
    if not secrets.compare_digest(pending.state, state):
        raise LaunchError("The sign-in response did not match. Launch again.", code="bad_state")
    if pending.expired():
        raise LaunchError("The sign-in took too long and expired. Launch again.", code="state_expired")
    return pending
