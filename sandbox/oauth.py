"""The sandbox's SMART authorization server, built on authlib's server components.

- Authorization code grant (RFC 6749 s4.1) with PKCE S256 required
  (RFC 7636; SMART App Launch 2.2.0 "App Protection": ``plain`` refused);
- OpenID Connect id_token (OIDC Core s3.1, RS256) with ``fhirUser``
  (SMART 2.2.0 "Scopes for requesting identity data");
- refresh tokens with rotation (RFC 6749 s6, RFC 9700 s4.14.2);
- client_credentials with ``private_key_jwt`` (RFC 7523 s2.2; SMART 2.2.0
  "Backend Services"): RS384/ES384 assertions, ``aud`` = token endpoint,
  single-use ``jti``;
- access tokens are RS256 JWTs (RFC 9068 shape) with SMART context claims;
- token revocation (RFC 7009, authlib's ``RevocationEndpoint``): revoking an access
  or refresh token revokes every token of its grant (the code's family).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from sandbox import scopes as sc
from sandbox.config import Client
from sandbox.store import AuthCode, LaunchContext, MemoryStore, TokenRecord

log = logging.getLogger(__name__)
# authlib logs issued tokens at DEBUG; never let tokens reach a log.
logging.getLogger("authlib").setLevel(logging.INFO)

ASSERTION_ALGS = ["RS384", "ES384"]
AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", "client_assertion_jwt"]


def load_signing_key(data_dir: Path) -> RSAKey:
    """The sandbox's RSA key (generated on first start, kept in the data dir)."""
    path = Path(data_dir) / "sandbox_signing_key.json"
    if path.exists():
        return RSAKey.import_key(json.loads(path.read_text()))
    key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"})
    path.write_text(json.dumps(key.as_dict(private=True)))
    path.chmod(0o600)
    return key


