"""FHIR R4 resources the app writes: the draft, the AI Device, Provenance, AuditEvent.

Pure functions (no I/O, no clock, no randomness) returning ``fhir.resources.R4B``
models, which validate on construction. Spec sections followed
(../shared/STANDARDS.md):

- "DocumentReference": US Core 8.0.1 DocumentReference; an AI draft is
  ``status=current``, ``docStatus=preliminary``, with an ``identifier`` for
  idempotent conditional create.
  https://hl7.org/fhir/us/core/STU8.0.1/StructureDefinition-us-core-documentreference.html
- "AI transparency and Provenance": AI Transparency on FHIR 1.0.0-ballot
  (AIAST label, AI-Device, AI-Provenance) and US Core Provenance.
  https://build.fhir.org/ig/HL7/aitransparency-ig/
- "AuditEvent (IHE BALP shape)": IHE BALP 1.1 Create / PatientRead /
  PatientQuery patterns and the OAuth token mapping (jti -> agent[user].policy).
  https://profiles.ihe.net/ITI/BALP/content.html
- "Security labels": a draft carries the highest v3-Confidentiality of
  everything it drew on (the notes it cites, and the Patient and Conditions of
  the chart: ``DraftSpec.context_security``), their sensitivity and law labels,
  and AIAST.

Nothing here receives a patient's name; note text only ever goes into the
DocumentReference attachment (base64), never into a description, title, or any
Provenance or AuditEvent element.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.provenance import Provenance

from app.retrieval.policy import VOCABULARY as _VOCABULARY

__all__ = [
    "AIAST", "AI_DEVICE_TYPE", "CONFIDENTIALITY_SYSTEM", "IDENTIFIER_SYSTEM",
    "PROMPT_IDENTIFIER_SYSTEM", "DEVICE_IDENTIFIER_SYSTEM", "REVIEW_TAG_SYSTEM",
    "REJECT_REASON_SYSTEM", "DraftSpec", "SourceDocument", "create_ai_device",
    "create_model_call_audit_event",
    "create_audit_event", "create_document_reference", "create_provenance",
    "create_rejection_provenance", "create_verification_provenance", "device_identifier",
    "highest_confidentiality", "versioned_reference",
]

# --- Code systems and fixed codes -------------------------------------------------
IDENTIFIER_SYSTEM = "urn:smart-draft-agent:draft-run"
"""``DocumentReference.identifier.system``; the value is the agent run id (idempotency key)."""
PROMPT_IDENTIFIER_SYSTEM = "urn:smart-draft-agent:prompt"
DEVICE_IDENTIFIER_SYSTEM = "urn:smart-draft-agent:ai-device"
"""``Device.identifier.system``; the value is ``<model id>@<agent version>`` (one Device per pair)."""
REVIEW_TAG_SYSTEM = "urn:smart-draft-agent:review"
"""``meta.tag`` of review Provenances (``approved`` / ``rejected``), so ``_tag`` finds approvals."""
REJECT_REASON_SYSTEM = "urn:smart-draft-agent:reject-reason"

OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
AIAST: dict[str, str] = {"system": OBSERVATION_VALUE, "code": "AIAST",
                         "display": "Artificial Intelligence asserted"}
AI_DEVICE_TYPE: dict[str, str] = {
    "system": "http://hl7.org/fhir/uv/aitransparency/CodeSystem/AIdeviceTypeCS",
    "code": "Artificial-Intelligence", "display": "Artificial Intelligence"}

CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
_CONFIDENTIALITY_ALIASES = frozenset({CONFIDENTIALITY_SYSTEM} | {
    k for k, v in _VOCABULARY.aliases.items() if v == CONFIDENTIALITY_SYSTEM})
CONFIDENTIALITY_ORDER: tuple[str, ...] = ("U", "L", "M", "N", "R", "V")
_CONFIDENTIALITY_DISPLAY = {"U": "unrestricted", "L": "low", "M": "moderate", "N": "normal",
                            "R": "restricted", "V": "very restricted"}
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SENSITIVITY_CODES = frozenset({"ETH", "SUD", "PSY", "MH", "BH", "HIV", "STD", "SDV", "SEX",
                               "42CFRPart2"})
# the role policy's vocabulary (app/retrieval/label_systems.yaml): exact spellings and aliases
_ACT_CODE_SPELLINGS = {ACT_CODE_SYSTEM: True} | {
    k: True for k, v in _VOCABULARY.aliases.items() if v == ACT_CODE_SYSTEM}
_SENSITIVITY_ALIASES = dict(_VOCABULARY.sensitivity_aliases)

LOINC = "http://loinc.org"
US_CORE_DOC_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
US_CORE_PARTICIPANT_TYPE = (
    "http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type")
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"

DCM = "http://dicom.nema.org/resources/ontology/DCM"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
AUDIT_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SECURITY_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
NETWORK_TYPE = "http://hl7.org/fhir/network-type"
CLIENT_ID_SYSTEM = "urn:smart-draft-agent:client-id"

AUDIT_ACTIONS = frozenset({"C", "R", "U", "D", "E"})
AUDIT_OUTCOMES = frozenset({"0", "4", "8", "12"})
RESTFUL_INTERACTIONS = frozenset({
    "read", "vread", "update", "patch", "delete", "history", "history-instance", "history-type",
    "history-system", "create", "search", "search-type", "search-system", "search-compartment",
    "capabilities", "transaction", "batch", "operation"})


# --- Inputs -------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceDocument:
    """A note the draft cites: its id, version and security labels ``(system, code)``."""

    id: str
    version: str | None
    security: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DraftSpec:
    """Everything needed to write one draft; ids and references only, no names."""

    run_id: str
    task: str
    loinc_code: str
    loinc_display: str
    text: str
    patient_id: str
    encounter_id: str | None
    author_reference: str
    sources: tuple[SourceDocument, ...]
    created: datetime
    model_id: str
    agent_version: str
    prompt_version: str
    # labels of the other resources the draft drew on (the Patient, its Conditions): the
    # draft carries the most restrictive confidentiality of these and of its sources
    context_security: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:  # the outbox stores JSON lists: keep tuples (hashable, equal)
        object.__setattr__(self, "context_security",
                           tuple((str(s), str(c)) for s, c in self.context_security))


# --- Helpers --------------------------------------------------------------------------
def _instant(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("FHIR instants need a timezone-aware datetime")
    return value.isoformat()


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def versioned_reference(resource_type: str, resource_id: str, version: str | None) -> str:
    """``Type/id/_history/v`` when the version is known, else ``Type/id``."""
    return f"{resource_type}/{resource_id}" + (f"/_history/{version}" if version else "")


def highest_confidentiality(labels: Iterable[tuple[str, str]]) -> str:
    """The most restrictive v3-Confidentiality code among ``(system, code)`` labels.

    Order U < L < M < N < R < V; "N" when no confidentiality label is present
    (STANDARDS "Security labels"). Labels of other systems are ignored. An
    unrecognised code *in the confidentiality system* fails closed to "R":
    a label we cannot read is not proof that the source is unrestricted.
    """
    best = CONFIDENTIALITY_ORDER.index("N")
    found = False
    for system, code in labels:
        if system not in _CONFIDENTIALITY_ALIASES:
            continue
        rank = (CONFIDENTIALITY_ORDER.index(code) if code in CONFIDENTIALITY_ORDER
                else CONFIDENTIALITY_ORDER.index("R"))
        best = rank if not found else max(best, rank)
        found = True
    return CONFIDENTIALITY_ORDER[best]


def _label_sets(spec: DraftSpec) -> list[tuple[tuple[str, str], ...]]:
    """One label set per thing the draft drew on: each cited note, and the chart context."""
    sets = [tuple(src.security) for src in spec.sources]
    if spec.context_security:
        sets.append(spec.context_security)
    return sets


def _draft_confidentiality(spec: DraftSpec) -> str:
    """Highest confidentiality over the sources and the context, unlabelled counting as N.

    So a U-labelled note cited next to an unlabelled one does not pull the draft
    below N: a missing label is not proof of non-sensitivity.
    """
    per_source = [highest_confidentiality(labels) for labels in _label_sets(spec)]
    return max(per_source or ["N"], key=CONFIDENTIALITY_ORDER.index)


def _confidentiality_coding(code: str) -> dict[str, str]:
    return _coding(CONFIDENTIALITY_SYSTEM, code, _CONFIDENTIALITY_DISPLAY[code])


def _sensitivity_codings(spec: DraftSpec) -> list[dict[str, str]]:
    """v3-ActCode sensitivity and law labels (SUD, PSY, 42CFRPart2, ...) of everything the
    draft drew on, as written by the source (a specific code such as PSYTHPN stays), deduplicated."""
    codes = sorted({code for labels in _label_sets(spec) for system, code in labels
                    if _ACT_CODE_SPELLINGS.get(system) and (
                        code in SENSITIVITY_CODES or _SENSITIVITY_ALIASES.get(code))})
    return [_coding(ACT_CODE_SYSTEM, code) for code in codes]


def _source_reference(src: SourceDocument) -> str:
    return versioned_reference("DocumentReference", src.id, src.version)


# --- DocumentReference ------------------------------------------------------------------
def create_document_reference(spec: DraftSpec, *,
                              doc_status: str = "preliminary") -> DocumentReference:
    """The draft note (STANDARDS "DocumentReference", "Security labels").

    ``meta.security`` carries AIAST, the highest confidentiality of the cited
    sources (also as ``securityLabel``) and the sources' v3-ActCode
    sensitivity labels, so a draft quoting a 42 CFR Part 2 note stays
    labelled as such.
    """
    if doc_status not in {"preliminary", "final", "amended", "entered-in-error"}:
        raise ValueError(f"unknown docStatus {doc_status!r}")
    confidentiality = _draft_confidentiality(spec)
    conf_coding = _confidentiality_coding(confidentiality)
    raw = spec.text.encode("utf-8")
    sha1 = hashlib.sha1(raw, usedforsecurity=False).digest()  # FHIR Attachment.hash is SHA-1
    context: dict[str, object] = {}
    if spec.encounter_id:
        context["encounter"] = [{"reference": f"Encounter/{spec.encounter_id}"}]
    if spec.sources:
        context["related"] = [{"reference": _source_reference(src)} for src in spec.sources]
    resource: dict[str, object] = {
        "resourceType": "DocumentReference",
        "meta": {"security": [dict(AIAST), conf_coding, *_sensitivity_codings(spec)]},
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": spec.run_id}],
        "status": "current",
        "docStatus": doc_status,
        "type": {"coding": [_coding(LOINC, spec.loinc_code, spec.loinc_display)],
                 "text": spec.loinc_display},
        "category": [{"coding": [_coding(US_CORE_DOC_CATEGORY, "clinical-note", "Clinical Note")]}],
        "subject": {"reference": f"Patient/{spec.patient_id}"},
        "date": _instant(spec.created),
        "author": [{"reference": spec.author_reference}],
        "description": (f"Unreviewed AI-generated draft (task {spec.task}); "
                        "requires clinician review"),
        "securityLabel": [{"coding": [conf_coding]}],
        "content": [{"attachment": {
            "contentType": "text/plain; charset=utf-8",
            "data": base64.b64encode(raw).decode("ascii"),
            "size": len(raw),
            "hash": base64.b64encode(sha1).decode("ascii"),
            "title": f"AI draft: {spec.loinc_display}",
            "creation": _instant(spec.created),
        }}],
    }
    if context:
        resource["context"] = context
    return DocumentReference.model_validate(resource)


# --- Device -------------------------------------------------------------------------------
def device_identifier(model_id: str, agent_version: str) -> str:
    """The Device's identifier value: one Device per (model, agent version)."""
    return f"{model_id}@{agent_version}"


