"""Submit a draft: outbox first, then one transaction or a per-server sequence.

../shared/STANDARDS.md, "DocumentReference", "AI transparency and Provenance"
and "Server quirks"; https://hl7.org/fhir/R4/http.html#ccreate and
https://hl7.org/fhir/R4/http.html#transaction.

The outbox payload is the draft's ``DraftSpec`` and ``WriteContext`` (plus,
for a held draft, the clinician's approval); the resources are built from it
when sent, so a retry rebuilds exactly the same resources.

- Every create is conditional, so a retried request cannot duplicate: the
  DocumentReference on its run identifier, the Device on its model
  identifier, and the Provenance and AuditEvent (R4 gives them no
  ``identifier``) on a ``meta.tag`` of ``WRITE_TAG_SYSTEM`` coded
  ``<run id>:<step>`` (``ifNoneExist: _tag=...``). The retry policy
  (``app.retry``) retries only such requests.
- Transaction servers: one Bundle with ``urn:uuid`` references, every entry
  a conditional create. Before sending, the server is asked whether the run is there.
- Servers without transactions (Epic; generic servers without the system
  ``transaction`` interaction): a sequence, each step search-before-create and
  its result kept in the outbox before the next step: DocumentReference
  (``Prefer: return=representation``; ``Location`` when the body is empty),
  Device, Provenance with the versioned target, and the AuditEvent only where
  the server accepts it.
- Oracle Health (no preliminary drafts): nothing is sent; the item waits in
  the outbox as ``held_until_approval``. On approval the review workflow puts
  the approval into the payload; the sequence then writes the document
  ``docStatus=final`` with ``authenticator``, its AI Provenance and the
  verifier Provenance.

A step that fails leaves the item pending (retried with backoff); a process
that dies between steps resumes from the ids kept in the outbox, and the
search before each create finds what the server committed but never
acknowledged. ``hook(point)`` is called at ``before:<step>`` and
``after:<step>`` (server answered, outbox not yet updated) for fault injection.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from app.errors import AppError, FhirError, TemporaryUpstreamError
from app.fhir.client import FhirClient
from app.fhir.validation import validate_for_write
from app.fhir.vendors import ServerProfile
from app.logging import event
from app.writeback import outbox as ob
from app.writeback.builders import (
    DEVICE_IDENTIFIER_SYSTEM,
    IDENTIFIER_SYSTEM,
    REVIEW_TAG_SYSTEM,
    DraftSpec,
    SourceDocument,
    create_ai_device,
    create_audit_event,
    create_document_reference,
    create_provenance,
    create_verification_provenance,
    device_identifier,
)
from app.writeback.outbox import Outbox

log = logging.getLogger(__name__)

__all__ = ["WRITE_TAG_SYSTEM", "Submitter", "WriteContext", "build_transaction", "edit_held", "find_written",
           "outbox_payload", "release_held", "retry_due", "spec_from_json", "spec_to_json", "submit"]

Hook = Callable[[str], None]
KEYS = ("document_reference", "device", "provenance", "verification", "audit_event")
WRITE_TAG_SYSTEM = "urn:smart-draft-agent:write-step"  # code "<run id>:<step>": the key of a conditional create


def write_tag(resource: dict, run_id: str, step: str) -> str:
    """Tag ``resource`` with its write step; returns the ``ifNoneExist`` query that finds it."""
    code = f"{run_id}:{step}"
    tags = resource.setdefault("meta", {}).setdefault("tag", [])
    if not any(t.get("system") == WRITE_TAG_SYSTEM for t in tags):
        tags.append({"system": WRITE_TAG_SYSTEM, "code": code})
    return f"_tag={WRITE_TAG_SYSTEM}|{code}"


@dataclass(frozen=True)
class WriteContext:
    client_id: str
    token_jti: str | None
    user_reference: str | None
    audit_on_server: bool


def _dump(model: Any) -> dict:
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)  # type: ignore[no-any-return]


# --- payload ------------------------------------------------------------------------------
def spec_to_json(spec: DraftSpec) -> dict:
    out = asdict(spec)
    out["created"] = spec.created.isoformat()
    out["sources"] = [{"id": s.id, "version": s.version, "security": [list(x) for x in s.security]}
                      for s in spec.sources]
    return out


def spec_from_json(data: dict) -> DraftSpec:
    values = dict(data)
    values["created"] = datetime.fromisoformat(data["created"])
    values["sources"] = tuple(SourceDocument(s["id"], s.get("version"),
                                             tuple(tuple(x) for x in s.get("security") or ()))
                              for s in data.get("sources") or ())
    return DraftSpec(**values)


def outbox_payload(spec: DraftSpec, ctx: WriteContext) -> dict:
    """What the outbox keeps for a draft (encrypted at rest: it holds the text)."""
    return {"kind": "draft", "spec": spec_to_json(spec), "ctx": asdict(ctx)}


def _approval_time(payload: dict) -> datetime | None:
    approval = payload.get("approval")
    return datetime.fromisoformat(approval["at"]) if approval else None


# --- transaction ----------------------------------------------------------------------------
def build_transaction(spec: DraftSpec, ctx: WriteContext, fhir_base: str) -> dict:
    """The transaction Bundle for a draft (pure apart from fresh urn:uuids)."""
    doc_urn, dev_urn, prov_urn = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
    doc = _dump(create_document_reference(spec))
    device = _dump(create_ai_device(model_id=spec.model_id, agent_version=spec.agent_version))
    prov = _dump(create_provenance(
        target_reference=doc_urn, recorded=spec.created, device_reference=dev_urn,
        enterer_reference=spec.author_reference, transmitter_reference=dev_urn,
        sources=spec.sources, prompt_version=spec.prompt_version, patient_id=spec.patient_id))
    dev_key = device_identifier(spec.model_id, spec.agent_version)
    entries = [
        {"fullUrl": doc_urn, "resource": doc,
         "request": {"method": "POST", "url": "DocumentReference",
                     "ifNoneExist": f"identifier={IDENTIFIER_SYSTEM}|{spec.run_id}"}},
        {"fullUrl": dev_urn, "resource": device,
         "request": {"method": "POST", "url": "Device",
                     "ifNoneExist": f"identifier={DEVICE_IDENTIFIER_SYSTEM}|{dev_key}"}},
        {"fullUrl": prov_urn, "resource": prov,
         "request": {"method": "POST", "url": "Provenance",
                     "ifNoneExist": write_tag(prov, spec.run_id, "provenance")}},
    ]
    if ctx.audit_on_server:
        audit = _dump(create_audit_event(
            action="C", subtype="create", outcome="0", recorded=spec.created,
            user_reference=ctx.user_reference, client_id=ctx.client_id, token_jti=ctx.token_jti,
            entity_references=[doc_urn], patient_id=spec.patient_id, destination=fhir_base))
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": audit,
                        "request": {"method": "POST", "url": "AuditEvent",
                                    "ifNoneExist": write_tag(audit, spec.run_id, "audit_event")}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _ref_from(resource: dict | None, location: str | None, keys: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(``Type/id[/_history/v]``, type) from a returned resource or a Location header."""
    res = resource or {}
    parts = (location or "").split("?")[0].split("/")
    idx = next((i for i, p in enumerate(parts) if p in keys), None)
    rtype = res.get("resourceType") or (parts[idx] if idx is not None else None)
    rid = res.get("id") or (parts[idx + 1] if idx is not None and idx + 1 < len(parts) else None)
    version = (res.get("meta") or {}).get("versionId")
    if version is None and idx is not None and len(parts) > idx + 3 and parts[idx + 2] == "_history":
        version = parts[idx + 3]
    if not rtype or not rid:
        return None, None
    return f"{rtype}/{rid}" + (f"/_history/{version}" if version else ""), rtype