class S256Only(CodeChallenge):
    """PKCE required for every authorization request, S256 only (RFC 7636 s4.2)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge' (PKCE S256 is required)")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class SmartAuthServer(AuthorizationServer):  # type: ignore[misc]
    """authlib's Flask AuthorizationServer wired to the sandbox's memory store."""

    def __init__(self, *, clients: dict[str, Client], store: MemoryStore, key: RSAKey,
                 issuer: str, fhir_base: str, token_endpoint: str, token_lifetime: int) -> None:
        super().__init__()
        self.clients = clients
        self.store = store
        self.key = key
        self.issuer = issuer
        self.fhir_base = fhir_base
        self.token_endpoint = token_endpoint
        self.token_lifetime = token_lifetime
        self.register_token_generator("default", self.generate_smart_token)
        self.register_client_auth_method("client_assertion_jwt", _AssertionAuth(self))
        self.register_grant(CodeGrant, [S256Only(required=True), SmartOpenID(self)])
        self.register_grant(RefreshGrant)
        self.register_grant(BackendGrant)
        self.register_endpoint(Revocation)

    # authlib hooks -------------------------------------------------------
    def query_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        meta = token.pop("_record")
        code = getattr(request, "authorization_code", None)
        old = getattr(request, "refresh_token", None)
        family = code.code if code is not None else (old.family if old is not None else meta["jti"])
        self.store.add_token(TokenRecord(
            jti=meta["jti"], client_id=request.client.client_id, grant_type=meta["grant_type"],
            scope=token["scope"], context=meta["context"], family=family,
            expires_at=meta["exp"], refresh_token=token.get("refresh_token")))
        log.info("issued token jti=%s client=%s grant=%s", meta["jti"], request.client.client_id,
                 meta["grant_type"])

    # tokens --------------------------------------------------------------
    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode({"alg": "RS256", "kid": self.key.kid, "typ": "at+jwt"}, claims, self.key)

    def fhir_user(self, ctx: LaunchContext) -> str:
        return f"{self.fhir_base}/Practitioner/{ctx.practitioner}"

    def generate_smart_token(self, grant_type: str, client: Client, user: LaunchContext | None = None,
                             scope: str | None = None, expires_in: int | None = None,
                             include_refresh_token: bool = True) -> dict[str, Any]:
        """Access token JWT plus the SMART launch context (SMART 2.2.0 "Response to token request")."""
        granted = sc.split(client.get_allowed_scope(scope))
        now = int(time.time())
        lifetime = expires_in or self.token_lifetime
        jti = secrets.token_urlsafe(16)
        claims: dict[str, Any] = {"iss": self.issuer, "aud": self.fhir_base, "client_id": client.client_id,
                                  "scope": " ".join(granted), "iat": now, "exp": now + lifetime, "jti": jti,
                                  "sub": user.user if user else client.client_id}
        token: dict[str, Any] = {"token_type": "Bearer", "scope": " ".join(granted), "expires_in": lifetime}
        if user is not None:
            claims["fhirUser"] = self.fhir_user(user)
            if user.patient:
                claims["patient"] = token["patient"] = user.patient
            if user.encounter:
                claims["encounter"] = token["encounter"] = user.encounter
            token["need_patient_banner"] = user.need_patient_banner
            if user.smart_style_url:
                token["smart_style_url"] = user.smart_style_url
        token["access_token"] = self.sign(claims)
        if include_refresh_token and user is not None and (
                "offline_access" in granted or "online_access" in granted):
            token["refresh_token"] = secrets.token_urlsafe(32)
        token["_record"] = {"jti": jti, "exp": now + lifetime, "grant_type": grant_type, "context": user}
        return token

    def verify_access_token(self, value: str) -> tuple[dict[str, Any], TokenRecord] | None:
        """Claims and record of a valid, unexpired, unrevoked access token; else None."""
        try:
            tok = jwt.decode(value, self.key, algorithms=["RS256"])
            jwt.JWTClaimsRegistry(leeway=0, exp={"essential": True},
                                  iss={"essential": True, "value": self.issuer}).validate(tok.claims)
        except (JoseError, ValueError):
            return None
        rec = self.store.active(str(tok.claims.get("jti")))
        if rec is None or rec.is_expired():
            return None
        return tok.claims, rec


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009 at ``/auth/revoke``: the grant's whole token family stops working at once."""

    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        store = self.server.store
        if token_type_hint != "access_token":  # noqa: S105 - a hint name, not a secret
            rec = store.refresh.get(token_string)
            if rec is not None:
                return rec
        try:
            jti = str(jwt.decode(token_string, self.server.key, algorithms=["RS256"]).claims.get("jti"))
        except (JoseError, ValueError):
            return None
        return store.tokens.get(jti)

    def revoke_token(self, token: TokenRecord, request: Any) -> None:
        self.server.store.revoke_family(token.family)
        log.info("revoked token family of client %s", token.client_id)


