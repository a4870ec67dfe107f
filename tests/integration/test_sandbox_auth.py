"""The sandbox's SMART authorization server behaves like a strict EHR (SMART App Launch 2.2.0)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from sandbox import Sandbox
from sandbox.fhirstore import FIXTURE_BUNDLES, free_port
from sandbox.testing import authorize, backend_token, bearer, ehr_launch, exchange

pytestmark = pytest.mark.integration

APP = "smart-draft-agent"
SCOPE = ("launch openid fhirUser online_access patient/Patient.r patient/Condition.rs "
         "patient/DocumentReference.rs user/DocumentReference.c user/Provenance.c")
RSA_KEY = RSAKey.generate_key(2048, parameters={"kid": "test-rs384"})
EC_KEY = ECKey.generate_key("P-384", parameters={"kid": "test-es384"})


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    app_port = free_port()
    redirect = f"http://127.0.0.1:{app_port}/callback"
    s = Sandbox(tmp_path_factory.mktemp("sandbox-auth"), bundles_dir=FIXTURE_BUNDLES, token_lifetime=2,
                app_launch_url=f"http://127.0.0.1:{app_port}/launch",
                clients=[{"client_id": APP, "redirect_uris": [redirect]},
                         {"client_id": "smart-draft-agent-readonly", "redirect_uris": [redirect]},
                         {"client_id": "draft-agent-backend",
                          "jwks": {"keys": [RSA_KEY.as_dict(private=False), EC_KEY.as_dict(private=False)]}}])
    s.redirect = redirect  # type: ignore[attr-defined]
    s.start()
    yield s
    s.stop()


def test_smart_configuration(sb):
    doc = requests.get(sb.fhir_base + "/.well-known/smart-configuration", timeout=10).json()
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert {"launch-ehr", "launch-standalone", "permission-v2", "sso-openid-connect",
            "context-style", "client-confidential-asymmetric"} <= set(doc["capabilities"])
    assert doc["token_endpoint"] == sb.token_endpoint
    assert doc["issuer"] == sb.fhir_base
    assert requests.get(doc["jwks_uri"], timeout=10).json()["keys"][0]["kty"] == "RSA"


def test_full_ehr_launch(sb):
    resp = requests.get(sb.launch_link("prac-onc-1", "pat-onc-01"), allow_redirects=False, timeout=10)
    assert resp.status_code == 302
    loc = urlparse(resp.headers["Location"])
    q = {k: v[0] for k, v in parse_qs(loc.query).items()}
    assert loc.path == "/launch" and q["iss"] == sb.fhir_base
    res = authorize(sb, client_id=APP, redirect_uri=sb.redirect, scope=SCOPE, launch=q["launch"],
                    extra={"nonce": "n-123"}, cookies=resp.cookies)  # the launcher's browser
    assert res.status == 302 and res.location.startswith(sb.redirect), res.body
    tok = exchange(sb, res.params["code"], client_id=APP, redirect_uri=sb.redirect, verifier=res.verifier)
    assert tok.status_code == 200, tok.text
    body = tok.json()
    assert body["patient"] == "pat-onc-01" and body["need_patient_banner"] is True
    assert body["smart_style_url"].endswith("/smart-style.json")
    assert body["expires_in"] == 2 and body["refresh_token"]
    assert set(body["scope"].split()) == set(SCOPE.split())
    keys = KeySet.import_key_set(requests.get(sb.base_url + "/auth/jwks", timeout=10).json())
    idt = jwt.decode(body["id_token"], keys, algorithms=["RS256"]).claims
    assert idt["iss"] == sb.fhir_base and idt["aud"] == APP and idt["nonce"] == "n-123"
    assert idt["fhirUser"] == f"{sb.fhir_base}/Practitioner/prac-onc-1"
    at = jwt.decode(body["access_token"], keys, algorithms=["RS256"]).claims
    assert at["patient"] == "pat-onc-01" and at["client_id"] == APP and at["jti"]
    r = requests.get(f"{sb.fhir_base}/Patient/pat-onc-01", headers=bearer(body["access_token"]), timeout=10)
    assert r.status_code == 200 and r.json()["id"] == "pat-onc-01"
    assert requests.get(sb.style_url, timeout=10).json()["color_highlight"]


def test_standalone_launch_picker(sb):
    scope = "launch/patient openid fhirUser patient/Patient.r"
    page = authorize(sb, client_id=APP, redirect_uri=sb.redirect, scope=scope)
    assert page.status == 200 and "pat-canary" in page.body and "prac-nurse-1" in page.body
    res = authorize(sb, client_id=APP, redirect_uri=sb.redirect, scope=scope,
                    form={"user": "prac-nurse-1", "patient": "pat-onc-02"})
    body = exchange(sb, res.params["code"], client_id=APP, redirect_uri=sb.redirect,
                    verifier=res.verifier).json()
    assert body["patient"] == "pat-onc-02" and "refresh_token" not in body


def test_wrong_redirect_uri_is_not_followed(sb):
    res = authorize(sb, client_id=APP, redirect_uri="http://127.0.0.1:1/evil", scope=SCOPE,
                    launch=sb.create_launch("prac-onc-1", "pat-onc-01"))
    assert res.status == 400 and not res.location


def test_wrong_redirect_uri_at_token_endpoint(sb):
    res = authorize(sb, client_id=APP, redirect_uri=sb.redirect, scope=SCOPE,
                    launch=sb.create_launch("prac-onc-1", "pat-onc-01"))
    r = exchange(sb, res.params["code"], client_id=APP, redirect_uri=sb.redirect + "x", verifier=res.verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("kwargs", [{"with_challenge": False, "challenge_method": None},
                                    {"challenge_method": "plain"}])
def test_pkce_required_and_s256_only(sb, kwargs):
    res = authorize(sb, client_id=APP, redirect_uri=sb.redirect, scope=SCOPE,
                    launch=sb.create_launch("prac-onc-1", "pat-onc-01"), **kwargs)
    assert res.status == 302 and res.params["error"] == "invalid_request" and "code" not in res.params


def test_wrong_aud_refused(sb):
    res = authorize(sb, client_id=APP, redirect_uri=sb.redirect, scope=SCOPE, aud="http://127.0.0.1:1/fhir",
                    launch=sb.create_launch("prac-onc-1", "pat-onc-01"))
    assert res.params["error"] == "invalid_request"


@pytest.mark.parametrize("verifier", [None, "wrong-verifier-" + "x" * 40])
def test_missing_or_wrong_verifier(sb, verifier):
    res = authorize(sb, client_id=APP, redirect_uri=sb.redirect, scope=SCOPE,
                    launch=sb.create_launch("prac-onc-1", "pat-onc-01"))
    r = exchange(sb, res.params["code"], client_id=APP, redirect_uri=sb.redirect, verifier=verifier)
    assert r.status_code == 400 and r.json()["error"] in ("invalid_request", "invalid_grant")
    # the code is spent by the failed attempt
    r = exchange(sb, res.params["code"], client_id=APP, redirect_uri=sb.redirect, verifier=res.verifier)
    assert r.status_code == 400


def test_reused_code_refused_and_tokens_revoked(sb):
    res = authorize(sb, client_id=APP, redirect_uri=sb.redirect, scope=SCOPE,
                    launch=sb.create_launch("prac-onc-1", "pat-onc-01"))
    first = exchange(sb, res.params["code"], client_id=APP, redirect_uri=sb.redirect, verifier=res.verifier)
    assert first.status_code == 200
    again = exchange(sb, res.params["code"], client_id=APP, redirect_uri=sb.redirect, verifier=res.verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    r = requests.get(f"{sb.fhir_base}/Patient/pat-onc-01", headers=bearer(first.json()["access_token"]),
                     timeout=10)
    assert r.status_code == 401
    refresh = requests.post(sb.token_endpoint, data={"grant_type": "refresh_token", "client_id": APP,
                                                     "refresh_token": first.json()["refresh_token"]}, timeout=10)
    assert refresh.status_code == 400


def test_unknown_launch_refused(sb):
    res = authorize(sb, client_id=APP, redirect_uri=sb.redirect, scope=SCOPE, launch="not-a-launch")
    assert res.params["error"] == "invalid_request"


def test_expired_token_refused(sb):
    tok = ehr_launch(sb, client_id=APP, redirect_uri=sb.redirect, scope=SCOPE)
    url = f"{sb.fhir_base}/Patient/pat-onc-01"
    assert requests.get(url, headers=bearer(tok["access_token"]), timeout=10).status_code == 200
    time.sleep(2.2)
    r = requests.get(url, headers=bearer(tok["access_token"]), timeout=10)
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_refresh_rotation(sb):
    tok = ehr_launch(sb, client_id=APP, redirect_uri=sb.redirect, scope=SCOPE)
    form = {"grant_type": "refresh_token", "client_id": APP, "refresh_token": tok["refresh_token"]}
    new = requests.post(sb.token_endpoint, data=form, timeout=10)
    assert new.status_code == 200
    body = new.json()
    assert body["refresh_token"] != tok["refresh_token"] and body["patient"] == "pat-onc-01"
    assert requests.post(sb.token_endpoint, data=form, timeout=10).json()["error"] == "invalid_grant"
    wider = dict(form, refresh_token=body["refresh_token"], scope=SCOPE + " user/Patient.cud")
    assert requests.post(sb.token_endpoint, data=wider, timeout=10).json()["error"] == "invalid_scope"
    narrower = dict(form, refresh_token=body["refresh_token"], scope="online_access patient/Patient.r")
    r = requests.post(sb.token_endpoint, data=narrower, timeout=10)
    assert r.status_code == 200 and r.json()["scope"] == "online_access patient/Patient.r"


def test_scope_intersection(sb):
    scope = SCOPE + " user/Patient.cud system/*.rs patient/Observation.write user/DocumentReference.write"
    granted = set(ehr_launch(sb, client_id=APP, redirect_uri=sb.redirect, scope=scope)["scope"].split())
    assert "user/Patient.cud" not in granted and "system/*.rs" not in granted
    assert "patient/Observation.write" not in granted
    assert "user/DocumentReference.cu" in granted  # write narrowed to the registered c + u
    ro = ehr_launch(sb, client_id="smart-draft-agent-readonly", redirect_uri=sb.redirect, scope=SCOPE)
    assert "user/DocumentReference.c" not in ro["scope"].split()
    assert "patient/DocumentReference.rs" in ro["scope"].split()


@pytest.mark.parametrize(("key", "alg"), [(RSA_KEY, "RS384"), (EC_KEY, "ES384")])
def test_backend_client_credentials(sb, key, alg):
    r = backend_token(sb, key, client_id="draft-agent-backend", scope="system/Patient.rs system/Patient.cud",
                      alg=alg, jti=f"jti-{alg}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == "system/Patient.rs" and "refresh_token" not in body
    got = requests.get(f"{sb.fhir_base}/Patient/pat-canary", headers=bearer(body["access_token"]), timeout=10)
    assert got.status_code == 200
    replay = backend_token(sb, key, client_id="draft-agent-backend", scope="system/Patient.rs", alg=alg,
                           jti=f"jti-{alg}")
    assert replay.status_code in (400, 401) and replay.json()["error"] == "invalid_client"


def test_backend_assertion_checks(sb):
    other = RSAKey.generate_key(2048, parameters={"kid": "test-rs384"})
    wrong_key = backend_token(sb, other, client_id="draft-agent-backend", scope="system/Patient.rs")
    assert wrong_key.json()["error"] == "invalid_client"
    wrong_alg = backend_token(sb, RSA_KEY, client_id="draft-agent-backend", scope="system/Patient.rs",
                              alg="RS256")
    assert wrong_alg.json()["error"] == "invalid_client"
    public = requests.post(sb.token_endpoint, data={"grant_type": "client_credentials", "client_id": APP,
                                                    "scope": "system/Patient.rs"}, timeout=10)
    assert public.status_code in (400, 401)
    r = backend_token(sb, RSA_KEY, client_id="draft-agent-backend", scope="patient/Patient.rs")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