_TYPE_KEYS = {"DocumentReference": "document_reference", "Provenance": "provenance",
              "AuditEvent": "audit_event", "Device": "device"}


def _ids_from_response(bundle: dict) -> dict[str, str | None]:
    written: dict[str, str | None] = dict.fromkeys(KEYS)
    for entry in bundle.get("entry") or []:
        ref, rtype = _ref_from(entry.get("resource"), (entry.get("response") or {}).get("location"),
                               tuple(_TYPE_KEYS))
        if rtype in _TYPE_KEYS and ref:
            # the draft is kept versioned (Provenance targets it); the others by id
            written[_TYPE_KEYS[rtype]] = ref if rtype == "DocumentReference" else "/".join(ref.split("/")[:2])
    return written


def _versioned(resource: dict) -> str:
    version = (resource.get("meta") or {}).get("versionId")
    return f"{resource['resourceType']}/{resource['id']}" + (f"/_history/{version}" if version else "")


def _is_review(prov: dict) -> bool:
    return any(t.get("system") == REVIEW_TAG_SYSTEM for t in (prov.get("meta") or {}).get("tag") or [])


def search_before_create(client: FhirClient, resource_type: str, params: dict[str, str]) -> list[dict] | None:
    """A search before a conditional create, which only saves a duplicate on servers that ignore
    ``If-None-Exist``. None when the server refuses it (403: a token that may create Provenance
    but not read it, ``user/Provenance.c`` without ``.rs``): "not known", and the conditional
    create that follows still keeps the write single."""
    try:
        return list(client.search(resource_type, params, no_cache=True))
    except FhirError as exc:
        if exc.status != 403:
            raise
        event(log, "writeback.search_refused", resource_type=resource_type)
        return None


