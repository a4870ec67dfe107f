"""Sessions, revocation and launch ids on the real stack (issue 11, findings 6 and 8).

Finding 6: a re-launch left the earlier session's tokens and chart alive; after Sign out the
earlier cookie still opened the previous patient's chart; the EHR tokens kept working.
Finding 8: a launch URL from the launcher completed in two unrelated browsers, and a signed-in
clinician who opened another user's launch URL was switched to that user (login CSRF).
"""

from __future__ import annotations

import pytest
import requests
from sqlalchemy import select

from app.store.models import LaunchSession
from tests.integration.conftest import csrf_of, launch

pytestmark = pytest.mark.integration


def _sids(stack) -> set[str]:  # type: ignore[no-untyped-def]
    s = stack.flask_app.extensions["smart_draft"]
    with s.maker() as db:
        return set(db.scalars(select(LaunchSession.id)).all())


def _tokens(stack, sid: str):  # type: ignore[no-untyped-def]
    loaded = stack.flask_app.extensions["smart_draft"].sessions.load(sid)
    assert loaded is not None
    return loaded[1]


def _works_at_ehr(stack, access_token: str, patient: str) -> int:  # type: ignore[no-untyped-def]
    return requests.get(f"{stack.sandbox.fhir_base}/Patient/{patient}", timeout=30,
                        headers={"Authorization": f"Bearer {access_token}",
                                 "Accept": "application/fhir+json"}).status_code


def _refresh_works(stack, tokens) -> bool:  # type: ignore[no-untyped-def]
    if not tokens.refresh_token:
        return False
    resp = requests.post(stack.sandbox.token_endpoint, timeout=30, data={
        "grant_type": "refresh_token", "refresh_token": tokens.refresh_token,
        "client_id": stack.flask_app.extensions["smart_draft"].settings.client_id})
    return resp.status_code == 200


def test_the_sandbox_advertises_a_revocation_endpoint(stack) -> None:  # type: ignore[no-untyped-def]
    conf = requests.get(f"{stack.sandbox.fhir_base}/.well-known/smart-configuration", timeout=30).json()
    assert conf["revocation_endpoint"].endswith("/auth/revoke")


def test_relaunch_ends_the_earlier_session_and_sign_out_revokes_the_tokens(stack) -> None:  # type: ignore[no-untyped-def]
    before = _sids(stack)
    http, first = launch(stack, user="prac-gp-1", patient="pat-gen-05")
    assert first.status_code == 200
    [sid1] = _sids(stack) - before
    tokens1 = _tokens(stack, sid1)
    assert _works_at_ehr(stack, tokens1.access_token, "pat-gen-05") == 200
    old_cookies = http.cookies.copy()

    # re-launch in the same browser, another patient
    resp = http.get(stack.launch_link(user="prac-gp-1", patient="pat-gen-01"), timeout=120)
    assert resp.status_code == 200
    [sid2] = _sids(stack) - before - {sid1}
    assert sid1 not in _sids(stack)  # the earlier session's tokens are gone from the app
    assert _works_at_ehr(stack, tokens1.access_token, "pat-gen-05") == 401  # revoked at the EHR
    assert not _refresh_works(stack, tokens1)
    replay = requests.Session()
    replay.cookies.update(old_cookies)
    assert replay.get(stack.app_url + "/", timeout=60).status_code == 401  # the old cookie is dead

    tokens2 = _tokens(stack, sid2)
    assert _works_at_ehr(stack, tokens2.access_token, "pat-gen-01") == 200
    out = http.post(stack.app_url + "/logout", data={"csrf_token": csrf_of(resp.text)}, timeout=60)
    assert out.status_code == 200
    assert sid2 not in _sids(stack)
    assert _works_at_ehr(stack, tokens2.access_token, "pat-gen-01") == 401
    assert not _refresh_works(stack, tokens2)
    assert http.get(stack.app_url + "/", timeout=60).status_code == 401
    assert replay.get(stack.app_url + "/", timeout=60).status_code == 401


def test_a_launch_url_works_once_and_only_in_the_browser_that_opened_the_launcher(stack) -> None:  # type: ignore[no-untyped-def]
    owner = requests.Session()
    hop = owner.get(stack.launch_link(user="prac-gp-1", patient="pat-gen-05"), timeout=60,
                    allow_redirects=False)
    assert hop.status_code == 302
    launch_url = hop.headers["Location"]
    assert "launch=" in launch_url

    other = requests.Session()  # another browser, e.g. a signed-in clinician lured to the URL
    stolen = other.get(launch_url, timeout=120)
    assert stolen.status_code >= 400 and 'id="count-read"' not in stolen.text  # no chart
    assert "sid" not in str(other.cookies.get_dict())

    mine = owner.get(launch_url, timeout=120)
    assert mine.status_code == 200 and 'id="count-read"' in mine.text  # the chart
    again = owner.get(launch_url, timeout=120)  # single use, even in the right browser
    assert again.status_code >= 400
