"""One real stack (sekmet-fhir + SMART authorization server + the app) per test session."""

from __future__ import annotations

import re

import pytest
import requests

from app.devstack import start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("stack"), token_lifetime=120)
    yield s
    s.stop()


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def launch(stack, user="prac-onc-1", patient="pat-onc-01"):
    """Drive the EHR launch like a browser; returns (session, chart response)."""
    http = requests.Session()
    resp = http.get(stack.launch_link(user=user, patient=patient), timeout=120)
    return http, resp


def wait_index(stack, http, timeout=300):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = http.get(stack.app_url + "/api/index-status", timeout=30).json()
        if body["progress"]["state"] in ("ready", "failed"):
            return body
        time.sleep(0.3)
    raise AssertionError("index not ready")
