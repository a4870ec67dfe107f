"""Security labels on every resource (issue 11, findings 1 and 2): Conditions, Patient, notes.

Finding 1: a Condition labelled R + PSY (or 42CFRPart2 + R) showed on every role's chart,
went into a GP's summary draft, and the admin got the whole problem list from
``POST /api/drafts``; the written draft was labelled ``AIAST, N`` only.
Finding 2: labels with an unknown code (EMOTDIS, MST) or a variant system spelling were
allowed. Both are checked here on the synthetic charts (``synthetic_data/bundles``) through
the real indexer, agent, builders and the Flask app, without servers.
"""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app import create_app
from app.agent.backends import get_backend
from app.agent.runtime import run_task
from app.agent.tasks import get_task
from app.retrieval.bundles import BundleClient
from app.retrieval.embeddings import HashingEmbedder
from app.retrieval.indexer import load_chart
from app.retrieval.policy import AccessContext, RolePolicy, decide, decide_resource, document_meta
from app.smart.scopes import Grants
from app.web.state import LaunchState
from app.writeback.builders import DraftSpec, SourceDocument, create_document_reference

BUNDLES = Path(__file__).resolve().parents[2] / "synthetic_data" / "bundles"
MANIFEST = json.loads((BUNDLES.parent / "manifest.json").read_text())
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ALL = Grants.parse("patient/*.read")
# (patient, condition display only in that labelled Condition)
SENSITIVE = {"pat-gen-06": "Major depressive disorder", "pat-gen-04": "Alcohol use disorder"}


def bundle_resources(patient: str) -> list[dict]:
    data = json.loads((BUNDLES / f"{patient}.json").read_text())
    return [e["resource"] for e in data["entry"]]


def chart_for(patient: str, role: str, resources: list[dict] | None = None):  # type: ignore[no-untyped-def]
    client = BundleClient(resources if resources is not None else bundle_resources(patient))
    return load_chart(client, patient, grants=ALL, role=role, policy=RolePolicy.default(),
                      embedder=HashingEmbedder())


def displays(chart) -> list[str]:  # type: ignore[no-untyped-def]
    return [(c.get("code") or {}).get("text") or "" for c in chart.conditions]


def test_the_sensitive_conditions_carry_the_labels_of_their_notes() -> None:
    assert MANIFEST["labelled_conditions"] == {"cond-gen-04-01": ["42CFRPart2", "R"],
                                               "cond-gen-06-01": ["PSY", "R"]}
    for patient, display in SENSITIVE.items():
        cond = next(r for r in bundle_resources(patient) if r["resourceType"] == "Condition"
                    and r["code"]["text"] == display)
        notes = [r for r in bundle_resources(patient) if r["resourceType"] == "DocumentReference"
                 and r.get("meta", {}).get("security")]
        note_codes = {c["code"] for n in notes for c in n["meta"]["security"]}
        assert {c["code"] for c in cond["meta"]["security"]} == note_codes


@pytest.mark.parametrize("patient", sorted(SENSITIVE))
@pytest.mark.parametrize("role", ["clinician", "nurse", "admin", "default"])
def test_labelled_conditions_never_reach_a_role_that_may_not_see_them(patient: str, role: str) -> None:
    chart = chart_for(patient, role)
    display = SENSITIVE[patient]
    assert display not in displays(chart)
    assert chart.counts.get("conditions_denied:" + ("confidentiality_restricted" if role in (
        "clinician", "nurse") else "resource_not_allowed" if role == "admin" else "unknown_role"),
        0) >= 1
    draft = run_task(chart, get_task("summary"), get_backend("offline"))
    # the problem-list sentence comes from the Condition (unlabelled GP notes may still name
    # the problem in their own words; those notes are what the EHR labels them as)
    assert f"Problem list (active): {display}".lower() not in draft.text.lower()
    assert "problem list" not in draft.text.lower() or role in ("clinician", "nurse")
    if role == "admin":  # no clinical data at all: no problem list, no patient
        assert chart.conditions == [] and chart.patient is None


def test_behavioral_health_sees_the_psy_condition_and_the_draft_is_labelled_with_it() -> None:
    chart = chart_for("pat-gen-06", "behavioral-health")
    assert SENSITIVE["pat-gen-06"] in displays(chart)
    assert (CONF, "R") in chart.context_security() and (ACT, "PSY") in chart.context_security()
    spec = DraftSpec(run_id="r1", task="summary", loinc_code="60591-5", loinc_display="Patient summary",
                     text="Problem list: major depressive disorder.", patient_id="pat-gen-06",
                     encounter_id=None, author_reference="Practitioner/prac-psych-1",
                     sources=(SourceDocument("doc-x", "1", ()),),  # an unlabelled note
                     created=datetime(2026, 12, 1, tzinfo=UTC), model_id="offline",
                     agent_version="t", prompt_version="p", context_security=chart.context_security())
    doc = create_document_reference(spec).model_dump(mode="json", exclude_none=True)
    labels = {(c["system"], c["code"]) for c in doc["meta"]["security"]}
    assert {(CONF, "R"), (ACT, "PSY")} <= labels
    assert ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "AIAST") in labels
    assert doc["securityLabel"][0]["coding"][0]["code"] == "R"
    # and the context labels survive the outbox round trip (stored as JSON lists)
    from app.writeback.submit import spec_from_json, spec_to_json

    again = spec_from_json(json.loads(json.dumps(spec_to_json(spec))))
    redone = create_document_reference(again).model_dump(mode="json", exclude_none=True)
    assert redone["meta"]["security"] == doc["meta"]["security"]


