"""fhir_profiles/: every resource the app writes meets R4B, the fhirclient R4 models and our profiles.

Three independent checks per resource: ``fhir.resources.R4B`` (pydantic), the
``fhirclient`` R4 models in strict mode (another parser, other authors), and the
differential checker of ``app.writeback.profiles`` (cardinalities, fixed codes,
patterns, slices). The checker itself is tested on broken resources.
"""

from __future__ import annotations

import copy
import importlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class

from app.writeback import profiles
from app.writeback.builders import (
    CONFIDENTIALITY_SYSTEM,
    DraftSpec,
    SourceDocument,
    create_ai_device,
    create_audit_event,
    create_document_reference,
    create_provenance,
    create_rejection_provenance,
    create_verification_provenance,
)
from app.writeback.submit import WriteContext, build_transaction

ROOT = Path(__file__).resolve().parents[2] / "fhir_profiles"
WHEN = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SDS = sorted(ROOT.glob("StructureDefinition-*.json"))
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _dump(model: object) -> dict:
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)  # type: ignore[attr-defined]


def _fhirclient_class(resource_type: str) -> type:
    module = importlib.import_module(f"fhirclient.models.{resource_type.lower()}")
    return getattr(module, resource_type)  # type: ignore[no-any-return]


def _three_ways(resource: dict) -> list[str]:
    """Parse with R4B and with fhirclient (strict), then run the profile checker."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    _fhirclient_class(resource["resourceType"])(copy.deepcopy(resource), strict=True)
    return profiles.check(resource)


def _spec(**overrides: object) -> DraftSpec:
    values: dict[str, object] = dict(
        run_id="run-profiles-1", task="summary", loinc_code="60591-5",
        loinc_display="Patient summary Document", text="Synthetic draft text.",
        patient_id="pat-1", encounter_id="enc-1", author_reference="Practitioner/prac-onc-1",
        sources=(SourceDocument("n1", "3", ((CONFIDENTIALITY_SYSTEM, "N"),)),
                 SourceDocument("n2", None, ((CONFIDENTIALITY_SYSTEM, "R"), (ACT, "PSY")))),
        created=WHEN, model_id="offline-1", agent_version="0.3.0", prompt_version="summary-v2")
    values.update(overrides)
    return DraftSpec(**values)  # type: ignore[arg-type]


def _audit(**overrides: object) -> dict:
    values: dict[str, object] = dict(
        action="C", subtype="create", outcome="0", recorded=WHEN,
        user_reference="Practitioner/prac-onc-1", client_id="smart-draft-agent", token_jti="jti-1",
        entity_references=["DocumentReference/d9/_history/1"], patient_id="pat-1",
        destination="https://ehr.test/fhir")
    values.update(overrides)
    return _dump(create_audit_event(**values))  # type: ignore[arg-type]


def _provenance(**overrides: object) -> dict:
    values: dict[str, object] = dict(
        target_reference="DocumentReference/d9/_history/1", recorded=WHEN,
        device_reference="Device/ai-1", enterer_reference="Practitioner/prac-onc-1",
        transmitter_reference="Device/ai-1", sources=_spec().sources,
        prompt_version="summary-v2", patient_id="pat-1")
    values.update(overrides)
    return _dump(create_provenance(**values))  # type: ignore[arg-type]


def _produced() -> dict[str, dict]:
    """Every shape of resource the builders and the submitter produce."""
    out = {
        "draft": _dump(create_document_reference(_spec())),
        "draft-final": _dump(create_document_reference(_spec(), doc_status="final")),
        "draft-no-encounter-no-sources": _dump(create_document_reference(
            _spec(encounter_id=None, sources=()))),
        "draft-42cfr": _dump(create_document_reference(_spec(sources=(
            SourceDocument("n3", "1", ((CONFIDENTIALITY_SYSTEM, "V"), (ACT, "42CFRPart2"))),)))),
        "device": _dump(create_ai_device(model_id="offline-1", agent_version="0.3.0")),
        "provenance": _provenance(),
        "provenance-no-transmitter-no-sources": _provenance(transmitter_reference=None, sources=()),
        "provenance-urn-target": _provenance(
            target_reference="urn:uuid:7d2b0f55-0b8e-4b8e-9a3e-64c0f3f0a111"),
        "verification": _dump(create_verification_provenance(
            target_reference="DocumentReference/d9/_history/2", recorded=WHEN,
            verifier_reference="Practitioner/prac-onc-1")),
        "verification-with-device": _dump(create_verification_provenance(
            target_reference="DocumentReference/d9/_history/2", recorded=WHEN,
            verifier_reference="Practitioner/prac-onc-1", device_reference="Device/ai-1")),
        "rejection": _dump(create_rejection_provenance(
            target_reference="DocumentReference/d9/_history/3", recorded=WHEN,
            reviewer_reference="Practitioner/prac-onc-1", reason_code="inaccurate")),
        "audit-create": _audit(),
        "audit-update": _audit(action="U", subtype="update"),
        "audit-read": _audit(action="R", subtype="read", entity_references=["Condition/c1"]),
        "audit-search": _audit(action="E", subtype="search-type", entity_references=[],
                               query="DocumentReference?patient=pat-1"),
        "audit-no-user": _audit(user_reference=None, destination=None),
        "audit-failed": _audit(outcome="8"),
    }
    ctx = WriteContext(client_id="c", token_jti="j", user_reference="Practitioner/prac-1",
                       audit_on_server=True)
    for i, entry in enumerate(build_transaction(_spec(), ctx, "https://ehr.test/fhir")["entry"]):
        out[f"transaction-{i}-{entry['resource']['resourceType']}"] = entry["resource"]
    return out


PRODUCED = _produced()


# --- the profiles themselves ----------------------------------------------------------------
def test_there_is_a_profile_and_an_example_for_each_written_resource() -> None:
    ids = {p.name.removeprefix("StructureDefinition-").removesuffix(".json") for p in SDS}
    assert {"ai-draft-documentreference", "ai-device", "ai-provenance", "review-provenance",
            "app-auditevent"} <= ids
    example_profiles = {profiles.profile_for(_load(p)) for p in EXAMPLES}
    assert example_profiles == ids


@pytest.mark.parametrize("path", SDS, ids=lambda p: p.name)
def test_structure_definition_parses_and_names_real_elements(path: Path) -> None:
    sd = _load(path)
    _three_ways_sd = get_fhir_model_class("StructureDefinition").model_validate(sd)
    assert _three_ways_sd.derivation == "constraint"
    _fhirclient_class("StructureDefinition")(copy.deepcopy(sd), strict=True)
    assert sd["url"].endswith("/" + sd["id"]) and "differential" in sd and "snapshot" not in sd
    root = _fhirclient_class(sd["type"])
    for element in sd["differential"]["element"]:
        assert element["id"].replace(":" + element.get("sliceName", "@"), "").count(":") in (0, 1)
        assert element["path"].split(".")[0] == sd["type"]
        cls = root
        for name in element["path"].split(".")[1:]:
            props = {p[1]: p[2] for p in cls().elementProperties()}
            assert name in props, f"{element['path']}: no element {name!r} in R4 {cls.__name__}"
            cls = props[name]
        if "sliceName" in element:
            base_id = element["id"].rsplit(":", 1)[0]
            assert "slicing" in next(e for e in sd["differential"]["element"] if e["id"] == base_id)


def test_capability_statement() -> None:
    cap = _load(ROOT / "CapabilityStatement-smart-draft-agent.json")
    get_fhir_model_class("CapabilityStatement").model_validate(cap)
    _fhirclient_class("CapabilityStatement")(copy.deepcopy(cap), strict=True)
    [rest] = cap["rest"]
    assert rest["mode"] == "client"
    by_type = {r["type"]: r for r in rest["resource"]}
    writes = {t for t, r in by_type.items() if {i["code"] for i in r["interaction"]} & {"create", "update"}}
    assert writes == {"DocumentReference", "Device", "Provenance", "AuditEvent"}
    known = {_load(p)["url"] for p in SDS}
    for res in rest["resource"]:
        assert set(res.get("supportedProfile", [])) <= known
    assert {"read", "search-type"} <= {i["code"] for i in by_type["DocumentReference"]["interaction"]}


# --- examples and everything the app produces ----------------------------------------------------
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_conforms(path: Path) -> None:
    assert _three_ways(_load(path)) == []


@pytest.mark.parametrize("name", sorted(PRODUCED))
def test_produced_resource_conforms(name: str) -> None:
    assert _three_ways(PRODUCED[name]) == []


def test_produced_resources_cover_every_profile() -> None:
    assert {profiles.profile_for(r) for r in PRODUCED.values()} == {
        p.name.removeprefix("StructureDefinition-").removesuffix(".json") for p in SDS}


# --- the checker finds what is wrong --------------------------------------------------------------
def _drop_aiast(r: dict) -> None:
    r["meta"]["security"] = [c for c in r["meta"]["security"] if c["code"] != "AIAST"]


BROKEN = [
    ("draft", lambda r: r.pop("identifier"), "DocumentReference.identifier"),
    ("draft", lambda r: r.update(identifier=[{"system": "urn:other", "value": "x"}]),
     "DocumentReference.identifier:run"),
    ("draft", _drop_aiast, "DocumentReference.meta.security:aiast"),
    ("draft", lambda r: r["meta"]["security"].append(dict(r["meta"]["security"][0])),
     "DocumentReference.meta.security:aiast"),
    ("draft", lambda r: r["content"][0]["attachment"].update(contentType="text/html"),
     "DocumentReference.content.attachment.contentType"),
    ("draft", lambda r: r["content"].append(copy.deepcopy(r["content"][0])),
     "DocumentReference.content"),
    ("draft", lambda r: r["category"][0]["coding"][0].update(code="other"),
     "DocumentReference.category"),
    ("draft", lambda r: r["type"]["coding"][0].update(system="urn:local"), "DocumentReference.type"),
    ("draft", lambda r: r["content"][0]["attachment"].update(url="https://x.test/a"),
     "DocumentReference.content.attachment.url"),
    ("device", lambda r: r.update(type={"coding": [{"system": "urn:x", "code": "y"}]}), "Device.type"),
    ("device", lambda r: r["version"].pop(), "Device.version"),
    ("provenance", lambda r: r["agent"][0]["role"][0]["coding"][0].update(code="Human"),
     "Provenance.agent:author"),
    ("provenance", lambda r: r.pop("reason"), "Provenance.reason"),
    ("provenance", lambda r: r.update(entity=[e for e in r["entity"] if e["role"] != "derivation"]),
     "Provenance.entity:derivation"),
    ("verification", lambda r: r.update(agent=[]), "Provenance.agent:verifier"),
    ("audit-create", lambda r: r.update(outcomeDesc="free text"), "AuditEvent.outcomeDesc"),
    ("audit-create", lambda r: r["entity"][0].update(description="free text"),
     "AuditEvent.entity.description"),
    ("audit-create", lambda r: r.update(agent=r["agent"][1:]), "AuditEvent.agent:client"),
    ("audit-create", lambda r: r["source"]["type"][0].update(code="1"), "AuditEvent.source.type"),
]


@pytest.mark.parametrize(("name", "mutate", "element_id"), BROKEN,
                         ids=[f"{n}-{e}-{i}" for i, (n, _m, e) in enumerate(BROKEN)])
def test_checker_reports_the_broken_element(name: str, mutate, element_id: str) -> None:  # type: ignore[no-untyped-def]
    resource = copy.deepcopy(PRODUCED[name])
    assert profiles.check(resource) == []
    mutate(resource)
    errors = profiles.check(resource)
    assert any(e.split(":")[0] == element_id.split(":")[0] and element_id in e for e in errors), errors


def test_checker_messages_never_hold_values() -> None:
    resource = copy.deepcopy(PRODUCED["draft"])
    resource["content"][0]["attachment"]["contentType"] = "text/x-Zyxwend-Canarywhistle"
    errors = profiles.check(resource)
    assert errors and not any("Canarywhistle" in e for e in errors)


def test_pattern_semantics() -> None:
    assert profiles.matches_pattern({"coding": [{"system": "s", "code": "c", "display": "d"}]},
                                    {"coding": [{"system": "s", "code": "c"}]})
    assert not profiles.matches_pattern({"coding": [{"system": "s"}]}, {"coding": [{"code": "c"}]})
    assert not profiles.matches_pattern("a", {"system": "s"})
    assert profiles.matches_pattern([{"a": 1}, {"b": 2}], [{"b": 2}])
