"""Helpers to drive the real stack (the ``stack`` fixture lives in tests/conftest.py)."""

from __future__ import annotations

import re

import requests


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