def create_ai_device(*, model_id: str, agent_version: str, device_id: str | None = None) -> Device:
    """The AI that wrote the draft (AI Transparency AI-Device profile).

    ``version`` holds two typed entries, agent and model, so a reader need not
    parse a combined string. ``identifier`` (``DEVICE_IDENTIFIER_SYSTEM``) names
    the pair, for conditional create and for "drafts by model version" queries
    (R4 has no Device ``version`` search parameter).
    """
    resource: dict[str, object] = {
        "resourceType": "Device",
        "meta": {"security": [dict(AIAST)]},
        "identifier": [{"system": DEVICE_IDENTIFIER_SYSTEM,
                        "value": device_identifier(model_id, agent_version)}],
        "status": "active",
        "type": {"coding": [dict(AI_DEVICE_TYPE)]},
        "deviceName": [{"name": f"SMART draft agent ({model_id})", "type": "user-friendly-name"}],
        "manufacturer": "SMART draft agent project",
        "version": [{"type": {"text": "agent"}, "value": agent_version},
                    {"type": {"text": "model"}, "value": model_id}],
    }
    if device_id:
        resource["id"] = device_id
    return Device.model_validate(resource)


# --- Provenance --------------------------------------------------------------------------
def create_provenance(*, target_reference: str, recorded: datetime, device_reference: str,
                      enterer_reference: str, transmitter_reference: str | None,
                      sources: Sequence[SourceDocument], prompt_version: str,
                      patient_id: str) -> Provenance:
    """How the draft came to be (AI-Provenance + US Core Provenance).

    Agents: the Device as ``author`` (role Artificial-Intelligence), the
    launching user as ``enterer``, the app as US Core ``transmitter``.
    Entities: each cited note as ``source`` (versioned) and the prompt as
    ``derivation`` by identifier. ``activity`` is v3-DataOperation CREATE.

    ``patient_id`` is checked (non-empty) but not emitted: R4 Provenance has no
    subject, and putting the Patient in ``target`` would claim the AI produced
    the Patient resource. The server links it to the patient via the target.
    """
    if not patient_id:
        raise ValueError("patient_id is required")
    agents: list[dict[str, object]] = [
        {"type": {"coding": [_coding(PARTICIPANT_TYPE, "author", "Author")]},
         "role": [{"coding": [dict(AI_DEVICE_TYPE)]}],
         "who": {"reference": device_reference}},
        {"type": {"coding": [_coding(PARTICIPANT_TYPE, "enterer", "Enterer")]},
         "who": {"reference": enterer_reference}},
    ]
    if transmitter_reference:
        agents.append({"type": {"coding": [_coding(US_CORE_PARTICIPANT_TYPE, "transmitter",
                                                   "Transmitter")]},
                       "who": {"reference": transmitter_reference}})
    entities: list[dict[str, object]] = [
        {"role": "source", "what": {"reference": _source_reference(src)}} for src in sources]
    entities.append({"role": "derivation",
                     "what": {"identifier": {"system": PROMPT_IDENTIFIER_SYSTEM,
                                             "value": prompt_version}}})
    return Provenance.model_validate({
        "resourceType": "Provenance",
        "meta": {"security": [dict(AIAST)]},
        "target": [{"reference": target_reference}],
        "recorded": _instant(recorded),
        "reason": [{"coding": [dict(AIAST)]}],
        "activity": {"coding": [_coding(DATA_OPERATION, "CREATE", "create")]},
        "agent": agents,
        "entity": entities,
    })


