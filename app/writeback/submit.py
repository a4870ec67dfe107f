"""Submit a draft: outbox first, then one transaction (or a vendor sequence).

../shared/STANDARDS.md, "DocumentReference" and "AI transparency": the draft
DocumentReference (docStatus preliminary), the AI Device, the Provenance and,
where the server accepts it, the AuditEvent, in one transaction Bundle with
``urn:uuid`` references and a conditional create on the run identifier. Before
a retry the server is asked whether the run is already there, so a crash
after the server committed never writes twice.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from app.errors import AppError, NotBuiltError, TemporaryUpstreamError, UpstreamError
from app.fhir.client import FhirClient
from app.fhir.vendors import ServerProfile
from app.logging import event
from app.writeback.builders import (
    IDENTIFIER_SYSTEM,
    DraftSpec,
    create_ai_device,
    create_audit_event,
    create_document_reference,
    create_provenance,
)
from app.writeback.outbox import Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteContext:
    client_id: str
    token_jti: str | None
    user_reference: str | None
    audit_on_server: bool


def _dump(model) -> dict:  # type: ignore[no-untyped-def]
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)


def build_transaction(spec: DraftSpec, ctx: WriteContext, fhir_base: str) -> dict:
    """The transaction Bundle for a draft (pure apart from fresh urn:uuids)."""
    doc_urn, dev_urn, prov_urn = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
    doc = _dump(create_document_reference(spec))
    device = _dump(create_ai_device(model_id=spec.model_id, agent_version=spec.agent_version))
    prov = _dump(create_provenance(
        target_reference=doc_urn, recorded=spec.created, device_reference=dev_urn,
        enterer_reference=spec.author_reference, transmitter_reference=dev_urn,
        sources=spec.sources, prompt_version=spec.prompt_version, patient_id=spec.patient_id))
    entries = [
        {"fullUrl": doc_urn, "resource": doc,
         "request": {"method": "POST", "url": "DocumentReference",
                     "ifNoneExist": f"identifier={IDENTIFIER_SYSTEM}|{spec.run_id}"}},
        {"fullUrl": dev_urn, "resource": device, "request": {"method": "POST", "url": "Device"}},
        {"fullUrl": prov_urn, "resource": prov, "request": {"method": "POST", "url": "Provenance"}},
    ]
    if ctx.audit_on_server:
        audit = _dump(create_audit_event(
            action="C", subtype="create", outcome="0", recorded=spec.created,
            user_reference=ctx.user_reference, client_id=ctx.client_id, token_jti=ctx.token_jti,
            entity_references=[doc_urn], patient_id=spec.patient_id, destination=fhir_base))
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": audit,
                        "request": {"method": "POST", "url": "AuditEvent"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _ids_from_response(bundle: dict) -> dict[str, str | None]:
    written: dict[str, str | None] = {"document_reference": None, "provenance": None,
                                      "audit_event": None, "device": None}
    keys = {"DocumentReference": "document_reference", "Provenance": "provenance",
            "AuditEvent": "audit_event", "Device": "device"}
    for entry in bundle.get("entry") or []:
        res = entry.get("resource") or {}
        parts = ((entry.get("response") or {}).get("location") or "").split("?")[0].split("/")
        # Locations may be absolute or relative: find "<Type>/<id>[/_history/<v>]" in them.
        idx = next((i for i, p in enumerate(parts) if p in keys), None)
        rtype = res.get("resourceType") or (parts[idx] if idx is not None else None)
        rid = res.get("id") or (parts[idx + 1] if idx is not None and idx + 1 < len(parts) else None)
        version = (res.get("meta") or {}).get("versionId")
        if version is None and idx is not None and len(parts) > idx + 3 and parts[idx + 2] == "_history":
            version = parts[idx + 3]
        if rtype in keys and rid:
            written[keys[rtype]] = f"{rtype}/{rid}" + (f"/_history/{version}" if version else "")
    return written


def find_written(client: FhirClient, run_id: str) -> dict[str, str | None] | None:
    """Ids already on the server for this run (after a crash or a lost acknowledgement)."""
    docs = list(client.search("DocumentReference", {"identifier": f"{IDENTIFIER_SYSTEM}|{run_id}"},
                              no_cache=True))
    if not docs:
        return None
    doc = docs[0]
    written: dict[str, str | None] = {"document_reference": f"DocumentReference/{doc['id']}",
                                      "provenance": None, "audit_event": None, "device": None}
    for prov in client.search("Provenance", {"target": f"DocumentReference/{doc['id']}"}, no_cache=True):
        written["provenance"] = f"Provenance/{prov['id']}"
    return written


def submit(client: FhirClient, outbox: Outbox, profile: ServerProfile, run_id: str) -> dict:
    """Send one outbox item. Returns the written ids; raises on failure (item stays pending)."""
    if not profile.transactions:
        raise NotBuiltError(
            f"Write-back to a server without transactions ({profile.name}) is not built yet; "
            "the draft stays in the outbox.", code="sequence_not_built")
    payload = outbox.payload(run_id)
    if payload is None:
        raise AppError("No such draft in the outbox.", code="outbox_missing", http_status=404)
    try:
        already = find_written(client, run_id)
        if already is not None:
            outbox.mark_sent(run_id, already)
            event(log, "writeback.already_written", run_id=run_id)
            return already
        response = client.transaction(payload)
    except UpstreamError as exc:
        outbox.mark_attempt(run_id, exc.code)
        event(log, "writeback.failed", run_id=run_id, error_code=exc.code,
              http_status=getattr(exc, "status", None))
        raise
    written = _ids_from_response(response)
    if not written["document_reference"]:
        outbox.mark_attempt(run_id, "no_location")
        raise TemporaryUpstreamError("The server did not confirm the draft; it stays queued.",
                                     code="writeback_unconfirmed")
    outbox.mark_sent(run_id, written)
    event(log, "writeback.written", run_id=run_id, written=True)
    return written


def retry_pending(client_for, outbox: Outbox, profile_for) -> list[dict]:  # type: ignore[no-untyped-def]
    """Retry every pending item; ``client_for(fhir_base)`` gives a client (backend token)."""
    results = []
    for item in outbox.pending():
        try:
            written = submit(client_for(item["run_id"]), outbox, profile_for(item["run_id"]), item["run_id"])
            results.append({"run_id": item["run_id"], "state": "sent", "written": written})
        except AppError as exc:
            results.append({"run_id": item["run_id"], "state": "pending", "error_code": exc.code})
    return results


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
