"""SMART configuration discovery (SMART App Launch 2.2, "Conformance").

https://hl7.org/fhir/smart-app-launch/conformance.html

``GET {iss}/.well-known/smart-configuration``; relative endpoints are resolved
against the FHIR base; ``capabilities`` are kept so the app can choose v1 or v2
scopes. Only call this for an ``iss`` already checked against the allowlist.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin

import requests

from app.errors import FatalUpstreamError, TemporaryUpstreamError


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

    @property
    def permission_v2(self) -> bool:
        return "permission-v2" in self.capabilities

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
        )


def discover(fhir_base: str, session: requests.Session, *, timeout: float = 10.0) -> SmartConfiguration:
    url = fhir_base.rstrip("/") + "/.well-known/smart-configuration"
    try:
        resp = session.get(url, headers={"Accept": "application/json"}, timeout=timeout)
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
    return SmartConfiguration.from_json(fhir_base, doc)
