"""Sandbox registrations: clients, users (practitioners with roles) and launcher defaults.

Clients follow SMART App Launch 2.2.0 "Client authentication"
(https://hl7.org/fhir/smart-app-launch/client-authentication.html):
``public`` clients send only ``client_id`` (token endpoint auth ``none``),
``confidential-symmetric`` ones a secret (RFC 6749 s2.3.1),
``confidential-asymmetric`` and ``backend`` ones a JWT assertion signed with
their key (``private_key_jwt``, RFC 7523 s2.2). The file shape is documented
in ``sandbox/config.yaml``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from authlib.oauth2.rfc6749 import ClientMixin

from sandbox import scopes as sc

DEFAULT_CONFIG = Path(__file__).with_name("config.yaml")
CLIENT_TYPES = ("public", "confidential-symmetric", "confidential-asymmetric", "backend")
_AUTH_METHOD = {
    "public": {"none"},
    "confidential-symmetric": {"client_secret_basic", "client_secret_post"},
    "confidential-asymmetric": {"client_assertion_jwt"},
    "backend": {"client_assertion_jwt"},
}


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    """One client registration; implements authlib's ClientMixin."""

    client_id: str
    type: str = "public"
    redirect_uris: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    secret: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Client | None = None) -> Client:
        """Build from a config mapping; fields missing in ``data`` come from ``base``."""
        merged: dict[str, Any] = {}
        if base is not None:
            merged.update(base.__dict__)
        merged.update({k: v for k, v in data.items() if v is not None})
        if merged.get("type", "public") not in CLIENT_TYPES:
            raise ValueError(f"client {merged.get('client_id')}: unknown type {merged.get('type')}")
        merged["scopes"] = sc.split(merged.get("scopes") or [])
        merged["redirect_uris"] = list(merged.get("redirect_uris") or [])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in merged.items() if k in known})

    # authlib ClientMixin -------------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        """Requested scopes intersected with the registered ones (RFC 6749 s3.3)."""
        return " ".join(sc.intersect(scope, self.scopes))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact string match only (RFC 9700 s4.1.3)."""
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return bool(self.secret) and hmac.compare_digest(self.secret or "", client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in _AUTH_METHOD[self.type]

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and self.type != "backend"

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "client_credentials":
            return self.type in ("backend", "confidential-asymmetric")
        return grant_type in ("authorization_code", "refresh_token") and self.type != "backend"


@dataclass(frozen=True)
class User:
    """An EHR user: the practitioner behind ``fhirUser`` and a role label."""

    id: str
    practitioner: str
    role: str
    display: str


@dataclass
class SandboxConfig:
    """Everything read from the config file."""

    clients: dict[str, Client]
    users: dict[str, User]
    launcher: dict[str, str]


def load_config(path: Path | None = None) -> SandboxConfig:
    """Read the YAML config (default: ``sandbox/config.yaml``)."""
    raw = yaml.safe_load(Path(path or DEFAULT_CONFIG).read_text()) or {}
    clients = {c["client_id"]: Client.from_dict(c) for c in raw.get("clients", [])}
    users = {}
    for u in raw.get("users", []):
        user = User(id=u["id"], practitioner=u.get("practitioner", u["id"]),
                    role=u.get("role", "clinician"), display=u.get("display", u["id"]))
        users[user.id] = user
    return SandboxConfig(clients=clients, users=users, launcher=dict(raw.get("launcher") or {}))
