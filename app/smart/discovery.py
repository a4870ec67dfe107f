"""SMART configuration discovery (SMART App Launch 2.2, "Conformance").

https://hl7.org/fhir/smart-app-launch/conformance.html

``GET {iss}/.well-known/smart-configuration``; relative endpoints are resolved
against the FHIR base; ``capabilities`` are kept so the app can choose v1 or v2
scopes. Only call this for an ``iss`` already checked against the allowlist.

The GET goes through the app's retry policy (``app.retry``). With a
``DiscoveryCache`` the document is kept in the database (``smart_configurations``)
for ``ttl_s``: the callback, served by any worker, finds the configuration the
launch used, and a launch does not fetch it again while it is fresh.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests

from app.errors import FatalUpstreamError, TemporaryUpstreamError
from app.retry import policy

DISCOVERY_TTL_S = 3600.0


@dataclass(frozen=True)
class SmartConfiguration:
    fhir_base: str
    issuer: str | None
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str | None
    capabilities: frozenset[str]
    code_challenge_methods: tuple[str, ...]
    token_auth_methods: tuple[str, ...]
    revocation_endpoint: str | None = None  # RFC 7009, when the EHR advertises one

    @property
    def permission_v2(self) -> bool:
        return "permission-v2" in self.capabilities

    def to_json(self) -> dict[str, Any]:
        """The parsed configuration as JSON (kept with a launch session)."""
        return {"fhir_base": self.fhir_base, "issuer": self.issuer,
                "authorization_endpoint": self.authorization_endpoint, "token_endpoint": self.token_endpoint,
                "jwks_uri": self.jwks_uri, "capabilities": sorted(self.capabilities),
                "code_challenge_methods": list(self.code_challenge_methods),
                "token_auth_methods": list(self.token_auth_methods),
                "revocation_endpoint": self.revocation_endpoint}

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> SmartConfiguration:
        return cls(fhir_base=data["fhir_base"], issuer=data.get("issuer"),
                   authorization_endpoint=data["authorization_endpoint"], token_endpoint=data["token_endpoint"],
                   jwks_uri=data.get("jwks_uri"), capabilities=frozenset(data.get("capabilities") or ()),
                   code_challenge_methods=tuple(data.get("code_challenge_methods") or ()),
                   token_auth_methods=tuple(data.get("token_auth_methods") or ()),
                   revocation_endpoint=data.get("revocation_endpoint"))

    @classmethod
    def from_json(cls, fhir_base: str, doc: dict) -> SmartConfiguration:
        base = fhir_base.rstrip("/") + "/"

        def resolve(value: object) -> str | None:
            return urljoin(base, value) if isinstance(value, str) and value else None

        auth = resolve(doc.get("authorization_endpoint"))
        token = resolve(doc.get("token_endpoint"))
        if not auth or not token:
            raise FatalUpstreamError(
                "The EHR's SMART configuration lacks an authorization or token endpoint.",
                code="smart_config_invalid",
            )
        return cls(
            fhir_base=fhir_base.rstrip("/"),
            issuer=doc.get("issuer"),
            authorization_endpoint=auth,
            token_endpoint=token,
            jwks_uri=resolve(doc.get("jwks_uri")),
            capabilities=frozenset(c for c in doc.get("capabilities", []) if isinstance(c, str)),
            code_challenge_methods=tuple(doc.get("code_challenge_methods_supported") or ()),
            token_auth_methods=tuple(doc.get("token_endpoint_auth_methods_supported") or ()),
            revocation_endpoint=resolve(doc.get("revocation_endpoint")),
        )


class DiscoveryCache:
    """Discovery documents in the database (table ``smart_configurations``), shared by every worker."""

    def __init__(self, maker: Any, ttl_s: float = DISCOVERY_TTL_S) -> None:
        self._maker = maker
        self._ttl = ttl_s

    def get(self, fhir_base: str, *, fresh_only: bool = True) -> SmartConfiguration | None:
        from app.store.models import DiscoveryDocument  # the store imports smart.tokens: imported late

        with self._maker() as db:
            row = db.get(DiscoveryDocument, fhir_base.rstrip("/"))
            if row is None or (fresh_only and row.expires < time.time()):
                return None
            return SmartConfiguration.from_json(fhir_base, json.loads(row.document_json))

    def put(self, fhir_base: str, doc: dict) -> None:
        from app.store.models import DiscoveryDocument

        now = time.time()
        with self._maker.begin() as db:
            row = db.get(DiscoveryDocument, fhir_base.rstrip("/"))
            if row is None:
                db.add(DiscoveryDocument(fhir_base=fhir_base.rstrip("/"), document_json=json.dumps(doc),
                                         fetched=now, expires=now + self._ttl))
            else:
                row.document_json, row.fetched, row.expires = json.dumps(doc), now, now + self._ttl


def discover(fhir_base: str, session: requests.Session, *, timeout: float = 10.0,
             cache: DiscoveryCache | None = None) -> SmartConfiguration:
    if cache is not None:
        cached = cache.get(fhir_base)
        if cached is not None:
            return cached
    doc = fetch_document(fhir_base, session, timeout=timeout)
    config = SmartConfiguration.from_json(fhir_base, doc)  # validated before it is cached
    if cache is not None:
        cache.put(fhir_base, doc)
    return config


def fetch_document(fhir_base: str, session: requests.Session, *, timeout: float = 10.0) -> dict:
    url = fhir_base.rstrip("/") + "/.well-known/smart-configuration"
    try:
        resp = policy().run(
            lambda: session.get(url, headers={"Accept": "application/json"}, timeout=timeout),
            status_of=lambda r: r.status_code, headers_of=lambda r: r.headers, safe=True,
            is_connect_error=lambda e: isinstance(e, requests.ConnectionError | requests.Timeout),
            on_retry=lambda r: r.close(), deadline=time.monotonic() + 3 * timeout, what="smart_discovery")
    except requests.RequestException:
        raise TemporaryUpstreamError(
            "Could not reach the EHR to read its SMART configuration.", code="smart_unreachable"
        ) from None
    if resp.status_code >= 500:
        raise TemporaryUpstreamError(
            f"The EHR's SMART configuration is unavailable (HTTP {resp.status_code}).",
            code="smart_unavailable",
        )
    if resp.status_code != 200:
        raise FatalUpstreamError(
            f"The EHR has no SMART configuration (HTTP {resp.status_code}).", code="smart_missing"
        )
    try:
        doc = resp.json()
    except ValueError:
        raise FatalUpstreamError(
            "The EHR's SMART configuration is not JSON.", code="smart_config_invalid"
        ) from None
    if not isinstance(doc, dict):
        raise FatalUpstreamError("The SMART configuration is malformed.", code="smart_config_invalid")
    return doc