def find_written(client: FhirClient, run_id: str) -> dict[str, str | None] | None:
    """Ids already on the server for this run (after a crash or a lost acknowledgement)."""
    docs = list(client.search("DocumentReference", {"identifier": f"{IDENTIFIER_SYSTEM}|{run_id}"},
                              no_cache=True))
    if not docs:
        return None
    written: dict[str, str | None] = dict.fromkeys(KEYS)
    written["document_reference"] = _versioned(docs[0])
    for prov in search_before_create(client, "Provenance", {"target": f"DocumentReference/{docs[0]['id']}"}) or []:
        if not _is_review(prov):
            written["provenance"] = f"Provenance/{prov['id']}"
            author = next((a for a in prov.get("agent") or []
                           if (a.get("who") or {}).get("reference", "").startswith("Device/")), None)
            if author:
                written["device"] = author["who"]["reference"]
    return written


# --- the submitter --------------------------------------------------------------------------
class Submitter:
    """Sends outbox items to one FHIR server according to its profile."""

    def __init__(self, client: FhirClient, outbox: Outbox, profile: ServerProfile, *,
                 hook: Hook | None = None) -> None:
        self.client = client
        self.outbox = outbox
        self.profile = profile
        self.hook = hook or (lambda _point: None)

    def submit(self, run_id: str) -> dict:
        """Send one item. Returns the written ids (all None while held); raises on failure."""
        item = self.outbox.get(run_id)
        payload = self.outbox.payload(run_id)
        if item is None or payload is None:
            raise AppError("No such draft in the outbox.", code="outbox_missing", http_status=404)
        if item["state"] == ob.SENT:
            return dict(item["written"] or {})
        if item["state"] == ob.REJECTED:
            raise AppError("This draft was rejected; it is not written.", code="outbox_rejected",
                           http_status=409)
        if payload.get("kind") != "draft":
            raise AppError("This outbox item predates the current format; write it again.",
                           code="outbox_legacy_payload", http_status=409)
        if not self.profile.preliminary_drafts and not payload.get("approval"):
            if item["state"] != ob.HELD:
                self.outbox.set_state(run_id, ob.HELD)
                event(log, "writeback.held", run_id=run_id, profile=self.profile.name)
            return dict.fromkeys(KEYS)
        written: dict[str, str | None] = dict.fromkeys(KEYS) | dict(item["written"] or {})
        try:
            if self.profile.transactions and not payload.get("approval"):
                written = self._transaction(run_id, payload)
            else:
                written = self._sequence(run_id, payload, written)
        except AppError as exc:
            self.outbox.mark_attempt(run_id, exc.code)
            event(log, "writeback.failed", run_id=run_id, error_code=exc.code,
                  http_status=getattr(exc, "status", None))
            raise
        self.outbox.mark_sent(run_id, written)
        event(log, "writeback.written", run_id=run_id, written=True, profile=self.profile.name)
        return written

    # -- one transaction -------------------------------------------------------------------
    def _transaction(self, run_id: str, payload: dict) -> dict[str, str | None]:
        spec, ctx = spec_from_json(payload["spec"]), WriteContext(**payload["ctx"])
        self.hook("before:lookup")
        already = find_written(self.client, run_id)
        if already is not None:
            event(log, "writeback.already_written", run_id=run_id)
            return already
        self.hook("before:transaction")
        response = self.client.transaction(build_transaction(spec, ctx, self.client.base_url))
        self.hook("after:transaction")
        written = _ids_from_response(response)
        if not written["document_reference"]:
            raise TemporaryUpstreamError("The server did not confirm the draft; it stays queued.",
                                         code="writeback_unconfirmed")
        return written

    # -- a sequence of single writes -------------------------------------------------------
    def _sequence(self, run_id: str, payload: dict, written: dict[str, str | None]) -> dict[str, str | None]:
        spec, ctx = spec_from_json(payload["spec"]), WriteContext(**payload["ctx"])
        approval = payload.get("approval")
        if self.profile.requires_encounter and not spec.encounter_id:
            raise AppError("This EHR needs an encounter on every note; launch the app from an "
                           "encounter to write the draft.", code="encounter_required", http_status=409)
        for key, step in self._steps(spec, ctx, approval):
            if written.get(key):
                continue
            self.hook(f"before:{key}")
            ref = step(written)
            self.hook(f"after:{key}")
            written[key] = ref
            self.outbox.record_progress(run_id, written)
        return written

    def _steps(self, spec: DraftSpec, ctx: WriteContext, approval: dict | None
               ) -> Iterator[tuple[str, Callable[[dict], str]]]:
        yield "document_reference", lambda w: self._document(spec, approval)
        yield "device", lambda w: self._device(spec)
        yield "provenance", lambda w: self._provenance(spec, w)
        if approval:
            yield "verification", lambda w: self._verification(approval, w, spec.run_id)
        if ctx.audit_on_server and self.profile.audit_event_create:
            yield "audit_event", lambda w: self._audit_event(spec, ctx, w)

    def _search_one(self, resource_type: str, params: dict[str, str],
                    accept: Callable[[dict], bool] = lambda _r: True) -> dict | None:
        for res in search_before_create(self.client, resource_type, params) or []:
            if accept(res):
                return res
        return None

    def _create(self, resource: dict, if_none_exist: str) -> str:
        """Conditional create (``If-None-Exist``; safe to retry) through the client, so it is audited.

        An empty 201 is read from ``Location`` by the client."""
        validate_for_write(resource)
        created = self.client.create(resource, if_none_exist=if_none_exist)
        if not created.get("id"):
            raise TemporaryUpstreamError("The server did not confirm the write; it stays queued.",
                                         code="writeback_unconfirmed")
        return _versioned(created)

    def _document(self, spec: DraftSpec, approval: dict | None) -> str:
        found = self._search_one("DocumentReference",
                                 {"identifier": f"{IDENTIFIER_SYSTEM}|{spec.run_id}"})
        if found is not None:
            return _versioned(found)
        doc = _dump(create_document_reference(spec, doc_status="final" if approval else "preliminary"))
        if approval:
            doc["authenticator"] = {"reference": approval["reviewer"]}
        return self._create(doc, f"identifier={IDENTIFIER_SYSTEM}|{spec.run_id}")

    def _device(self, spec: DraftSpec) -> str:
        key = device_identifier(spec.model_id, spec.agent_version)
        found = self._search_one("Device", {"identifier": f"{DEVICE_IDENTIFIER_SYSTEM}|{key}"})
        if found is not None:
            return f"Device/{found['id']}"
        device = _dump(create_ai_device(model_id=spec.model_id, agent_version=spec.agent_version))
        return self._create(device, f"identifier={DEVICE_IDENTIFIER_SYSTEM}|{key}")

    @staticmethod
    def _unversioned(ref: str) -> str:
        return "/".join(ref.split("/")[:2])

    def _provenance(self, spec: DraftSpec, written: dict) -> str:
        doc = self._unversioned(written["document_reference"])
        found = self._search_one("Provenance", {"target": doc}, lambda p: not _is_review(p))
        if found is not None:
            return f"Provenance/{found['id']}"
        prov = _dump(create_provenance(
            target_reference=written["document_reference"], recorded=spec.created,
            device_reference=self._unversioned(written["device"]),
            enterer_reference=spec.author_reference,
            transmitter_reference=self._unversioned(written["device"]), sources=spec.sources,
            prompt_version=spec.prompt_version, patient_id=spec.patient_id))
        return self._unversioned(self._create(prov, write_tag(prov, spec.run_id, "provenance")))

    def _verification(self, approval: dict, written: dict, run_id: str) -> str:
        doc = self._unversioned(written["document_reference"])
        found = self._search_one("Provenance", {"target": doc, "_tag": f"{REVIEW_TAG_SYSTEM}|approved"},
                                 _is_review)
        if found is not None:
            return f"Provenance/{found['id']}"
        prov = _dump(create_verification_provenance(
            target_reference=written["document_reference"],
            recorded=datetime.fromisoformat(approval["at"]),
            verifier_reference=approval["reviewer"],
            device_reference=self._unversioned(written["device"])))
        return self._unversioned(self._create(prov, write_tag(prov, run_id, "verification")))

    def _audit_event(self, spec: DraftSpec, ctx: WriteContext, written: dict) -> str:
        doc = self._unversioned(written["document_reference"])
        found = self._search_one("AuditEvent", {"entity": doc, "action": "C"})
        if found is not None:
            return f"AuditEvent/{found['id']}"
        audit = _dump(create_audit_event(
            action="C", subtype="create", outcome="0", recorded=spec.created,
            user_reference=ctx.user_reference, client_id=ctx.client_id, token_jti=ctx.token_jti,
            entity_references=[written["document_reference"]], patient_id=spec.patient_id,
            destination=self.client.base_url))
        return self._unversioned(self._create(audit, write_tag(audit, spec.run_id, "audit_event")))


