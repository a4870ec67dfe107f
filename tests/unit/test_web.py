"""Flask test client: launch refusals, headers, CSRF, health. No outbound request for a bad iss."""

import pytest
import responses

from app import create_app


@pytest.fixture
def client(tmp_path):
    app = create_app({"testing": True, "data_dir": tmp_path, "allowed_iss": "https://ehr.test/fhir"})
    return app.test_client()


@responses.activate
def test_unknown_iss_makes_no_request_and_explains(client):
    resp = client.get("/launch?iss=https://evil.test/fhir&launch=abc")
    assert resp.status_code == 400
    assert b"not registered" in resp.data and b"unknown_iss" in resp.data
    assert len(responses.calls) == 0
    assert "Location" not in resp.headers


@responses.activate
def test_missing_iss_explains(client):
    resp = client.get("/launch")
    assert resp.status_code == 400 and b"no_iss" in resp.data
    assert len(responses.calls) == 0


def test_security_headers(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    csp = resp.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "frame-ancestors 'self' https://ehr.test" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_post_without_csrf_refused(client):
    resp = client.post("/api/drafts", json={"task": "summary"})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "csrf_failed"


def test_chart_without_session_asks_to_launch(client):
    resp = client.get("/")
    assert resp.status_code == 401 and b"Launch the app again" in resp.data


def test_callback_error_consent_refused(client):
    resp = client.get("/callback?error=access_denied&state=x")
    assert resp.status_code == 400 and b"consent" in resp.data


def test_metrics_and_jwks(client):
    assert client.get("/metrics").status_code == 401  # admin session or scrape token (issue 11)
    assert client.get("/.well-known/jwks.json").get_json() == {"keys": []}


def test_expired_sessions_lose_their_tokens_and_state(tmp_path):
    import time as _time

    from app.smart.tokens import TokenSet
    from app.web.state import LaunchState

    app = create_app({"testing": True, "data_dir": tmp_path, "allowed_iss": "https://ehr.test/fhir",
                      "session_lifetime_s": 1})
    services = app.extensions["smart_draft"]
    web = app.extensions["smart_draft_web"]
    services.sessions.save("s1", "https://ehr.test/fhir", TokenSet(access_token="at", scope="", expires_at=0))
    web.put(LaunchState(sid="s1", fhir_base="https://ehr.test/fhir", config=None, patient_id="p",
                        user_reference=None, role="clinician"))
    web.put(LaunchState(sid="s2", fhir_base="https://ehr.test/fhir", config=None, patient_id="p",
                        user_reference=None, role="clinician", unauthenticated=True, created=_time.time() - 5))
    _time.sleep(1.1)
    app.test_client().get("/healthz")
    assert web.get("s1") is None and web.get("s2") is None
    assert services.sessions.purge_expired() == 0  # already deleted by the request
    from sqlalchemy import func, select

    from app.store.models import LaunchSession

    with services.maker() as db:
        assert db.scalar(select(func.count()).select_from(LaunchSession)) == 0