class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    """Authorization code grant; codes carry the launch context."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_authorization_request(self) -> str:
        redirect_uri = super().validate_authorization_request()
        aud = self.request.payload.data.get("aud")
        if (aud or "").rstrip("/") != self.server.fhir_base:
            raise InvalidRequestError("'aud' must be this server's FHIR base URL", redirect_uri=redirect_uri)
        return str(redirect_uri)

    def save_authorization_code(self, code: str, request: Any) -> None:
        data = request.payload.data
        self.server.store.add_code(AuthCode(
            code=code, client_id=request.client.client_id, redirect_uri=request.payload.redirect_uri,
            scope=request.scope, context=request.user, code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"), nonce=data.get("nonce")))

    def query_authorization_code(self, code: str, client: Client) -> AuthCode | None:
        return self.server.store.take_code(code, client.client_id)

    def delete_authorization_code(self, authorization_code: AuthCode) -> None:
        self.server.store.spend_code(authorization_code.code)

    def authenticate_user(self, authorization_code: AuthCode) -> LaunchContext:
        return authorization_code.context

    def validate_token_request(self) -> None:
        # a code is spent by its first use, even a failed one (RFC 9700 s4.5)
        try:
            super().validate_token_request()
        except Exception:
            code = getattr(self.request, "authorization_code", None)
            if code is not None:
                self.server.store.spend_code(code.code)
            raise


class SmartOpenID(OpenIDCode):  # type: ignore[misc]
    """id_token: RS256, iss = the smart-configuration issuer, aud = client_id, fhirUser absolute."""

    def __init__(self, server: SmartAuthServer) -> None:
        super().__init__(require_nonce=False)
        self.server = server

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return False

    def resolve_client_private_key(self, client: Client) -> RSAKey:
        return self.server.key

    def get_client_algorithm(self, client: Client) -> str:
        return "RS256"

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": "RS256", "kid": self.server.key.kid, "typ": "JWT"}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.server.issuer, "aud": client.client_id, "iat": now,
                "exp": now + max(self.server.token_lifetime, 300)}

    def generate_user_info(self, user: LaunchContext, scope: str) -> UserInfo:
        info = UserInfo(sub=user.user)
        if "fhirUser" in sc.split(scope) or "openid" in sc.split(scope):
            info["fhirUser"] = self.server.fhir_user(user)
        return info


class RefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    """Refresh with rotation; the new scope must be a subset of the old (RFC 6749 s6)."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def _validate_token_scope(self, token: TokenRecord) -> None:
        scope = self.request.payload.scope
        if scope and not sc.is_subset(scope, token.scope):
            raise InvalidScopeError("The requested scope exceeds the original grant")

    def authenticate_refresh_token(self, refresh_token: str) -> TokenRecord | None:
        return self.server.store.by_refresh(refresh_token)

    def authenticate_user(self, refresh_token: TokenRecord) -> LaunchContext | None:
        return refresh_token.context

    def revoke_old_credential(self, refresh_token: TokenRecord) -> None:
        if refresh_token.refresh_token:
            self.server.store.revoke_refresh(refresh_token.refresh_token)


class BackendGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """client_credentials for backend clients: ``system/`` scopes, no refresh token."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_assertion_jwt"]

    def validate_token_request(self) -> None:
        super().validate_token_request()
        wanted = self.request.payload.scope or ""
        granted = [s for s in sc.intersect(wanted, self.request.client.scopes) if s.startswith("system/")]
        if not granted:
            raise InvalidScopeError("No grantable system/ scope was requested")
        self.request.granted_scope = " ".join(granted)

    def create_token_response(self) -> tuple[int, dict[str, Any], Any]:
        token = self.generate_token(scope=self.request.granted_scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class _AssertionAuth(JWTBearerClientAssertion):  # type: ignore[misc]
    """private_key_jwt (RFC 7523 s2.2): RS384/ES384, aud = token endpoint, jti single use."""

    def __init__(self, server: SmartAuthServer) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.server = server

    def get_audiences(self) -> list[str]:
        return [self.server.token_endpoint]

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        return self.server.store.use_assertion_jti(f"{claims['sub']}:{jti}", float(claims.get("exp", 0)))

    def verify_claims(self, claims: Any) -> None:
        super().verify_claims(claims)
        if int(claims["exp"]) > time.time() + 300 + self.leeway:
            from authlib.oauth2.rfc6749 import InvalidClientError
            raise InvalidClientError(description="Assertion 'exp' must be at most 5 minutes ahead")

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        from authlib.oauth2.rfc6749 import InvalidClientError
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGS)
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description="Invalid client assertion") from exc
        self.verify_claims(token.claims)
        return token.claims

    def resolve_client_public_key(self, client: Client) -> KeySet:
        if client.jwks and client.jwks.get("keys"):
            return KeySet.import_key_set(client.jwks)
        if client.jwks_uri:
            import requests
            return KeySet.import_key_set(requests.get(client.jwks_uri, timeout=10).json())
        from authlib.oauth2.rfc6749 import InvalidClientError
        raise InvalidClientError(description="The client has no registered public keys")
