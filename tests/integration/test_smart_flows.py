"""SMART flows of the app against the sandbox over real HTTP: standalone launch, refresh, secrets."""

from __future__ import annotations

import html
import json
import logging
import re
import time
from dataclasses import replace
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from app.web.context import client_for
from tests.integration.conftest import csrf_of, launch, wait_index
from tests.integration.test_app_launch import session_payload

pytestmark = pytest.mark.integration


def state_of(stack, http):
    sid = session_payload(http.cookies.get("sda_session"))["sid"]
    state = stack.flask_app.extensions["smart_draft_web"].get(sid)
    assert state is not None
    return state


def stored_tokens(stack, sid):
    return stack.flask_app.extensions["smart_draft"].sessions.load(sid)[1]


def test_standalone_launch_with_the_ehr_patient_picker(stack):
    http = requests.Session()
    page = http.get(stack.app_url + "/launch", timeout=60)  # no iss, no launch: standalone
    assert page.status_code == 200 and urlparse(page.url).path == "/auth/authorize"
    sent = parse_qs(urlparse(page.url).query)
    assert "launch/patient" in sent["scope"][0].split() and "launch" not in sent["scope"][0].split()
    assert sent["code_challenge_method"] == ["S256"] and sent["aud"] == [stack.sandbox.fhir_base]
    hidden = {html.unescape(k): html.unescape(v)
              for k, v in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page.text)}
    assert 'name="patient"' in page.text  # the picker
    chart = http.post(urlparse(page.url)._replace(query="").geturl(),
                      data={**hidden, "user": "prac-gp-1", "patient": "pat-gen-02"}, timeout=60)
    assert chart.status_code == 200 and chart.url.rstrip("/") == stack.app_url
    state = state_of(stack, http)
    assert state.patient_id == "pat-gen-02" and state.user_reference == "Practitioner/prac-gp-1"


def test_refresh_before_expiry_rotates_the_refresh_token(stack):
    http, _ = launch(stack)
    state = state_of(stack, http)
    services = stack.flask_app.extensions["smart_draft"]
    before = stored_tokens(stack, state.sid)
    services.sessions.save(state.sid, state.fhir_base, replace(before, expires_at=time.time() - 1))
    with stack.flask_app.app_context():
        patient = client_for(state).read("Patient", state.patient_id)
    assert patient["id"] == state.patient_id
    after = stored_tokens(stack, state.sid)
    assert after.access_token != before.access_token and after.expires_at > time.time()
    assert after.refresh_token and after.refresh_token != before.refresh_token  # rotated
    # the old refresh token is dead at the EHR
    old = requests.post(stack.sandbox.token_endpoint, data={
        "grant_type": "refresh_token", "refresh_token": before.refresh_token,
        "client_id": "smart-draft-agent"}, timeout=30)
    assert old.status_code == 400 and old.json()["error"] == "invalid_grant"


def test_a_401_refreshes_once_and_retries(stack):
    http, _ = launch(stack)
    state = state_of(stack, http)
    services = stack.flask_app.extensions["smart_draft"]
    before = stored_tokens(stack, state.sid)
    services.sessions.save(state.sid, state.fhir_base, replace(before, access_token="revoked-by-the-ehr"))
    with stack.flask_app.app_context():
        assert client_for(state).read("Patient", state.patient_id)["id"] == state.patient_id
    assert stored_tokens(stack, state.sid).access_token not in ("revoked-by-the-ehr", before.access_token)


def test_logout_deletes_the_server_side_tokens(stack):
    http, resp = launch(stack)
    state = state_of(stack, http)
    out = http.post(stack.app_url + "/logout", data={"csrf_token": csrf_of(resp.text)}, timeout=30)
    assert out.status_code == 200
    assert stack.flask_app.extensions["smart_draft"].sessions.load(state.sid) is None
    assert http.get(stack.app_url + "/", timeout=30).status_code == 401


def test_no_token_code_or_secret_reaches_logs_pages_cookies_or_errors(stack, caplog):
    caplog.set_level(logging.DEBUG)
    http = requests.Session()
    resp = http.get(stack.launch_link(), timeout=120)
    code = next(parse_qs(urlparse(r.headers["Location"]).query)["code"][0]
                for r in resp.history if "code=" in r.headers.get("Location", ""))
    state = state_of(stack, http)
    wait_index(stack, http)
    pages = [resp.text]
    token = csrf_of(resp.text)
    pages.append(http.post(stack.app_url + "/api/drafts", json={"task": "summary"},
                           headers={"X-CSRF-Token": token}, timeout=300).text)
    pages.append(http.post(stack.app_url + "/api/drafts", json={"task": "bogus"},
                           headers={"X-CSRF-Token": token}, timeout=60).text)
    pages.append(http.get(stack.app_url + "/callback", params={"code": code, "state": "x"}, timeout=30).text)
    pages.append(http.get(stack.app_url + "/api/index-status", timeout=30).text)
    tokens = stored_tokens(stack, state.sid)
    settings = stack.flask_app.extensions["smart_draft"].settings
    secrets = {"access token": tokens.access_token, "refresh token": tokens.refresh_token,
               "authorization code": code, "secret key": settings.secret_key.get_secret_value()}
    # the app's records; not the EHR's (sandbox.*) nor urllib3's DEBUG lines of the test's own client
    app_logs = "\n".join(f"{r.getMessage()} {json.dumps(r.args, default=str)}" for r in caplog.records
                         if not r.name.startswith(("sandbox", "urllib3")))
    cookies = json.dumps({c.name: c.value for c in http.cookies})
    decoded = json.dumps(session_payload(http.cookies.get("sda_session")))
    for what, value in secrets.items():
        assert value and len(value) > 8
        for where, text in (("logs", app_logs), ("pages", "\n".join(pages)), ("cookies", cookies + decoded)):
            assert value not in text, f"the {what} leaked into {where}"
    db = (settings.data_dir / "app.db").read_bytes()
    assert tokens.access_token.encode() not in db and tokens.refresh_token.encode() not in db  # encrypted
