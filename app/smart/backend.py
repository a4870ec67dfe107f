"""Client authentication with a private key, and SMART Backend Services.

https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html
https://hl7.org/fhir/smart-app-launch/backend-services.html

The client assertion is a JWT signed RS384 or ES384 with ``iss`` = ``sub`` =
client_id, ``aud`` = the token endpoint, ``exp`` at most five minutes ahead, a
unique ``jti`` and the key's ``kid`` in the header. The app publishes the
public half at ``/.well-known/jwks.json``.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from app.errors import ConfigError
from app.fhir.client import TokenProvider
from app.smart.discovery import SmartConfiguration
from app.smart.tokens import TokenSet, _post, _token_set

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class ClientKey:
    """The app's signing key (RSA → RS384, EC P-384 → ES384)."""

    def __init__(self, key: RSAKey | ECKey) -> None:
        self.key = key
        self.alg = "ES384" if isinstance(key, ECKey) else "RS384"
        self.kid = key.thumbprint()

    @classmethod
    def load(cls, path: Path) -> ClientKey:
        try:
            pem = Path(path).read_bytes()
        except OSError:
            raise ConfigError(f"APP_PRIVATE_KEY_PATH cannot be read ({Path(path).name}).") from None
        for kind in (RSAKey, ECKey):
            try:
                return cls(kind.import_key(pem))
            except (JoseError, ValueError, TypeError):
                continue
        raise ConfigError("APP_PRIVATE_KEY_PATH is not an RSA or EC private key in PEM.")

    @classmethod
    def generate(cls, alg: str = "RS384") -> ClientKey:
        if alg == "ES384":
            return cls(ECKey.generate_key("P-384"))
        return cls(RSAKey.generate_key(2048))

    def pem(self) -> bytes:
        return self.key.as_pem(private=True)

    def public_jwks(self) -> dict:
        jwk = self.key.as_dict(private=False)
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig", "key_ops": ["verify"]})
        return {"keys": [jwk]}

    def assertion(self, client_id: str, token_endpoint: str, *, lifetime_s: int = 240) -> str:
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": token_endpoint, "iat": now,
                  "exp": now + min(lifetime_s, 300), "jti": str(uuid.uuid4())}
        header = {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self.key, algorithms=[self.alg])

    def client_auth(self, client_id: str, token_endpoint: str) -> dict[str, str]:
        return {"client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(client_id, token_endpoint)}


def backend_token(session: requests.Session, config: SmartConfiguration, key: ClientKey, *,
                  client_id: str, scope: str, timeout: float = 15.0) -> TokenSet:
    """client_credentials grant for ``system/`` scopes; no refresh token: ask again when expired."""
    data = {"grant_type": "client_credentials", "scope": scope}
    data.update(key.client_auth(client_id, config.token_endpoint))
    body = _post(session, config.token_endpoint, data, timeout)
    return _token_set(body, {})


def client_authentication(client_id: str, token_endpoint: str, *, key: ClientKey | None,
                          secret: str | None) -> tuple[dict[str, str] | None, tuple[str, str] | None]:
    """(form fields, basic auth) for the token endpoint: private_key_jwt, else client_secret_basic,
    else a public client (``client_id`` in the form)."""
    if key is not None:
        return key.client_auth(client_id, token_endpoint), None
    if secret:
        return None, (client_id, secret)
    return None, None


class BackendTokens(TokenProvider):
    """Token provider for SMART Backend Services: asks again when the token is about to expire.

    Backend Services issue no refresh token; "refresh" means a new client_credentials grant
    with a fresh assertion. Used by the CLI and batch jobs (``FhirClient(base, BackendTokens(...))``).
    """

    MARGIN_S = 30

    def __init__(self, http: requests.Session, config: SmartConfiguration, key: ClientKey, *,
                 client_id: str, scope: str) -> None:
        self._http, self._config, self._key = http, config, key
        self._client_id, self._scope = client_id, scope
        self._tokens: TokenSet | None = None

    def _fetch(self) -> TokenSet:
        self._tokens = backend_token(self._http, self._config, self._key, client_id=self._client_id,
                                     scope=self._scope)
        return self._tokens

    @property
    def tokens(self) -> TokenSet:
        if self._tokens is None or self._tokens.expires_within(self.MARGIN_S):
            return self._fetch()
        return self._tokens

    def token(self) -> str | None:
        return self.tokens.access_token

    def refresh(self) -> bool:
        self._fetch()
        return True

    @property
    def jti(self) -> str | None:
        return self._tokens.jti if self._tokens else None
