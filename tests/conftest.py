"""Shared fixtures. Tests run offline: no model or data is downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("APP_TESTING", "true")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """One real stack (sekmet-fhir + SMART authorization server + the app) per test session."""
    from app.devstack import start_stack

    s = start_stack(tmp_path_factory.mktemp("stack"), token_lifetime=120)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A real PostgreSQL server on 127.0.0.1 for the session (tests/pgserver.py); skips without one."""
    from tests.pgserver import start_server, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = start_server()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh empty database: SQLite in tmp_path, and (second run) PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    return request.getfixturevalue("postgres").new_database()
