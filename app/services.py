"""Collaborators built once per app (kept in ``app.extensions``), and the drafting service.

``Services`` owns the database (migrated to the newest revision at start-up),
the encrypted stores (tokens, launch context, pending launches, drafts, jobs,
outbox, discovery cache), the audit trail, the embedder (loaded lazily, once)
and the role policy. Nothing a request needs is kept only in this process. ``DraftingService`` is the
one path used by the web pages, the JSON API, the CLI and the demo:
chart → index → agent → outbox → FHIR write → read-back.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from app.agent.backends import build_backend
from app.agent.runtime import AGENT_VERSION, Draft, run_task
from app.agent.tasks import get_task
from app.audit.trail import AuditTrail
from app.config import Settings
from app.errors import AppError, UpstreamError
from app.fhir.client import FhirClient
from app.fhir.vendors import ServerProfile, profile_for
from app.logging import event, opaque, set_hmac_key
from app.retrieval.embeddings import Embedder
from app.retrieval.indexer import PatientChart
from app.retrieval.policy import RolePolicy
from app.smart.backend import ClientKey, client_authentication
from app.smart.discovery import DiscoveryCache
from app.smart.launch import STATE_TTL_S
from app.smart.scopes import Grants
from app.store.db import make_engine, make_sessionmaker
from app.store.migrate import upgrade
from app.store.models import SessionStore, Vault
from app.store.records import DraftStore, JobStore, PendingStore, WebSessionStore
from app.writeback.builders import DraftSpec, SourceDocument
from app.writeback.outbox import HELD, Outbox
from app.writeback.submit import WriteContext, outbox_payload, submit

log = logging.getLogger(__name__)


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        set_hmac_key(settings.secret())
        self.engine = make_engine(settings.effective_database_url)
        upgrade(self.engine)  # no-op when current; serialised across workers
        self.maker = make_sessionmaker(self.engine)
        self.vault = Vault(settings.secret())
        self.sessions = SessionStore(self.maker, self.vault, settings.session_lifetime_s)
        self.web_sessions = WebSessionStore(self.maker, self.vault, settings.session_lifetime_s)
        self.pending = PendingStore(self.maker, self.vault, STATE_TTL_S)
        self.discovery = DiscoveryCache(self.maker)
        self.drafts = DraftStore(self.maker, self.vault, patient_hash=opaque)
        self.jobs = JobStore(self.maker)
        self.outbox = Outbox(self.maker, self.vault)
        self.audit = AuditTrail(self.maker)
        self.policy = (RolePolicy.load(settings.role_policy) if settings.role_policy
                       else RolePolicy.default())
        self.client_key = ClientKey.load(settings.private_key_path) if settings.private_key_path else None
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()
        from app.monitoring.metrics import Metrics

        self.metrics = Metrics()  # one per app (create_app exposes it as app.extensions["sda_metrics"])
        from app.monitoring import tracing

        tracing.configure(settings.otel_exporter_otlp_endpoint)  # off unless an OTLP endpoint is set

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = Embedder(self.settings.embedding_model,
                                          cache_dir=self.settings.model_cache_dir
                                          or self.settings.data_dir / "models")
            return self._embedder

    def warm_up(self) -> threading.Thread:
        """Load the embedding model in the background at start-up, so the first launch does not wait."""
        def _load() -> None:
            try:
                _ = self.embedder
            except Exception as exc:  # noqa: BLE001 - reported; the first chart will raise it clearly
                event(log, "embedder.warm_up_failed", error_code=getattr(exc, "code", type(exc).__name__))

        thread = threading.Thread(target=_load, name="embedder-warm-up", daemon=True)
        thread.start()
        return thread

    def client_auth(self, token_endpoint: str) -> tuple[dict[str, str] | None, tuple[str, str] | None]:
        """How this app authenticates at a token endpoint (private_key_jwt, secret or public)."""
        secret = self.settings.client_secret.get_secret_value() if self.settings.client_secret else None
        return client_authentication(self.settings.client_id, token_endpoint,
                                     key=self.client_key, secret=secret)

    def drafting(self) -> DraftingService:
        return DraftingService(self)


@dataclass(frozen=True)
class Actor:
    """Who acts: the launching user and the client; only references and ids, no names."""

    user_reference: str | None
    client_id: str
    token_jti: str | None
    grants: Grants


def _traced_write(fn):  # type: ignore[no-untyped-def]
    """The write joins the trace of its run (same process), as span ``writeback.write``."""
    from app.monitoring.tracing import traced

    return traced("writeback.write", run_id=lambda _self, _client, _chart, draft, *a, **k: draft.run_id,
                  attrs=lambda _self, _client, _chart, draft, *a, **k: {"task": draft.task})(fn)


class DraftingService:
    def __init__(self, services: Services) -> None:
        self.s = services
        self.last_shadow: threading.Thread | None = None

    def profile(self, client: FhirClient) -> ServerProfile:
        if self.s.settings.server_profile != "auto":
            return profile_for(self.s.settings.server_profile, None)
        try:
            return profile_for("auto", client.capabilities())
        except UpstreamError:
            return profile_for("generic", None)

    def draft(self, chart: PatientChart, task_name: str, *, question: str | None = None,
              backend_name: str | None = None, actor: Actor | None = None) -> Draft:
        """Run the task; the run lands in the ledger (``runs``) and the model call in the audit trail."""
        task = get_task(task_name)
        backend = build_backend(self.s.settings, backend_name)  # chain, breakers, hybrid (docs/agent.md)
        from app.monitoring.governance import check_release, maybe_shadow

        check_release(self.s, backend)  # APP_MODEL_RELEASE_GATE: a gold run before a new model serves
        started = datetime.now(UTC)
        from app.monitoring import tracing

        def ledger(row: dict) -> None:  # inside the run's span: its trace id goes on the ledger row
            tracing.remember_run(str(row["run_id"]))
            self.s.drafts.record_run(row, trace_id=tracing.current_trace_id())

        draft = run_task(chart, task, backend, question=question, ledger=ledger)
        self.s.metrics.record_run(task=draft.task, status=draft.status, backend=draft.backend,
                                  seconds=draft.latency_ms / 1000, tokens_in=draft.tokens_in,
                                  tokens_out=draft.tokens_out, cost_usd=draft.cost_usd)
        # APP_SHADOW_RATE of the runs also run on APP_SHADOW_BACKEND: compared, never written
        self.last_shadow = maybe_shadow(self.s, chart, task, draft, question=question)
        # the model call in the audit trail: who, model, run, patient, timing; never prompt or text
        self.s.audit.record_model_call(
            started=started, ended=datetime.now(UTC), outcome="0" if draft.status == "completed" else "4",
            user_reference=actor.user_reference if actor else None, client_id=self.s.settings.client_id,
            token_jti=actor.token_jti if actor else None,
            backend=draft.backend, model_id=draft.model, run_id=draft.run_id, patient_id=chart.patient_id)
        return draft

    @_traced_write
    def write(self, client: FhirClient, chart: PatientChart, draft: Draft, actor: Actor,
              *, encounter_id: str | None = None) -> dict:
        """Outbox first, then the server. Returns {state, written, reason}."""
        if draft.status != "completed" or not draft.sentences:
            return {"state": "not_written", "written": None,
                    "reason": "Nothing to write: the run produced no draft text."}
        reason = actor.grants.writeback_reason()
        if reason:
            return {"state": "disabled", "written": None, "reason": reason}
        profile = self.profile(client)
        sources = tuple(
            SourceDocument(id=doc_id, version=version,
                           security=tuple(sorted(chart.documents[doc_id].security))
                           if doc_id in chart.documents else ())
            for doc_id, version in draft.cited_documents())
        spec = DraftSpec(
            run_id=draft.run_id, task=draft.task, loinc_code=get_task(draft.task).loinc_code,
            loinc_display=get_task(draft.task).loinc_display, text=draft.text,
            patient_id=chart.patient_id, encounter_id=encounter_id,
            author_reference=actor.user_reference or "Device/unknown", sources=sources,
            created=datetime.now(UTC).replace(microsecond=0), model_id=draft.model,
            agent_version=AGENT_VERSION, prompt_version=draft.prompt_version,
            context_security=chart.context_security())
        ctx = WriteContext(client_id=actor.client_id, token_jti=actor.token_jti,
                           user_reference=actor.user_reference,
                           audit_on_server=profile.audit_event_create and actor.grants.may_create("AuditEvent"))
        self.s.outbox.put(draft.run_id, client.base_url, outbox_payload(spec, ctx))
        try:
            written = submit(client, self.s.outbox, profile, draft.run_id)
        except AppError as exc:
            self._audit(actor, "C", "create", "8", [], chart.patient_id, client.base_url, client)
            event(log, "writeback.queued", run_id=draft.run_id, error_code=exc.code)
            return {"state": "queued", "written": None,
                    "reason": f"The EHR did not accept the draft yet ({exc.code}); it is kept in the "
                              "outbox and will be retried."}
        if (self.s.outbox.get(draft.run_id) or {}).get("state") == HELD:
            return {"state": HELD, "written": None,
                    "reason": "This EHR accepts only signed notes: the draft is kept in this app "
                              "until a clinician approves it, then written as final."}
        refs = [w for w in written.values() if w]
        self._audit(actor, "C", "create", "0", refs, chart.patient_id, client.base_url, client)
        return {"state": "written", "written": written, "reason": None}

    def _audit(self, actor: Actor, action: str, subtype: str, outcome: str, refs: list[str],
               patient_id: str | None, destination: str, client: FhirClient | None = None) -> None:
        """Only for a client that does not audit itself: an AuditedFhirClient recorded each write once."""
        if getattr(client, "trail", None) is not None:
            return
        self.s.audit.record(action=action, subtype=subtype, outcome=outcome,
                            user_reference=actor.user_reference, client_id=actor.client_id,
                            token_jti=actor.token_jti, entity_references=refs,
                            patient_id=patient_id, destination=destination)
