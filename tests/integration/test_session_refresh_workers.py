"""Two workers (separate processes sharing the database) refreshing one session at the same
moment send the single-use refresh token once: the worker holding the session's refresh lease
refreshes, the other waits for the tokens it stores. On SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import replace
from pathlib import Path

import pytest

import app.smart.session as session
from app.errors import AuthError
from app.smart.session import SessionTokens
from app.smart.tokens import TokenSet
from app.store import migrate
from app.store.db import make_engine, make_sessionmaker
from app.store.models import SessionStore, Vault

SID = "sid-workers"
CONFIG = type("Config", (), {"token_endpoint": "https://ehr.test/token"})()


def _store(url: str) -> SessionStore:
    return SessionStore(make_sessionmaker(make_engine(url)), Vault(b"test-secret"), lifetime_s=3600)


def _worker(url: str, used_log: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    """One gunicorn worker: its own engine, its own in-process lock table (a fresh process)."""

    def slow_refresh(http, config, tokens, **_):  # type: ignore[no-untyped-def]
        with open(used_log, "a", encoding="utf-8") as fh:  # what the EHR received
            fh.write(tokens.refresh_token + "\n")
        time.sleep(0.5)  # the EHR answers slowly: the other worker asks meanwhile
        return replace(tokens, access_token=f"new-after-{tokens.refresh_token}",
                       refresh_token=f"{tokens.refresh_token}-rotated", expires_at=time.time() + 300)

    session.refresh = slow_refresh
    provider = SessionTokens(_store(url), SID, CONFIG, "app", http=None)  # type: ignore[arg-type]
    barrier.wait()
    try:
        results.put(provider.token())
    except AuthError as exc:  # pragma: no cover - reported to the test, which fails on it
        results.put(f"error:{exc.code}")


def _seed(url: str, expires_at: float) -> SessionStore:
    migrate.upgrade(make_engine(url))
    store = _store(url)
    store.save(SID, "https://ehr.test/fhir", TokenSet(access_token="old", scope="patient/*.rs",
                                                      expires_at=expires_at, refresh_token="r0"))
    return store


def test_two_workers_refresh_a_session_once(database_url, tmp_path: Path):
    store = _seed(database_url, expires_at=time.time() - 1)  # expired: both workers must refresh
    used_log = tmp_path / "refresh-tokens-sent.txt"
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(database_url, str(used_log), barrier, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    got = sorted(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert used_log.read_text().split() == ["r0"]  # one refresh at the EHR, not two with one token
    assert got == ["new-after-r0", "new-after-r0"]
    assert store.load(SID)[1].refresh_token == "r0-rotated"
    assert store.acquire_refresh(SID, 1.0)  # the lease was released with the new tokens


def test_a_lease_left_by_a_crashed_worker_expires(database_url):
    store = _seed(database_url, expires_at=time.time() + 300)
    assert store.acquire_refresh(SID, 0.2)
    assert not store.acquire_refresh(SID, 0.2)  # held
    time.sleep(0.3)
    assert store.acquire_refresh(SID, 0.2)  # the holder never came back: the lease lapsed


def test_waiting_on_a_refresh_that_never_finishes_is_a_clear_error(database_url, monkeypatch):
    store = _seed(database_url, expires_at=time.time() - 1)
    assert store.acquire_refresh(SID, 3600)  # another worker took the lease and hangs
    monkeypatch.setattr(session, "REFRESH_LEASE_S", 0.2)
    monkeypatch.setattr(session, "refresh", lambda *a, **k: pytest.fail("refreshed under another's lease"))
    provider = SessionTokens(store, SID, CONFIG, "app", http=None)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(AuthError) as err:
        provider.token()
    assert err.value.code == "refresh_timeout" and time.monotonic() - started < 10
    assert store.load(SID)[1].refresh_token == "r0"  # nothing lost: the tokens are untouched