def create_verification_provenance(*, target_reference: str, recorded: datetime,
                                   verifier_reference: str,
                                   device_reference: str | None = None) -> Provenance:
    """A clinician approved the draft (STANDARDS: approval adds a verifier Provenance).

    ``activity`` is v3-DataOperation UPDATE: approval moves the document from
    preliminary to final (PUT) or replaces it. When ``device_reference`` is
    given the AI Device stays on record as author of the verified content.
    The resource is written by a human act, so it carries no AIAST label.
    """
    agents: list[dict[str, object]] = [
        {"type": {"coding": [_coding(PARTICIPANT_TYPE, "verifier", "Verifier")]},
         "who": {"reference": verifier_reference}}]
    if device_reference:
        agents.append({"type": {"coding": [_coding(PARTICIPANT_TYPE, "author", "Author")]},
                       "role": [{"coding": [dict(AI_DEVICE_TYPE)]}],
                       "who": {"reference": device_reference}})
    return Provenance.model_validate({
        "resourceType": "Provenance",
        "meta": {"tag": [_coding(REVIEW_TAG_SYSTEM, "approved", "approved")]},
        "target": [{"reference": target_reference}],
        "recorded": _instant(recorded),
        "activity": {"coding": [_coding(DATA_OPERATION, "UPDATE", "revise")]},
        "agent": agents,
    })


