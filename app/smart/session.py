"""A launched session's token provider: server-side store, refresh before expiry and once on 401."""

from __future__ import annotations

import threading

import requests

from app.errors import AuthError
from app.fhir.client import TokenProvider
from app.smart.discovery import SmartConfiguration
from app.smart.tokens import TokenSet, refresh
from app.store.models import SessionStore

REFRESH_MARGIN_S = 30
# One refresh at a time per session in this process: a refresh token is single use (rotated), so
# two clients of one session (the page and the indexer thread) refreshing together would send the
# same token twice and the EHR would refuse the second (invalid_grant).
_SESSION_LOCKS: dict[str, threading.Lock] = {}
_SESSION_LOCKS_GUARD = threading.Lock()


def _session_lock(sid: str) -> threading.Lock:
    with _SESSION_LOCKS_GUARD:
        return _SESSION_LOCKS.setdefault(sid, threading.Lock())


class SessionTokens(TokenProvider):
    def __init__(self, store: SessionStore, sid: str, config: SmartConfiguration | None,
                 client_id: str, http: requests.Session, client_auth=None) -> None:  # type: ignore[no-untyped-def]
        self._store = store
        self._sid = sid
        self._config = config
        self._client_id = client_id
        self._http = http
        self._client_auth = client_auth  # callable(token_endpoint) -> (form fields, basic auth)
        self._lock = _session_lock(sid)
        self._last: str | None = None  # the access token this provider last handed out

    def current(self) -> TokenSet:
        loaded = self._store.load(self._sid)
        if loaded is None:
            raise AuthError("Your session has ended. Launch the app again from the EHR.", code="session_expired")
        return loaded[1]

    def token(self) -> str | None:
        tokens = self.current()
        if tokens.expires_within(REFRESH_MARGIN_S) and tokens.refresh_token:
            self._last = tokens.access_token
            self.refresh()
            tokens = self.current()
        elif tokens.expires_within(0):
            raise AuthError("Your session has expired. Launch the app again.", code="session_expired")
        self._last = tokens.access_token
        return tokens.access_token

    def refresh(self) -> bool:
        if self._config is None:
            return False
        with self._lock:
            loaded = self._store.load(self._sid)
            if loaded is None or not loaded[1].refresh_token:
                return False
            fhir_base, tokens = loaded
            if self._last is not None and tokens.access_token != self._last:
                return True  # another client of this session refreshed while we waited: use its tokens
            form, basic = (self._client_auth(self._config.token_endpoint) if self._client_auth
                           else (None, None))
            new = refresh(self._http, self._config, tokens, client_id=self._client_id,
                          client_auth=form, basic=basic)
            self._store.save(self._sid, fhir_base, new)
            return True

    @property
    def jti(self) -> str | None:
        try:
            return self.current().jti
        except AuthError:
            return None


def end_session(store: SessionStore, sid: str, config: SmartConfiguration | None, client_id: str,
                http: requests.Session, client_auth=None) -> bool:  # type: ignore[no-untyped-def]
    """End one launch session: revoke its tokens at the EHR (RFC 7009, when advertised), then
    delete the server-side copy. Returns whether the EHR accepted a revocation."""
    from app.smart.tokens import revoke

    loaded = store.load(sid)
    revoked = False
    if loaded is not None and config is not None:
        revoked = revoke(http, config, loaded[1], client_id=client_id, client_auth=client_auth) > 0
    store.delete(sid)
    return revoked
