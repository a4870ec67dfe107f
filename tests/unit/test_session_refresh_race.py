"""Two clients of one session refreshing at once send the single-use refresh token once."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import app.smart.session as session
from app.smart.session import SessionTokens
from app.smart.tokens import TokenSet


class MemoryStore:
    def __init__(self, tokens: TokenSet) -> None:
        self.row = ("https://ehr.test/fhir", tokens)

    def load(self, sid):  # type: ignore[no-untyped-def]
        return self.row

    def save(self, sid, fhir_base, tokens):  # type: ignore[no-untyped-def]
        self.row = (fhir_base, tokens)
        self.lease = False

    lease = False

    def acquire_refresh(self, sid, lease_s):  # type: ignore[no-untyped-def]
        taken, self.lease = not self.lease, True
        return taken

    def release_refresh(self, sid):  # type: ignore[no-untyped-def]
        self.lease = False


def test_concurrent_refreshes_of_one_session_use_the_refresh_token_once(monkeypatch):
    store = MemoryStore(TokenSet(access_token="a0", scope="patient/*.rs", expires_at=time.time() - 1,
                                 refresh_token="r0"))
    used: list[str] = []
    gate = threading.Barrier(2)

    def fake_refresh(http, config, tokens, **_):  # type: ignore[no-untyped-def]
        used.append(tokens.refresh_token)
        time.sleep(0.2)  # the EHR answers slowly: the other client is waiting meanwhile
        n = len(used)
        return replace(tokens, access_token=f"a{n}", refresh_token=f"r{n}", expires_at=time.time() + 300)

    monkeypatch.setattr(session, "refresh", fake_refresh)
    config = type("Config", (), {"token_endpoint": "https://ehr.test/token"})()
    got: list[str | None] = []

    def client() -> None:
        provider = SessionTokens(store, "sid-race", config, "app", http=None)  # type: ignore[arg-type]
        gate.wait()
        got.append(provider.token())

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert used == ["r0"]  # one refresh at the EHR, not two with the same token
    assert got == ["a1", "a1"] and store.row[1].refresh_token == "r1"


def test_a_401_after_someone_else_refreshed_does_not_refresh_again(monkeypatch):
    store = MemoryStore(TokenSet(access_token="a0", scope="patient/*.rs", expires_at=time.time() + 300,
                                 refresh_token="r0"))
    calls: list[str] = []
    monkeypatch.setattr(session, "refresh", lambda http, config, tokens, **_: calls.append("x") or replace(
        tokens, access_token="fresh", refresh_token="r9"))
    config = type("Config", (), {"token_endpoint": "https://ehr.test/token"})()
    mine = SessionTokens(store, "sid-401", config, "app", http=None)  # type: ignore[arg-type]
    assert mine.token() == "a0"
    store.save("sid-401", "https://ehr.test/fhir", replace(store.row[1], access_token="a-other"))
    assert mine.refresh() and calls == []  # the 401 was for a token another client already replaced
    assert mine.token() == "a-other"
    assert mine.refresh() and calls == ["x"]  # a 401 on the current token does refresh