def create_rejection_provenance(*, target_reference: str, recorded: datetime,
                                reviewer_reference: str, reason_code: str) -> Provenance:
    """A clinician rejected the draft (``status=entered-in-error``).

    ``activity`` is v3-DataOperation NULLIFY; the reason is a code of
    ``REJECT_REASON_SYSTEM`` (never free text); the clinician is the verifier
    who judged it. Tagged ``review#rejected``.
    """
    if not reason_code or not reason_code.replace("_", "").isalnum():
        raise ValueError("reason_code must be a code, not free text")
    return Provenance.model_validate({
        "resourceType": "Provenance",
        "meta": {"tag": [_coding(REVIEW_TAG_SYSTEM, "rejected", "rejected")]},
        "target": [{"reference": target_reference}],
        "recorded": _instant(recorded),
        "reason": [{"coding": [_coding(REJECT_REASON_SYSTEM, reason_code)]}],
        "activity": {"coding": [_coding(DATA_OPERATION, "NULLIFY", "nullify")]},
        "agent": [{"type": {"coding": [_coding(PARTICIPANT_TYPE, "verifier", "Verifier")]},
                   "who": {"reference": reviewer_reference}}],
    })


# --- AuditEvent ---------------------------------------------------------------------------
def _user_agent_type(action: str) -> dict[str, str]:
    # BALP: creates/updates/deletes -> DataSources (AUT); reads/queries -> IRCP.
    if action in {"R", "E"}:
        return _coding(PARTICIPATION_TYPE, "IRCP", "information recipient")
    return _coding(PARTICIPATION_TYPE, "AUT", "author (originator)")


