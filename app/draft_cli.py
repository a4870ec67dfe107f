"""``python -m app draft``: one task, headless, for one patient.

Two ways to reach the FHIR server:

- SMART Backend Services (``--auth backend``, or ``auto`` when
  ``APP_PRIVATE_KEY_PATH`` is set): client_credentials with a private_key_jwt
  assertion and ``system/`` scopes (``APP_BACKEND_SCOPES``); the grants the
  server returns decide what the run may read and write.
- Open server (``--auth none``, or ``auto`` without a key): for development
  against servers without SMART, such as the public HAPI sandbox. No token
  is sent and the output says ``"mode": "unauthenticated"``.
"""

from __future__ import annotations

import requests

from app.audit.fhir import AuditedFhirClient
from app.config import load_settings
from app.errors import ConfigError
from app.fhir.client import FhirClient
from app.retrieval.cache import shared_cache
from app.retrieval.indexer import load_chart
from app.services import Actor, Services
from app.smart.backend import BackendTokens
from app.smart.discovery import discover
from app.smart.scopes import OPEN_SERVER_GRANTS, Grants


def connect(services: Services, fhir_base: str, auth: str) -> tuple[FhirClient, Grants, str, str | None]:
    """(client, grants, mode, token jti) for ``auth`` in auto | backend | none."""
    settings = services.settings
    if auth == "auto":
        auth = "backend" if services.client_key is not None else "none"
    if auth == "none":
        client = AuditedFhirClient(fhir_base, None, trail=services.audit, client_id=settings.client_id,
                                   read_timeout=settings.fhir_timeout_s)
        return client, Grants.parse(OPEN_SERVER_GRANTS), "unauthenticated", None
    if services.client_key is None:
        raise ConfigError("Backend Services needs APP_PRIVATE_KEY_PATH (the app's private key).")
    http = requests.Session()
    config = discover(fhir_base, http, timeout=settings.fhir_timeout_s)
    tokens = BackendTokens(http, config, services.client_key,
                           client_id=settings.backend_client_id or settings.client_id,
                           scope=settings.backend_scopes)
    granted = tokens.tokens  # fail here, before any read, if the server refuses
    client = AuditedFhirClient(fhir_base, tokens, trail=services.audit,
                               client_id=settings.backend_client_id or settings.client_id,
                               read_timeout=settings.fhir_timeout_s)
    return client, granted.grants, "backend-services", granted.jti


def run_draft(*, fhir_base: str, patient: str, task: str, question: str | None,
              backend: str | None, role: str, write: bool, auth: str = "auto") -> dict:
    services = Services(load_settings())
    loading = services.warm_up()  # the model loads while the chart is read (network waits)
    client, grants, mode, jti = connect(services, fhir_base, auth)
    settings = services.settings
    chart = load_chart(client, patient, grants=grants, role=role, policy=services.policy,
                       embedder=lambda: services.embedder, cache=shared_cache({}, settings),
                       max_attachment_bytes=settings.max_attachment_bytes,
                       max_documents=settings.max_documents,
                       vectors="on_demand")  # embedded only if the draft searches (docs/retrieval.md)
    del loading  # joined implicitly: load_chart asked for the embedder
    drafting = services.drafting()
    draft = drafting.draft(chart, task, question=question, backend_name=backend)
    written = None
    if write:
        result = drafting.write(client, chart, draft, Actor(
            user_reference=None, client_id=services.settings.backend_client_id or services.settings.client_id,
            token_jti=jti, grants=grants))
        written = result["written"]
    out = draft.contract(written)
    out["mode"] = mode
    out["counts"] = chart.counts
    return out
