"""A launched session's token provider: server-side store, refresh before expiry and once on 401."""

from __future__ import annotations

import threading
import time

import requests

from app.errors import AuthError
from app.fhir.client import TokenProvider
from app.smart.discovery import SmartConfiguration
from app.smart.tokens import TokenSet, refresh
from app.store.models import SessionStore

REFRESH_MARGIN_S = 30
# One refresh at a time per session: a refresh token is single use (rotated), so two clients of
# one session refreshing together would send the same token twice and the EHR would refuse the
# second (invalid_grant). In a process, a lock per session (the page and the indexer thread);
# across workers and hosts, a lease on the session's row (``SessionStore.acquire_refresh``): the
# worker holding it refreshes, the others wait for the tokens it stores.
REFRESH_LEASE_S = 60.0  # longer than a refresh's whole retry budget (3 x 15 s in app.smart.tokens)
LEASE_POLL_S = 0.05
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
            seen = self._last if self._last is not None else loaded[1].access_token
            if loaded[1].access_token != seen:
                return True  # another client of this session refreshed while we waited: use its tokens
            deadline = time.monotonic() + REFRESH_LEASE_S + 5
            while not self._store.acquire_refresh(self._sid, REFRESH_LEASE_S):
                # another worker is refreshing this session: wait for the tokens it stores
                if time.monotonic() > deadline:
                    raise AuthError("The EHR did not renew your session in time. Try again.",
                                    code="refresh_timeout")
                time.sleep(LEASE_POLL_S)
                loaded = self._store.load(self._sid)
                if loaded is None:
                    return False
                if loaded[1].access_token != seen:
                    return True
            try:
                loaded = self._store.load(self._sid)  # as of taking the lease
                if loaded is None or not loaded[1].refresh_token:
                    return False
                fhir_base, tokens = loaded
                if tokens.access_token != seen:
                    return True  # refreshed by another worker between our read and the lease
                form, basic = (self._client_auth(self._config.token_endpoint) if self._client_auth
                               else (None, None))
                new = refresh(self._http, self._config, tokens, client_id=self._client_id,
                              client_auth=form, basic=basic)
                self._store.save(self._sid, fhir_base, new)  # releases the lease
                return True
            finally:
                self._store.release_refresh(self._sid)  # on failure too; a no-op after save

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
