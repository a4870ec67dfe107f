"""The current launch session, its FHIR client and its chart (shared by the blueprints)."""

from __future__ import annotations

import logging
import threading

import requests
from flask import current_app, session

from app.audit.fhir import AuditedFhirClient
from app.errors import AuthError
from app.fhir.client import FhirClient
from app.logging import event
from app.retrieval.cache import shared_cache
from app.retrieval.indexer import EARLY_START_NOTES, PatientChart, build_index, open_chart
from app.services import Actor
from app.smart.scopes import OPEN_SERVER_GRANTS, Grants
from app.smart.session import SessionTokens
from app.web.state import LaunchState

log = logging.getLogger(__name__)


def services():  # type: ignore[no-untyped-def]
    return current_app.extensions["smart_draft"]


def current() -> LaunchState:
    state = current_app.extensions["smart_draft_web"].get(session.get("sid"))
    if state is not None and state.unauthenticated:
        return state  # open-server development mode: there are no tokens to check
    if state is None or services().sessions.load(state.sid) is None:
        raise AuthError("Your session has ended or expired. Launch the app again from the EHR.",
                        code="session_expired")
    return state


def client_for(state: LaunchState) -> FhirClient:
    """The session's FHIR client; every interaction lands in the audit trail (BALP shapes, no content)."""
    s = services()
    tokens = None if state.unauthenticated else SessionTokens(
        s.sessions, state.sid, state.config, s.settings.client_id, requests.Session(), s.client_auth)
    return AuditedFhirClient(state.fhir_base, tokens, trail=s.audit, client_id=s.settings.client_id,
                             user_reference=state.user_reference, patient_id=state.patient_id,
                             read_timeout=s.settings.fhir_timeout_s)


def grants_for(state: LaunchState) -> Grants:
    if state.unauthenticated:
        return Grants.parse(OPEN_SERVER_GRANTS)
    return services().sessions.load(state.sid)[1].grants  # type: ignore[index]


def actor_for(state: LaunchState) -> Actor:
    s = services()
    if state.unauthenticated:
        return Actor(user_reference=None, client_id=s.settings.client_id, token_jti=None,
                     grants=grants_for(state))
    tokens = s.sessions.load(state.sid)[1]  # type: ignore[index]
    return Actor(user_reference=state.user_reference, client_id=s.settings.client_id,
                 token_jti=tokens.jti, grants=tokens.grants)


def ensure_chart(state: LaunchState) -> PatientChart:
    """Open the chart once per session and index it in the background."""
    if state.chart is not None:
        return state.chart
    s = services()
    client = client_for(state)
    chart = open_chart(client, state.patient_id, grants=grants_for(state), role=state.role,
                       policy=s.policy, embedder=lambda: s.embedder,  # a model still loading overlaps the reads
                       max_attachment_bytes=s.settings.max_attachment_bytes,
                       max_documents=s.settings.max_documents,
                       cache=shared_cache(current_app.extensions, s.settings))
    state.chart = chart

    index_client = client_for(state)  # built here: the thread has no app context

    def _index() -> None:
        try:
            build_index(index_client, chart)
        except Exception as exc:  # noqa: BLE001 - recorded on chart.progress; never crash the app
            chart.progress.state = "failed"
            chart.progress.error_code = getattr(exc, "code", type(exc).__name__)
            event(log, "index.failed", error_code=chart.progress.error_code)

    state.index_thread = threading.Thread(target=_index, name="indexer", daemon=True)
    state.index_thread.start()
    return chart


def wait_ready(state: LaunchState, timeout: float = 300.0) -> PatientChart:
    """The chart once its newest notes are indexed: drafting starts while older ones go in
    (search waits for the newest, ``read_notes`` for all; docs/retrieval.md)."""
    chart = ensure_chart(state)
    chart.wait_indexed(EARLY_START_NOTES, timeout)  # AppError 503 when indexing failed
    return chart
