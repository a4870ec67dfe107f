"""Open-server mode: 'connect without auth' against a FHIR server without SMART (development only)."""

from __future__ import annotations

import re

import pytest
import requests

from app import create_app
from app.devstack import QuietHandler, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def open_app(stack, tmp_path_factory):
    """The app pointed straight at sekmet (no proxy, no SMART), like the public HAPI sandbox."""
    import threading

    from werkzeug.serving import make_server

    flask_app = create_app({"testing": True, "data_dir": tmp_path_factory.mktemp("open"),
                            "fhir_base_url": stack.sandbox.sekmet_base, "open_server": True,
                            "server_profile": "sekmet"})
    port = free_port()
    server = make_server("127.0.0.1", port, flask_app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(5)
    flask_app.extensions["smart_draft_web"].join_workers()


def test_connect_without_auth_opens_a_chart_marked_unauthenticated(open_app):
    http = requests.Session()
    form = http.get(open_app + "/connect", timeout=30)
    assert form.status_code == 200 and "Never use this with real patient data" in form.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    chart = http.post(open_app + "/connect", data={"patient": "pat-gen-01", "csrf_token": csrf}, timeout=60)
    assert chart.status_code == 200 and chart.url.rstrip("/") == open_app
    assert "Unauthenticated development connection" in chart.text


def test_connect_refuses_a_malformed_patient_id(open_app):
    http = requests.Session()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"',
                     http.get(open_app + "/connect", timeout=30).text).group(1)
    resp = http.post(open_app + "/connect", data={"patient": "../Patient?_id=x", "csrf_token": csrf}, timeout=30)
    assert resp.status_code == 400 and "bad_patient_id" in resp.text


def test_connect_is_off_by_default(stack):
    resp = requests.get(stack.app_url + "/connect", timeout=30)
    assert resp.status_code == 404 and "switched off" in resp.text
