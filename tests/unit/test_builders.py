"""app.writeback.builders: R4B validity, fhirclient (R4) strict parsing, fixed codes, no leaks."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.provenance import Provenance
from fhirclient.models.auditevent import AuditEvent as FCAuditEvent
from fhirclient.models.device import Device as FCDevice
from fhirclient.models.documentreference import DocumentReference as FCDocRef
from fhirclient.models.provenance import Provenance as FCProvenance
from hypothesis import given
from hypothesis import strategies as st

from app.writeback import builders as b
from app.writeback.builders import (
    CONFIDENTIALITY_ORDER,
    CONFIDENTIALITY_SYSTEM,
    IDENTIFIER_SYSTEM,
    DraftSpec,
    SourceDocument,
    create_ai_device,
    create_audit_event,
    create_document_reference,
    create_provenance,
    create_rejection_provenance,
    create_verification_provenance,
    highest_confidentiality,
)

CANARY = "Zyxwend Canarywhistle"
TOKEN = "eyJhbGciOiJSUzM4NCJ9.secret-access-token-value.sig"  # noqa: S105 (test value)
JTI = "jti-7f3a9c"
AIAST = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "AIAST")
AI_TYPE = ("http://hl7.org/fhir/uv/aitransparency/CodeSystem/AIdeviceTypeCS",
           "Artificial-Intelligence")
WHEN = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def _spec(**overrides: object) -> DraftSpec:
    values: dict[str, object] = dict(
        run_id="0b6f8c1e-3f7d-4c2a-9a55-2b7d8f1e9c01", task="summary", loinc_code="60591-5",
        loinc_display="Patient summary Document",
        text=f"{CANARY} has stage III NSCLC; started pembrolizumab [DocumentReference/n1].",
        patient_id="pat-1", encounter_id="enc-1", author_reference="Practitioner/prac-onc-1",
        sources=(SourceDocument("n1", "3", ((CONFIDENTIALITY_SYSTEM, "N"),)),
                 SourceDocument("n2", None, ((CONFIDENTIALITY_SYSTEM, "R"), (ACT, "PSY")))),
        created=WHEN, model_id="claude-test-1", agent_version="0.3.0", prompt_version="summary-v2")
    values.update(overrides)
    return DraftSpec(**values)  # type: ignore[arg-type]


def _json(model: object) -> dict:
    dump = model.model_dump  # type: ignore[attr-defined]
    return dump(mode="json", exclude_none=True, by_alias=True)


def _codings(items: list[dict]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in items}


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _audit(**overrides: object) -> AuditEvent:
    values: dict[str, object] = dict(
        action="C", subtype="create", outcome="0", recorded=WHEN,
        user_reference="Practitioner/prac-onc-1", client_id="smart-draft-agent-client",
        token_jti=JTI, entity_references=["DocumentReference/d9/_history/1"], patient_id="pat-1",
        destination="https://ehr.test/fhir/r4")
    values.update(overrides)
    return create_audit_event(**values)  # type: ignore[arg-type]


# --- DocumentReference ----------------------------------------------------------------------------
def test_document_reference_validates_in_both_libraries() -> None:
    doc = _json(create_document_reference(_spec()))
    DocumentReference.model_validate(doc)
    FCDocRef(doc, strict=True)


def test_document_reference_fixed_elements() -> None:
    doc = _json(create_document_reference(_spec()))
    assert doc["status"] == "current" and doc["docStatus"] == "preliminary"
    assert doc["identifier"] == [{"system": IDENTIFIER_SYSTEM,
                                  "value": "0b6f8c1e-3f7d-4c2a-9a55-2b7d8f1e9c01"}]
    assert ("http://loinc.org", "60591-5") in _codings(doc["type"]["coding"])
    assert _codings(doc["category"][0]["coding"]) == {
        ("http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
         "clinical-note")}
    assert doc["subject"] == {"reference": "Patient/pat-1"}
    assert doc["author"] == [{"reference": "Practitioner/prac-onc-1"}]
    assert doc["context"]["encounter"] == [{"reference": "Encounter/enc-1"}]
    assert doc["date"].startswith("2026-01-15T09:30:00")
    att = doc["content"][0]["attachment"]
    assert att["contentType"] == "text/plain; charset=utf-8"
    assert base64.b64decode(att["data"]).decode("utf-8") == _spec().text
    assert "Unreviewed AI-generated draft" in doc["description"] and "summary" in doc["description"]


def test_document_reference_doc_status_can_be_final() -> None:
    assert create_document_reference(_spec(), doc_status="final").docStatus == "final"
    with pytest.raises(ValueError):
        create_document_reference(_spec(), doc_status="approved")


def test_document_reference_labels_aiast_and_highest_confidentiality() -> None:
    doc = _json(create_document_reference(_spec()))
    security = _codings(doc["meta"]["security"])
    assert AIAST in security
    assert (CONFIDENTIALITY_SYSTEM, "R") in security  # the R source wins over N
    assert (CONFIDENTIALITY_SYSTEM, "N") not in security
    assert (ACT, "PSY") in security  # sensitivity of a cited source is carried over
    assert _codings(doc["securityLabel"][0]["coding"]) == {(CONFIDENTIALITY_SYSTEM, "R")}


def test_document_reference_defaults_to_normal_without_labels() -> None:
    spec = _spec(sources=(SourceDocument("n1", "1"),))
    doc = _json(create_document_reference(spec))
    assert (CONFIDENTIALITY_SYSTEM, "N") in _codings(doc["meta"]["security"])


def test_document_reference_related_are_versioned_when_known() -> None:
    doc = _json(create_document_reference(_spec()))
    assert [r["reference"] for r in doc["context"]["related"]] == [
        "DocumentReference/n1/_history/3", "DocumentReference/n2"]


def test_document_reference_without_encounter_or_sources() -> None:
    doc = _json(create_document_reference(_spec(encounter_id=None, sources=())))
    assert "context" not in doc
    FCDocRef(doc, strict=True)


def test_document_reference_text_only_in_base64_attachment() -> None:
    doc = _json(create_document_reference(_spec()))
    assert not any(CANARY in s or "pembrolizumab" in s for s in _strings(doc))


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError):
        create_document_reference(_spec(created=datetime(2026, 1, 1)))  # noqa: DTZ001


def test_offset_datetime_is_kept() -> None:
    when = datetime(2026, 1, 15, 4, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert create_document_reference(_spec(created=when)).date == when


# --- Device ---------------------------------------------------------------------------------------
def test_ai_device() -> None:
    dev = _json(create_ai_device(model_id="claude-test-1", agent_version="0.3.0", device_id="ai-1"))
    Device.model_validate(dev)
    FCDevice(dev, strict=True)
    assert dev["id"] == "ai-1"
    assert _codings(dev["type"]["coding"]) == {AI_TYPE}
    assert AIAST in _codings(dev["meta"]["security"])
    assert {v["value"] for v in dev["version"]} == {"0.3.0", "claude-test-1"}
    assert dev["deviceName"] == [{"name": "SMART draft agent (claude-test-1)",
                                  "type": "user-friendly-name"}]
    assert dev["manufacturer"] == "SMART draft agent project"
    assert dev["identifier"] == [{"system": "urn:smart-draft-agent:ai-device",
                                  "value": "claude-test-1@0.3.0"}]


# --- Provenance -----------------------------------------------------------------------------------
def _provenance(**overrides: object) -> dict:
    values: dict[str, object] = dict(
        target_reference="DocumentReference/d9/_history/1", recorded=WHEN,
        device_reference="Device/ai-1", enterer_reference="Practitioner/prac-onc-1",
        transmitter_reference="Device/ai-1", sources=_spec().sources,
        prompt_version="summary-v2", patient_id="pat-1")
    values.update(overrides)
    return _json(create_provenance(**values))  # type: ignore[arg-type]


def _agent(prov: dict, system: str, code: str) -> dict:
    [agent] = [a for a in prov["agent"] if (system, code) in _codings(a["type"]["coding"])]
    return agent


def test_provenance_validates_and_parses() -> None:
    prov = _provenance()
    Provenance.model_validate(prov)
    FCProvenance(prov, strict=True)


def test_provenance_shape() -> None:
    prov = _provenance()
    pt = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
    assert prov["target"] == [{"reference": "DocumentReference/d9/_history/1"}]
    assert AIAST in _codings(prov["reason"][0]["coding"])
    assert AIAST in _codings(prov["meta"]["security"])
    author = _agent(prov, pt, "author")
    assert author["who"] == {"reference": "Device/ai-1"}
    assert AI_TYPE in _codings(author["role"][0]["coding"])
    assert _agent(prov, pt, "enterer")["who"] == {"reference": "Practitioner/prac-onc-1"}
    transmitter = _agent(
        prov, "http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type",
        "transmitter")
    assert transmitter["who"] == {"reference": "Device/ai-1"}


def test_provenance_sources_versioned_and_prompt_derivation() -> None:
    prov = _provenance()
    sources = [e["what"]["reference"] for e in prov["entity"] if e["role"] == "source"]
    assert sources == ["DocumentReference/n1/_history/3", "DocumentReference/n2"]
    [derivation] = [e for e in prov["entity"] if e["role"] == "derivation"]
    assert derivation["what"]["identifier"] == {"system": "urn:smart-draft-agent:prompt",
                                                "value": "summary-v2"}


def test_provenance_urn_uuid_target_and_no_transmitter() -> None:
    prov = _provenance(target_reference="urn:uuid:7d2b0f55-0b8e-4b8e-9a3e-64c0f3f0a111",
                       transmitter_reference=None)
    assert len(prov["agent"]) == 2
    FCProvenance(prov, strict=True)


def test_verification_provenance() -> None:
    prov = _json(create_verification_provenance(
        target_reference="DocumentReference/d9/_history/2", recorded=WHEN,
        verifier_reference="Practitioner/prac-onc-1", device_reference="Device/ai-1"))
    Provenance.model_validate(prov)
    FCProvenance(prov, strict=True)
    pt = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
    assert _agent(prov, pt, "verifier")["who"] == {"reference": "Practitioner/prac-onc-1"}
    assert _agent(prov, pt, "author")["who"] == {"reference": "Device/ai-1"}
    assert prov["target"] == [{"reference": "DocumentReference/d9/_history/2"}]
    assert ("http://terminology.hl7.org/CodeSystem/v3-DataOperation", "UPDATE") in _codings(
        prov["activity"]["coding"])
    assert _codings(prov["meta"]["tag"]) == {("urn:smart-draft-agent:review", "approved")}


def test_rejection_provenance() -> None:
    prov = _json(create_rejection_provenance(
        target_reference="DocumentReference/d9/_history/3", recorded=WHEN,
        reviewer_reference="Practitioner/prac-onc-1", reason_code="unsupported_claims"))
    Provenance.model_validate(prov)
    FCProvenance(prov, strict=True)
    pt = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
    assert _agent(prov, pt, "verifier")["who"] == {"reference": "Practitioner/prac-onc-1"}
    assert _codings(prov["meta"]["tag"]) == {("urn:smart-draft-agent:review", "rejected")}
    assert _codings(prov["reason"][0]["coding"]) == {
        ("urn:smart-draft-agent:reject-reason", "unsupported_claims")}
    assert ("http://terminology.hl7.org/CodeSystem/v3-DataOperation", "NULLIFY") in _codings(
        prov["activity"]["coding"])


def test_rejection_reason_must_be_a_code() -> None:
    with pytest.raises(ValueError):
        create_rejection_provenance(target_reference="DocumentReference/d9", recorded=WHEN,
                                    reviewer_reference="Practitioner/p", reason_code=f"{CANARY} wrong")


# --- AuditEvent -----------------------------------------------------------------------------------
def test_audit_event_validates_and_parses() -> None:
    event = _json(_audit())
    AuditEvent.model_validate(event)
    FCAuditEvent(event, strict=True)


def test_audit_event_balp_create_shape() -> None:
    event = _json(_audit())
    dcm = "http://dicom.nema.org/resources/ontology/DCM"
    assert (event["type"]["system"], event["type"]["code"]) == (
        "http://terminology.hl7.org/CodeSystem/audit-event-type", "rest")
    assert _codings(event["subtype"]) == {("http://hl7.org/fhir/restful-interaction", "create")}
    assert event["action"] == "C" and event["outcome"] == "0"
    client = _agent(event, dcm, "110153")
    assert client["who"]["identifier"]["value"] == "smart-draft-agent-client"
    assert client["requestor"] is False
    server = _agent(event, dcm, "110152")
    assert server["network"] == {"address": "https://ehr.test/fhir/r4", "type": "5"}
    user = _agent(event, "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "AUT")
    assert user["requestor"] is True and user["who"] == {"reference": "Practitioner/prac-onc-1"}
    assert user["policy"] == [JTI]
    assert event["source"]["observer"]["display"] == "smart-draft-agent"
    roles = {(e["type"]["code"], e["role"]["code"], e["what"]["reference"])
             for e in event["entity"]}
    assert roles == {("2", "4", "DocumentReference/d9/_history/1"), ("1", "1", "Patient/pat-1")}


def test_audit_event_search_records_query_and_ircp_user() -> None:
    event = _json(_audit(action="E", subtype="search-type", entity_references=[],
                         query="DocumentReference?patient=pat-1&type=11506-3"))
    FCAuditEvent(event, strict=True)
    user = _agent(event, "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP")
    assert user["policy"] == [JTI]
    [query] = [e for e in event["entity"] if e["role"]["code"] == "24"]
    decoded = base64.b64decode(query["query"]).decode()
    assert decoded == "DocumentReference?patient=pat-1&type=11506-3"


def test_audit_event_without_user_puts_jti_on_the_app() -> None:
    event = _json(_audit(user_reference=None, destination=None, patient_id=None))
    FCAuditEvent(event, strict=True)
    [client] = event["agent"]
    assert client["requestor"] is True and client["policy"] == [JTI]
    assert [e["role"]["code"] for e in event["entity"]] == ["4"]


def test_audit_event_never_holds_the_token_or_text() -> None:
    event = _json(_audit())
    strings = _strings(event)
    assert TOKEN not in strings and not any(TOKEN in s for s in strings)
    assert not any(CANARY in s for s in strings)
    assert "text" not in event and all("description" not in e for e in event["entity"])
    assert TOKEN not in json.dumps(event)


@pytest.mark.parametrize("field,value", [("action", "X"), ("outcome", "1"), ("subtype", "fetch")])
def test_audit_event_refuses_unknown_codes(field: str, value: str) -> None:
    with pytest.raises(ValueError):
        _audit(**{field: value})


# --- highest_confidentiality ----------------------------------------------------------------------
def test_highest_confidentiality_examples() -> None:
    assert highest_confidentiality([]) == "N"
    assert highest_confidentiality([(CONFIDENTIALITY_SYSTEM, "L")]) == "L"
    both = [(CONFIDENTIALITY_SYSTEM, "N"), (CONFIDENTIALITY_SYSTEM, "R")]
    assert highest_confidentiality(both) == "R"
    assert highest_confidentiality([(ACT, "V")]) == "N"  # other systems ignored
    assert highest_confidentiality([(CONFIDENTIALITY_SYSTEM, "bogus")]) == "R"  # fail closed
    assert highest_confidentiality([("http://hl7.org/fhir/v3/Confidentiality", "V")]) == "V"


_labels = st.lists(st.tuples(st.sampled_from([CONFIDENTIALITY_SYSTEM, ACT, "urn:other"]),
                             st.sampled_from(CONFIDENTIALITY_ORDER)), max_size=8)


@given(_labels)
def test_highest_confidentiality_is_the_max_of_confidentiality_labels(labels: list) -> None:
    conf = [code for system, code in labels if system == CONFIDENTIALITY_SYSTEM]
    expected = max(conf, key=CONFIDENTIALITY_ORDER.index) if conf else "N"
    assert highest_confidentiality(labels) == expected


@given(_labels, _labels)
def test_highest_confidentiality_order_free_and_monotone(a: list, b_: list) -> None:
    rank = CONFIDENTIALITY_ORDER.index
    assert highest_confidentiality(a + b_) == highest_confidentiality(b_ + a)
    if any(system == CONFIDENTIALITY_SYSTEM for system, _ in a):
        assert rank(highest_confidentiality(a + b_)) >= rank(highest_confidentiality(a))


def test_unlabelled_source_counts_as_normal_on_the_draft() -> None:
    sources = (SourceDocument("n1", "1", ((CONFIDENTIALITY_SYSTEM, "U"),)),
               SourceDocument("n2", "1"))
    doc = create_document_reference(_spec(sources=sources))
    assert (CONFIDENTIALITY_SYSTEM, "N") in {(c.system, c.code) for c in doc.meta.security}
    only_u = create_document_reference(_spec(sources=sources[:1]))
    assert (CONFIDENTIALITY_SYSTEM, "U") in {(c.system, c.code) for c in only_u.meta.security}


@given(st.lists(st.sampled_from(CONFIDENTIALITY_ORDER), min_size=1, max_size=5))
def test_draft_carries_highest_source_confidentiality(codes: list[str]) -> None:
    sources = tuple(SourceDocument(f"n{i}", "1", ((CONFIDENTIALITY_SYSTEM, c),))
                    for i, c in enumerate(codes))
    doc = create_document_reference(_spec(sources=sources))
    expected = max(codes, key=CONFIDENTIALITY_ORDER.index)
    labels = [(c.system, c.code) for c in doc.meta.security if c.system == CONFIDENTIALITY_SYSTEM]
    assert labels == [(CONFIDENTIALITY_SYSTEM, expected)]


def test_public_surface() -> None:
    for name in b.__all__:
        assert hasattr(b, name)


# --- fhir_profiles/examples stay in step with the builders ---------------------------------------
EXAMPLES = Path(__file__).resolve().parents[2] / "fhir_profiles" / "examples"


def _examples() -> dict[str, dict]:
    spec = _spec(text="Synthetic example draft text [DocumentReference/n1].")
    return {
        "DocumentReference-ai-draft.json": _json(create_document_reference(spec)),
        "Device-ai-agent.json": _json(create_ai_device(
            model_id=spec.model_id, agent_version=spec.agent_version, device_id="ai-1")),
        "Provenance-ai-draft.json": _provenance(),
        "Provenance-verification.json": _json(create_verification_provenance(
            target_reference="DocumentReference/d9/_history/2", recorded=WHEN,
            verifier_reference="Practitioner/prac-onc-1", device_reference="Device/ai-1")),
        "Provenance-rejection.json": _json(create_rejection_provenance(
            target_reference="DocumentReference/d9/_history/3", recorded=WHEN,
            reviewer_reference="Practitioner/prac-onc-1", reason_code="unsupported_claims")),
        "AuditEvent-create.json": _json(_audit()),
        "AuditEvent-model-call.json": _json(b.create_model_call_audit_event(
            started=WHEN, ended=WHEN + timedelta(seconds=4), outcome="0",
            user_reference="Practitioner/prac-onc-1", client_id="smart-draft-agent-client",
            token_jti=JTI, backend="offline", model_id="offline-1", run_id=spec.run_id,
            patient_id="pat-1")),
        "AuditEvent-search.json": _json(_audit(
            action="E", subtype="search-type", entity_references=[],
            query="DocumentReference?patient=pat-1&type=11506-3")),
    }


def test_examples_match_the_builders() -> None:
    """Regenerate with ``UPDATE_EXAMPLES=1 pytest tests/unit/test_builders.py -k examples``."""
    expected = _examples()
    if os.environ.get("UPDATE_EXAMPLES") == "1":
        EXAMPLES.mkdir(parents=True, exist_ok=True)
        for name, resource in expected.items():
            (EXAMPLES / name).write_text(json.dumps(resource, indent=2) + "\n", encoding="utf-8")
    for name, resource in expected.items():
        assert json.loads((EXAMPLES / name).read_text(encoding="utf-8")) == resource, name