def submit(client: FhirClient, outbox: Outbox, profile: ServerProfile, run_id: str, *,
           hook: Hook | None = None) -> dict:
    """Send one outbox item (see ``Submitter.submit``)."""
    return Submitter(client, outbox, profile, hook=hook).submit(run_id)


def retry_due(client_for: Callable[[dict], FhirClient], outbox: Outbox,
              profile_for: Callable[[FhirClient], ServerProfile], *, force: bool = False) -> list[dict]:
    """Retry the pending items whose backoff elapsed (every pending or failed one with ``force``).

    ``client_for(item)`` gives a client for the item's FHIR base (a backend token in the CLI).
    """
    if force:
        for item in outbox.all():
            if item["state"] in (ob.PENDING, ob.FAILED):
                outbox.retry_now(item["run_id"])
    results = []
    for item in outbox.due():
        run_id = item["run_id"]
        try:
            client = client_for(item)
            written = submit(client, outbox, profile_for(client), run_id)
            results.append({"run_id": run_id, "state": outbox.get(run_id)["state"],  # type: ignore[index]
                            "written": written})
        except AppError as exc:
            results.append({"run_id": run_id, "state": (outbox.get(run_id) or {}).get("state"),
                            "error_code": exc.code})
    return results


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def release_held(outbox: Outbox, run_id: str, *, reviewer: str, at: datetime,
                 text: str | None = None) -> None:
    """A clinician approved a held draft (Oracle Health): it becomes pending with the approval.

    The next ``submit`` writes it ``docStatus=final`` with ``authenticator`` =
    the reviewer, its AI Provenance and a verifier Provenance. ``text``
    replaces the draft's text when the clinician edited it before approving.
    """
    item = outbox.get(run_id)
    payload = outbox.payload(run_id)
    if item is None or payload is None:
        raise AppError("No such draft in the outbox.", code="outbox_missing", http_status=404)
    if item["state"] != ob.HELD:
        raise AppError("This draft is not waiting for approval in the app.", code="not_held",
                       http_status=409)
    payload = dict(payload, approval={"reviewer": reviewer, "at": _instant_str(at)})
    if text is not None:
        payload["spec"] = dict(payload["spec"], text=text)
    outbox.replace_payload(run_id, payload, state=ob.PENDING)


def edit_held(outbox: Outbox, run_id: str, text: str) -> str:
    """Replace the text of a held draft; returns the previous text (for the edit distance)."""
    item, payload = outbox.get(run_id), outbox.payload(run_id)
    if item is None or payload is None or item["state"] != ob.HELD:
        raise AppError("This draft is not waiting for approval in the app.", code="not_held",
                       http_status=409)
    old = str(payload["spec"]["text"])
    outbox.replace_payload(run_id, dict(payload, spec=dict(payload["spec"], text=text)))
    return old


def _instant_str(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("approval time needs a timezone")
    return at.isoformat()
