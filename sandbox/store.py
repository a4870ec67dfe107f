"""In-memory OAuth state of the sandbox: launches, codes, tokens (thread-safe).

Models implement authlib's mixins. Rules enforced here:
- codes are single use; a replayed code revokes every token issued from it
  (RFC 6749 s4.1.2, RFC 9700 s4.5);
- refresh tokens rotate: the old one is revoked on use (RFC 9700 s4.14.2);
- launch values are opaque, bound to an EHR context, and expire
  (SMART App Launch 2.2.0, "EHR launch", launch parameter); they are single use
  and, when the launcher made them, bound to the browser that opened it (a launch
  URL opened in another browser is refused: no login CSRF).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from authlib.oauth2.rfc6749 import TokenMixin
from authlib.oidc.core import AuthorizationCodeMixin

CODE_LIFETIME = 120
LAUNCH_LIFETIME = 3600


@dataclass(frozen=True)
class LaunchContext:
    """The EHR session context a launch or a standalone pick stands for."""

    user: str
    practitioner: str
    role: str
    patient: str | None = None
    encounter: str | None = None
    need_patient_banner: bool = True
    smart_style_url: str | None = None

    def get_user_id(self) -> str:
        return self.user


@dataclass
class AuthCode(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    context: LaunchContext
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def is_expired(self) -> bool:
        return time.time() > self.auth_time + CODE_LIFETIME


@dataclass
class TokenRecord(TokenMixin):  # type: ignore[misc]
    """One issued access token (by ``jti``) and its refresh token, if any."""

    jti: str
    client_id: str
    grant_type: str
    scope: str
    context: LaunchContext | None
    family: str  # the code (or jti for client_credentials) the token chain started from
    expires_at: float
    refresh_token: str | None = None
    revoked: bool = False

    def check_client(self, client: object) -> bool:
        return getattr(client, "client_id", None) == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - time.time())

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> LaunchContext | None:
        return self.context


class MemoryStore:
    """Dicts behind one lock; fine for a single-process sandbox."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.launches: dict[str, tuple[LaunchContext, float, str | None]] = {}
        self.codes: dict[str, AuthCode] = {}
        self.used_codes: set[str] = set()
        self.tokens: dict[str, TokenRecord] = {}  # by jti
        self.refresh: dict[str, TokenRecord] = {}  # by refresh token
        self.jtis: dict[str, float] = {}  # client assertion jti -> expiry

    # launches ------------------------------------------------------------
    def add_launch(self, ctx: LaunchContext, browser: str | None = None) -> str:
        """A new launch value; ``browser`` binds it to the launcher's browser (its cookie)."""
        launch = secrets.token_urlsafe(24)
        with self._lock:
            now = time.time()
            self.launches = {k: v for k, v in self.launches.items() if v[1] >= now}
            self.launches[launch] = (ctx, now + LAUNCH_LIFETIME, browser)
        return launch

    def take_launch(self, launch: str, browser: str | None) -> LaunchContext | None:
        """The launch's context, once: used up by this call. None when unknown, expired, used,
        or bound to another browser (then it stays unused for its own browser)."""
        with self._lock:
            item = self.launches.get(launch)
            if item is None or time.time() > item[1]:
                return None
            if item[2] is not None and item[2] != browser:
                return None
            del self.launches[launch]
        return item[0]

    # codes ---------------------------------------------------------------
    def add_code(self, code: AuthCode) -> None:
        with self._lock:
            self.codes[code.code] = code

    def take_code(self, code: str, client_id: str) -> AuthCode | None:
        """The code if valid for this client; a replay revokes its token family."""
        with self._lock:
            if code in self.used_codes:
                for rec in self.tokens.values():
                    if rec.family == code:
                        rec.revoked = True
                return None
            item = self.codes.get(code)
        if item is None or item.client_id != client_id or item.is_expired():
            return None
        return item

    def spend_code(self, code: str) -> None:
        with self._lock:
            self.codes.pop(code, None)
            self.used_codes.add(code)

    # tokens --------------------------------------------------------------
    def add_token(self, rec: TokenRecord) -> None:
        with self._lock:
            self.tokens[rec.jti] = rec
            if rec.refresh_token:
                self.refresh[rec.refresh_token] = rec

    def by_refresh(self, refresh_token: str) -> TokenRecord | None:
        with self._lock:
            rec = self.refresh.get(refresh_token)
        return rec if rec is not None and not rec.revoked else None

    def revoke_refresh(self, refresh_token: str) -> None:
        with self._lock:
            rec = self.refresh.pop(refresh_token, None)
            if rec is not None:
                rec.refresh_token = None

    def revoke_family(self, family: str) -> int:
        """Revoke every access and refresh token issued from one grant (RFC 7009 s2.1)."""
        with self._lock:
            recs = [r for r in self.tokens.values() if r.family == family]
            for rec in recs:
                rec.revoked = True
                if rec.refresh_token:
                    self.refresh.pop(rec.refresh_token, None)
        return len(recs)

    def active(self, jti: str) -> TokenRecord | None:
        with self._lock:
            rec = self.tokens.get(jti)
        return rec if rec is not None and not rec.revoked else None

    def use_assertion_jti(self, key: str, expires_at: float) -> bool:
        """Record a client-assertion ``jti``; False when it was seen before (RFC 7523 s3)."""
        now = time.time()
        with self._lock:
            for k in [k for k, exp in self.jtis.items() if exp < now]:
                del self.jtis[k]
            if key in self.jtis:
                return False
            self.jtis[key] = max(expires_at, now + 600)
            return True
