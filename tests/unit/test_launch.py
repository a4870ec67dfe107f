import base64
import hashlib
from urllib.parse import parse_qs, urlparse

import pytest

from app.errors import LaunchError
from app.smart import launch


def test_unknown_iss_refused_without_request():
    with pytest.raises(LaunchError) as exc:
        launch.check_iss("https://evil.test/fhir", ("https://ehr.test/fhir",))
    assert exc.value.code == "unknown_iss"
    assert launch.check_iss("https://ehr.test/fhir/", ("https://ehr.test/fhir",)) == "https://ehr.test/fhir"


def test_authorize_url_ehr_launch_has_pkce_s256_state_aud_launch():
    pending = launch.start_launch("https://ehr.test/fhir", "L123")
    url = launch.authorize_url("https://ehr.test/auth/authorize", pending, client_id="c",
                               redirect_uri="https://app.test/callback", scopes="openid patient/Patient.r")
    q = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
    assert q["code_challenge_method"] == "S256"
    expected = base64.urlsafe_b64encode(hashlib.sha256(pending.code_verifier.encode()).digest()).rstrip(b"=").decode()
    assert q["code_challenge"] == expected
    assert q["aud"] == "https://ehr.test/fhir" and q["launch"] == "L123"
    assert q["scope"].split()[0] == "launch"
    assert len(q["state"]) >= 40  # 32 random bytes, base64url


def test_standalone_requests_launch_patient():
    pending = launch.start_launch("https://ehr.test/fhir", None)
    url = launch.authorize_url("https://ehr.test/auth", pending, client_id="c", redirect_uri="r",
                               scopes="launch openid")
    scope = parse_qs(urlparse(url).query)["scope"][0].split()
    assert "launch/patient" in scope and "launch" not in scope and "launch" not in parse_qs(urlparse(url).query)


def test_state_checks():
    pending = launch.start_launch("https://ehr.test/fhir", None)
    with pytest.raises(LaunchError):
        launch.check_state(None, pending.state)
    with pytest.raises(LaunchError):
        launch.check_state(pending, "other")
    old = launch.PendingLaunch(state="s", code_verifier="v", nonce="n", iss="i", created=0)
    with pytest.raises(LaunchError) as exc:
        launch.check_state(old, "s")
    assert exc.value.code == "state_expired"
    assert launch.check_state(pending, pending.state) is pending


def test_states_are_unpredictable():
    states = {launch.start_launch("i", None).state for _ in range(200)}
    assert len(states) == 200