def create_audit_event(*, action: str, subtype: str, outcome: str, recorded: datetime,
                       user_reference: str | None, client_id: str, token_jti: str | None,
                       entity_references: Sequence[str], patient_id: str | None,
                       source_observer: str = "smart-draft-agent",
                       destination: str | None = None, query: str | None = None) -> AuditEvent:
    """A BALP-shaped RESTful AuditEvent (STANDARDS "AuditEvent (IHE BALP shape)").

    Agents: the app (DCM 110153 Source Role ID, ``who.identifier`` = client_id),
    the FHIR server (DCM 110152, ``network.address`` = its base) when known,
    the user (AUT for C/U/D, IRCP for R/E; requestor) with the token's ``jti``
    in ``policy`` (BALP OAuth mapping). Without a user, the app is the
    requestor and carries the jti. Entities: each resource (type 2, role 4),
    the patient (type 1, role 1) and, for searches, the query (type 2, role 24,
    base64 in ``query``; the caller passes parameter names and ids only).
    Never the token itself, never note text, no free-text descriptions.
    """
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"unknown AuditEvent.action {action!r}")
    if outcome not in AUDIT_OUTCOMES:
        raise ValueError(f"unknown AuditEvent.outcome {outcome!r}")
    if subtype not in RESTFUL_INTERACTIONS:
        raise ValueError(f"unknown restful-interaction {subtype!r}")
    has_user = bool(user_reference)
    client: dict[str, object] = {
        "type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
        "who": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id},
                "display": source_observer},
        "requestor": not has_user,
    }
    if token_jti and not has_user:
        client["policy"] = [token_jti]
    agents: list[dict[str, object]] = [client]
    if destination:
        agents.append({
            "type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
            "who": {"identifier": {"system": "urn:ietf:rfc:3986", "value": destination}},
            "requestor": False,
            "network": {"address": destination, "type": "5"},
        })
    if has_user:
        user: dict[str, object] = {"type": {"coding": [_user_agent_type(action)]},
                                   "who": {"reference": user_reference}, "requestor": True}
        if token_jti:
            user["policy"] = [token_jti]
        agents.append(user)
    entities: list[dict[str, object]] = [
        {"what": {"reference": ref},
         "type": _coding(AUDIT_ENTITY_TYPE, "2", "System Object"),
         "role": _coding(OBJECT_ROLE, "4", "Domain Resource")} for ref in entity_references]
    if patient_id:
        entities.append({"what": {"reference": f"Patient/{patient_id}"},
                         "type": _coding(AUDIT_ENTITY_TYPE, "1", "Person"),
                         "role": _coding(OBJECT_ROLE, "1", "Patient")})
    if query:
        entities.append({"type": _coding(AUDIT_ENTITY_TYPE, "2", "System Object"),
                         "role": _coding(OBJECT_ROLE, "24", "Query"),
                         "query": base64.b64encode(query.encode("utf-8")).decode("ascii")})
    resource: dict[str, object] = {
        "resourceType": "AuditEvent",
        "type": _coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation"),
        "subtype": [_coding(RESTFUL_INTERACTION, subtype, subtype)],
        "action": action,
        "recorded": _instant(recorded),
        "outcome": outcome,
        "agent": agents,
        "source": {"observer": {"display": source_observer},
                   "type": [_coding(SECURITY_SOURCE_TYPE, "4", "Application Server")]},
    }
    if entities:
        resource["entity"] = entities
    return AuditEvent.model_validate(resource)