def test_a_gp_draft_written_from_a_chart_is_labelled_with_the_most_restrictive_source() -> None:
    """The write path (services) passes the chart's context labels to the builder."""
    resources = bundle_resources("pat-gen-05")
    for r in resources:  # an M-labelled problem on an otherwise unlabelled chart
        if r["resourceType"] == "Condition":
            r["meta"] = {"security": [{"system": CONF, "code": "M"}]}
            break
    chart = chart_for("pat-gen-05", "clinician", resources)
    assert chart.conditions and (CONF, "M") in chart.context_security()


def test_admin_gets_no_problem_list_from_the_json_api(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = create_app({"testing": True, "data_dir": tmp_path, "allowed_iss": "https://ehr.test/fhir"})
    client = app.test_client()
    chart = chart_for("pat-gen-06", "admin")
    app.extensions["smart_draft_web"].put(LaunchState(
        sid="s1", fhir_base="https://ehr.test/fhir", config=None, patient_id="pat-gen-06",
        user_reference=None, role="admin", unauthenticated=True, chart=chart))
    with client.session_transaction() as sess:
        sess["sid"] = "s1"
        sess["csrf"] = "t"
    page = client.get("/")
    assert page.status_code == 200 and b"Major depressive" not in page.data
    csrf = page.get_data(as_text=True).split('name="csrf-token" content="')[1].split('"')[0]
    out = client.post("/api/drafts", json={"task": "summary", "write": False},
                      headers={"X-CSRF-Token": csrf})
    assert out.status_code == 201, out.get_json()
    body = json.dumps(out.get_json()).lower()
    assert "problem list" not in body and "major depressive" not in body


# -- finding 2: labels fail closed -----------------------------------------------------------

def _note(security: list[dict]) -> dict:
    return {"resourceType": "DocumentReference", "id": "d1", "status": "current",
            "meta": {"versionId": "1", "security": security},
            "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]},
            "content": [{"attachment": {"contentType": "text/plain",
                                        "data": base64.b64encode(b"x").decode()}}]}


GP = AccessContext(role="clinician", can_read_documents=True)
VARIANTS = [
    {"system": ACT, "code": "EMOTDIS"},                                   # real HL7 code, not listed
    {"system": ACT, "code": "MST"},
    {"system": CONF.replace("http://", "https://"), "code": "R"},       # scheme variant
    {"system": CONF.upper(), "code": "R"},                               # case variant
    {"system": CONF + "/", "code": "R"},                                 # trailing slash
    {"system": CONF, "code": "r"},                                       # lower-case code
    {"system": "http://terminology.hl7.org/ValueSet/v3-Confidentiality", "code": "R"},
    {"system": " " + CONF, "code": "R"},
    {"code": "R"},                                                       # no system
    {"system": CONF},                                                    # no code
    {"system": CONF, "code": 5},                                         # not a string
    "R",                                                                 # not a Coding
]


@pytest.mark.parametrize("label", VARIANTS, ids=[json.dumps(v) for v in VARIANTS])
def test_unknown_or_variant_labels_deny_every_resource(label: object) -> None:
    policy = RolePolicy.default()
    assert decide(document_meta(_note([label])), GP, policy).reason == "unknown_label"  # type: ignore[list-item]
    cond = {"resourceType": "Condition", "id": "c1", "meta": {"security": [label]}}
    assert decide_resource(cond, "clinician", policy).reason == "unknown_label"
    patient = {"resourceType": "Patient", "id": "p1", "meta": {"security": [label]}}
    assert decide_resource(patient, "behavioral-health", policy).reason == "unknown_label"


def test_malformed_label_containers_deny() -> None:
    policy = RolePolicy.default()
    for bad in ({"meta": {"security": "R"}}, {"meta": "x"}, {"securityLabel": {"coding": []}},
                {"securityLabel": [{"text": "restricted"}]}):
        res = {"resourceType": "DocumentReference", "id": "d1", **copy.deepcopy(bad),
               "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]}}
        assert decide(document_meta(res), GP, policy).reason == "unknown_label", bad


def test_harmless_labels_and_known_aliases_are_data() -> None:
    policy = RolePolicy.default()
    htest = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "HTEST"}
    assert decide(document_meta(_note([htest])), GP, policy).allowed
    old = {"system": "http://hl7.org/fhir/v3/Confidentiality", "code": "N"}
    oid = {"system": "urn:oid:2.16.840.1.113883.5.25", "code": "R"}
    assert decide(document_meta(_note([old])), GP, policy).allowed
    assert decide(document_meta(_note([oid])), GP, policy).reason == "confidentiality_restricted"
    # a site's policy may replace the harmless list: then HTEST denies too
    strict = RolePolicy.from_dict({"harmless_labels": [], "roles": {"clinician": {
        "allowed_types": "*", "allowed_resources": ["DocumentReference"]}}})
    assert decide(document_meta(_note([htest])), GP, strict).reason == "unknown_label"


def test_a_harmless_list_cannot_unlock_a_restricting_label() -> None:
    from app.errors import ConfigError

    with pytest.raises(ConfigError):
        RolePolicy.from_dict({"harmless_labels": [[CONF, "R"]], "roles": {}})
    with pytest.raises(ConfigError):
        RolePolicy.from_dict({"harmless_labels": [[ACT, "PSY"]], "roles": {}})
