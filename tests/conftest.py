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
