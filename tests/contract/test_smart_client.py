"""Contract tests of the SMART client side against a fake EHR (responses): one broken thing each."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs

import pytest
import requests
import responses
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from app.errors import AuthError, FatalUpstreamError, TemporaryUpstreamError
from app.smart.backend import ClientKey, client_authentication
from app.smart.discovery import discover
from app.smart.tokens import exchange_code, refresh

BASE = "https://ehr.test/fhir"
TOKEN = "https://ehr.test/auth/token"
JWKS = "https://ehr.test/auth/jwks"
EHR_KEY = RSAKey.generate_key(2048, parameters={"kid": "ehr-1"})
CONFIG_DOC = {"issuer": BASE, "authorization_endpoint": "../auth/authorize", "token_endpoint": TOKEN,
              "jwks_uri": JWKS, "capabilities": ["launch-ehr", "permission-v2", "client-public"],
              "code_challenge_methods_supported": ["S256"]}


def id_token(key=EHR_KEY, **claims):
    now = int(time.time())
    base = {"iss": BASE, "sub": "u1", "aud": "app", "iat": now, "exp": now + 300, "nonce": "n1",
            "fhirUser": "Practitioner/prac-1"}
    base.update(claims)
    return jwt.encode({"alg": "RS256", "kid": "ehr-1"}, {k: v for k, v in base.items() if v is not None}, key)


def fake_ehr(token_body=None, status=200):
    responses.get(f"{BASE}/.well-known/smart-configuration", json=CONFIG_DOC)
    responses.get(JWKS, json=KeySet([EHR_KEY]).as_dict(private=False))
    body = {"access_token": "at-1", "token_type": "Bearer", "expires_in": 300, "refresh_token": "rt-1",
            "scope": "launch openid fhirUser patient/DocumentReference.rs user/DocumentReference.c "
                     "user/Provenance.c", "patient": "p1", "id_token": id_token()}
    if token_body is not None:
        body = token_body(body)
    responses.post(TOKEN, status=status, json=body)


def config():
    return discover(BASE, requests.Session())


def exchange(**kw):
    args = {"code": "c1", "code_verifier": "v" * 50, "redirect_uri": "https://app.test/callback",
            "client_id": "app", "nonce": "n1"}
    args.update(kw)
    return exchange_code(requests.Session(), config(), **args)


@responses.activate
def test_discovery_resolves_relative_endpoints_and_reads_capabilities():
    fake_ehr()
    cfg = config()
    assert cfg.authorization_endpoint == "https://ehr.test/auth/authorize"
    assert cfg.permission_v2 and "launch-ehr" in cfg.capabilities


@pytest.mark.parametrize("status,error", [(404, FatalUpstreamError), (503, TemporaryUpstreamError)])
@responses.activate
def test_discovery_failures_are_classified(status, error):
    responses.get(f"{BASE}/.well-known/smart-configuration", status=status)
    with pytest.raises(error):
        config()


@responses.activate
def test_discovery_without_token_endpoint_is_refused():
    responses.get(f"{BASE}/.well-known/smart-configuration", json={"authorization_endpoint": "x"})
    with pytest.raises(FatalUpstreamError) as exc:
        config()
    assert exc.value.code == "smart_config_invalid"


@responses.activate
def test_working_exchange_validates_id_token_and_sends_pkce():
    fake_ehr()
    tokens = exchange()
    assert tokens.fhir_user == "Practitioner/prac-1" and tokens.patient == "p1"
    sent = [parse_qs(c.request.body) for c in responses.calls if c.request.url == TOKEN][0]
    assert sent["grant_type"] == ["authorization_code"] and sent["code_verifier"] == ["v" * 50]
    assert sent["client_id"] == ["app"]  # public client: client_id in the form
    assert "at-1" not in repr(tokens) and "rt-1" not in repr(tokens)


@pytest.mark.parametrize("tamper,why", [
    (lambda: id_token(key=RSAKey.generate_key(2048, parameters={"kid": "ehr-1"})), "bad signature"),
    (lambda: id_token(aud="another-app"), "wrong audience"),
    (lambda: id_token(iss="https://evil.test/fhir"), "wrong issuer"),
    (lambda: id_token(exp=int(time.time()) - 600, iat=int(time.time()) - 900), "expired"),
    (lambda: id_token(nonce="replayed"), "wrong nonce"),
    (lambda: id_token()[:-4] + "AAAA", "truncated signature"),
    (lambda: "not.a.jwt", "garbage"),
])
@responses.activate
def test_bad_id_token_is_refused(tamper, why):
    fake_ehr(lambda b: {**b, "id_token": tamper()})
    with pytest.raises(AuthError) as exc:
        exchange()
    assert exc.value.code == "id_token_invalid", why
    assert "at-1" not in str(exc.value)


@pytest.mark.parametrize("broken", [
    lambda b: {k: v for k, v in b.items() if k != "scope"},
    lambda b: {k: v for k, v in b.items() if k != "access_token"},
    lambda b: {**b, "token_type": "mac"},
])
@responses.activate
def test_token_response_missing_required_fields_is_refused(broken):
    fake_ehr(broken)
    with pytest.raises(AuthError) as exc:
        exchange()
    assert exc.value.code == "token_invalid"


@responses.activate
def test_oauth_error_keeps_the_code_not_the_description():
    fake_ehr(lambda b: {"error": "invalid_grant", "error_description": "code c1 for Zyxwend was used"}, status=400)
    with pytest.raises(AuthError) as exc:
        exchange()
    assert exc.value.code == "invalid_grant" and "Zyxwend" not in str(exc.value) and "c1" not in str(exc.value)


@responses.activate
def test_narrowed_scope_string_switches_write_back_off():
    fake_ehr(lambda b: {**b, "scope": "launch openid fhirUser patient/DocumentReference.read patient/Patient.read"})
    grants = exchange().grants
    assert grants.may_read("DocumentReference") and not grants.writeback_enabled
    assert "DocumentReference" in grants.writeback_reason()


@responses.activate
def test_refresh_replaces_rotated_refresh_token_and_keeps_old_one_otherwise():
    fake_ehr()
    tokens = exchange()
    responses.replace(responses.POST, TOKEN, json={"access_token": "at-2", "token_type": "Bearer",
                                                  "expires_in": 300, "refresh_token": "rt-2", "scope": tokens.scope})
    rotated = refresh(requests.Session(), config(), tokens, client_id="app")
    assert rotated.access_token == "at-2" and rotated.refresh_token == "rt-2"
    assert rotated.fhir_user == tokens.fhir_user and rotated.patient == "p1"
    responses.replace(responses.POST, TOKEN, json={"access_token": "at-3", "token_type": "Bearer",
                                                  "expires_in": 300, "scope": "patient/Patient.r"})
    kept = refresh(requests.Session(), config(), rotated, client_id="app")
    assert kept.refresh_token == "rt-2" and not kept.grants.may_read("DocumentReference")  # grants shrank


@responses.activate
def test_confidential_secret_uses_basic_auth_and_no_client_id_in_form():
    fake_ehr()
    form, basic = client_authentication("app", TOKEN, key=None, secret="s3cret")
    exchange(client_auth=form, basic=basic)
    call = next(c for c in responses.calls if c.request.url == TOKEN)
    assert call.request.headers["Authorization"].startswith("Basic ")
    assert "client_id" not in parse_qs(call.request.body)


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_private_key_jwt_assertion_claims(alg):
    key = ClientKey.generate(alg)
    form, basic = client_authentication("app", TOKEN, key=key, secret=None)
    assert basic is None
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    decoded = jwt.decode(form["client_assertion"], KeySet.import_key_set(key.public_jwks()), algorithms=[alg])
    c = decoded.claims
    assert decoded.header["alg"] == alg and decoded.header["kid"] == key.kid
    assert c["iss"] == c["sub"] == "app" and c["aud"] == TOKEN and 0 < c["exp"] - time.time() <= 300
    again = client_authentication("app", TOKEN, key=key, secret=None)[0]["client_assertion"]
    assert jwt.decode(again, KeySet.import_key_set(key.public_jwks()), algorithms=[alg]).claims["jti"] != c["jti"]


def test_public_jwks_has_no_private_parts():
    for alg in ("RS384", "ES384"):
        jwks = ClientKey.generate(alg).public_jwks()
        assert all(k not in json.dumps(jwks) for k in ('"d"', '"p"', '"q"'))