MODEL_CALL_SYSTEM = "urn:smart-draft-agent:audit"
MODEL_IDENTIFIER_SYSTEM = "urn:smart-draft-agent:model"


def create_model_call_audit_event(*, started: datetime, ended: datetime, outcome: str,
                                  user_reference: str | None, client_id: str, token_jti: str | None,
                                  backend: str, model_id: str, run_id: str,
                                  patient_id: str | None) -> AuditEvent:
    """A call of the language model (no BALP pattern exists; shaped like its REST events).

    ``type`` DCM 110100 Application Activity, ``subtype`` ``model-call``;
    entities: the model by identifier (``backend/model``), the run by its
    draft-run identifier and the patient. ``period`` holds the timing.
    Never the prompt or the completion.
    """
    if outcome not in AUDIT_OUTCOMES:
        raise ValueError(f"unknown AuditEvent.outcome {outcome!r}")
    client: dict[str, object] = {
        "type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
        "who": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id},
                "display": "smart-draft-agent"},
        "requestor": not user_reference}
    agents: list[dict[str, object]] = [client]
    if user_reference:
        user: dict[str, object] = {"type": {"coding": [_user_agent_type("E")]},
                                   "who": {"reference": user_reference}, "requestor": True}
        if token_jti:
            user["policy"] = [token_jti]
        agents.append(user)
    elif token_jti:
        client["policy"] = [token_jti]
    entities: list[dict[str, object]] = [
        {"what": {"identifier": {"system": MODEL_IDENTIFIER_SYSTEM, "value": f"{backend}/{model_id}"}},
         "type": _coding(AUDIT_ENTITY_TYPE, "2", "System Object"),
         "role": _coding(OBJECT_ROLE, "4", "Domain Resource")},
        {"what": {"identifier": {"system": IDENTIFIER_SYSTEM, "value": run_id}},
         "type": _coding(AUDIT_ENTITY_TYPE, "2", "System Object"),
         "role": _coding(OBJECT_ROLE, "20", "Job")}]
    if patient_id:
        entities.append({"what": {"reference": f"Patient/{patient_id}"},
                         "type": _coding(AUDIT_ENTITY_TYPE, "1", "Person"),
                         "role": _coding(OBJECT_ROLE, "1", "Patient")})
    return AuditEvent.model_validate({
        "resourceType": "AuditEvent",
        "type": _coding(DCM, "110100", "Application Activity"),
        "subtype": [_coding(MODEL_CALL_SYSTEM, "model-call", "model call")],
        "action": "E",
        "period": {"start": _instant(started), "end": _instant(ended)},
        "recorded": _instant(ended),
        "outcome": outcome,
        "agent": agents,
        "source": {"observer": {"display": "smart-draft-agent"},
                   "type": [_coding(SECURITY_SOURCE_TYPE, "4", "Application Server")]},
        "entity": entities,
    })
