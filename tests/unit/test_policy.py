"""Role policy: one test per reason, the YAML loader, and a deny-by-default property."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import ConfigError
from app.retrieval.policy import (
    ACT_CODE_SYSTEM,
    CONFIDENTIALITY_SYSTEM,
    LAW_CODES,
    REASONS,
    SENSITIVITY_CODES,
    AccessContext,
    Decision,
    DocumentMeta,
    RolePolicy,
    decide,
    document_meta,
    labels,
    summarize,
)

PROGRESS = "11506-3"
HP = "34117-2"
POLICY = RolePolicy.default()


def doc(type_code: str | None = PROGRESS, *, security: set[tuple[str, str]] | None = None,
        categories: frozenset[str] = frozenset({"clinical-note"})) -> DocumentMeta:
    return DocumentMeta(id="d1", version="1", type_code=type_code, category_codes=categories,
                        security=frozenset(security or set()), date="2024-01-02")


def conf(code: str) -> tuple[str, str]:
    return (CONFIDENTIALITY_SYSTEM, code)


def act(code: str) -> tuple[str, str]:
    return (ACT_CODE_SYSTEM, code)


def ctx(role: str = "clinician", *, scope: bool = True,
        task: frozenset[str] | None = None) -> AccessContext:
    return AccessContext(role=role, can_read_documents=scope, task_types=task)


def test_allowed() -> None:
    assert decide(doc(), ctx(), POLICY) == Decision(True, "allowed")
    assert decide(doc(security={conf("N")}), ctx(), POLICY).allowed


def test_no_scope_comes_first() -> None:
    decision = decide(doc(security={conf("V")}), ctx("nobody", scope=False), POLICY)
    assert decision.reason == "no_scope"


@pytest.mark.parametrize("role", ["nobody", "default", "", "Default"])
def test_unknown_role(role: str) -> None:
    assert decide(doc(), ctx(role), POLICY) == Decision(False, "unknown_role")


def test_role_names_ignore_case_and_spaces() -> None:
    assert decide(doc(), ctx(" Clinician "), POLICY).allowed


@pytest.mark.parametrize("code", ["R", "V"])
def test_confidentiality_restricted(code: str) -> None:
    assert decide(doc(security={conf(code)}), ctx(), POLICY).reason == "confidentiality_restricted"


def test_behavioral_health_sees_r_not_v() -> None:
    assert decide(doc(security={conf("R"), act("PSY")}), ctx("behavioral-health"), POLICY).allowed
    assert decide(doc(security={conf("V")}), ctx("behavioral-health"),
                  POLICY).reason == "confidentiality_restricted"


def test_law_label_before_sensitivity() -> None:
    d = doc(security={act("42CFRPart2"), act("SUD")})
    assert decide(d, ctx(), POLICY).reason == "law_label"
    assert decide(d, ctx("behavioral-health"), POLICY).reason == "law_label"


@pytest.mark.parametrize("code", sorted(SENSITIVITY_CODES))
def test_sensitivity_label(code: str) -> None:
    assert decide(doc(security={act(code)}), ctx(), POLICY).reason == "sensitivity_label"


def test_behavioral_health_sensitivity() -> None:
    for code in ("PSY", "MH", "BH", "SUD", "ETH"):
        assert decide(doc(security={act(code)}), ctx("behavioral-health"), POLICY).allowed
    for code in ("HIV", "STD", "SDV", "SEX"):
        assert decide(doc(security={act(code)}), ctx("behavioral-health"),
                      POLICY).reason == "sensitivity_label"


def test_labels_without_system_or_from_unknown_systems_fail_closed() -> None:
    assert decide(doc(security={("", "R")}), ctx(), POLICY).reason == "unknown_label"
    assert decide(doc(security={("", "HIV")}), ctx(), POLICY).reason == "unknown_label"
    assert decide(doc(security={act("PSYTHPN")}), ctx(), POLICY).reason == "sensitivity_label"
    # A code from a system the app does not understand is not proof of anything: deny.
    assert decide(doc(security={("http://example.test/tags", "HIV")}), ctx(),
                  POLICY).reason == "unknown_label"


def test_role_type_not_allowed() -> None:
    assert decide(doc(HP), ctx("nurse"), POLICY).reason == "role_type_not_allowed"
    assert decide(doc(None), ctx(), POLICY).reason == "role_type_not_allowed"
    assert decide(doc(), ctx("admin"), POLICY).reason == "resource_not_allowed"
    wrong_category = doc(categories=frozenset({"billing"}))
    assert decide(wrong_category, ctx(), POLICY).reason == "role_type_not_allowed"


def test_not_needed_for_task() -> None:
    assert decide(doc(HP), ctx(task=frozenset({PROGRESS})), POLICY).reason == "not_needed_for_task"
    assert decide(doc(PROGRESS), ctx(task=frozenset({PROGRESS})), POLICY).allowed


def test_summarize_counts_by_reason() -> None:
    ds = [Decision(True, "allowed"), Decision(False, "no_scope"), Decision(False, "no_scope")]
    assert summarize(ds) == {"allowed": 1, "no_scope": 2}
    assert summarize([]) == {}


def test_document_meta_from_fhir() -> None:
    resource = {
        "resourceType": "DocumentReference", "id": "doc-7", "date": "2024-03-01T10:00:00Z",
        "meta": {"versionId": "3", "security": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}]},
        "securityLabel": [{"coding": [{"system": "http://hl7.org/fhir/v3/Confidentiality",
                                       "code": "R"}]}],
        "type": {"coding": [{"system": "http://example.test/local", "code": "X"},
                            {"system": "http://loinc.org", "code": "11506-3"}]},
        "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/"
                                  "us-core-documentreference-category", "code": "clinical-note"}]}],
    }
    meta = document_meta(resource)
    assert meta == DocumentMeta(
        id="doc-7", version="3", type_code="11506-3", category_codes=frozenset({"clinical-note"}),
        security=frozenset({(ACT_CODE_SYSTEM, "HIV"), (CONFIDENTIALITY_SYSTEM, "R")}),
        date="2024-03-01T10:00:00Z")
    assert labels(meta).confidentiality == {"R"}
    minimal = document_meta({"resourceType": "DocumentReference", "id": "x"})
    assert minimal.type_code is None and minimal.security == frozenset()
    assert labels(minimal).confidentiality == {"N"}


def test_document_meta_rejects_missing_id() -> None:
    with pytest.raises(ValueError):
        document_meta({"resourceType": "DocumentReference"})
    with pytest.raises(ValueError):
        document_meta({"resourceType": "Patient", "id": "p"})


def test_default_policy_roles() -> None:
    assert set(POLICY.roles) == {"clinician", "nurse", "behavioral-health", "admin"}
    assert POLICY.rule("default") is None


def test_load_rejects_bad_policies(tmp_path: Path) -> None:
    cases = {
        "typo.yaml": "roles:\n  clinician:\n    allowed_sensitivty: [PSY]\n",
        "code.yaml": "roles:\n  clinician:\n    allowed_sensitivity: [PSYCH]\n",
        "conf.yaml": "roles:\n  clinician:\n    allowed_confidentiality: '*'\n",
        "open_default.yaml": "roles:\n  default:\n    allowed_types: '*'\n",
        "shape.yaml": "- clinician\n",
        "yaml.yaml": "roles: [\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError):
            RolePolicy.load(tmp_path / name)
    with pytest.raises(ConfigError):
        RolePolicy.load(tmp_path / "missing.yaml")


def test_load_custom_policy(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("roles:\n  researcher:\n    allowed_types: '*'\n"
                    "    allowed_sensitivity: [HIV]\n  default: {deny_all: true}\n")
    policy = RolePolicy.load(path)
    assert decide(doc(None, security={act("HIV")}), ctx("researcher"), policy).allowed
    assert decide(doc(), ctx("clinician"), policy).reason == "unknown_role"


# -- property: nothing slips through ---------------------------------------------------------

TYPES = [PROGRESS, HP, "18842-5", "34111-5", "11502-2", "99999-9", None]
ROLES = ["clinician", "nurse", "behavioral-health", "admin", "default", "nobody"]
LABELS = ([conf(c) for c in "ULMNRV"] + [act(c) for c in sorted(SENSITIVITY_CODES | LAW_CODES)]
          + [("", "R"), ("", "SUD"), ("http://example.test/x", "HIV"), act("EMOTDIS"),
             ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "HTEST")])


@settings(max_examples=400, deadline=None)
@given(
    type_code=st.sampled_from(TYPES),
    security=st.frozensets(st.sampled_from(LABELS), max_size=4),
    categories=st.frozensets(st.sampled_from(["clinical-note", "billing", "summary"]), max_size=2),
    role=st.sampled_from(ROLES),
    scope=st.booleans(),
    task=st.none() | st.frozensets(st.sampled_from([t for t in TYPES if t]), max_size=3),
)
def test_allowed_documents_respect_every_rule(type_code: str | None, security: frozenset,
                                              categories: frozenset[str], role: str, scope: bool,
                                              task: frozenset[str] | None) -> None:
    d = DocumentMeta(id="d", version=None, type_code=type_code, category_codes=categories,
                     security=security, date=None)
    decision = decide(d, ctx(role, scope=scope, task=task), POLICY)
    assert decision.reason in REASONS
    assert decision.allowed == (decision.reason == "allowed")
    if not decision.allowed:
        return
    assert scope
    rule = POLICY.rule(role)
    assert rule is not None and role not in ("default", "nobody")
    found = labels(d)
    assert found.confidentiality <= rule.allowed_confidentiality
    assert not found.confidentiality & {"V"}
    assert found.sensitivity <= rule.allowed_sensitivity
    assert found.law <= rule.allowed_law
    # Independent of labels(): no raw sensitive code the role may not see.
    raw = {code for system, code in security if system in (ACT_CODE_SYSTEM, "")}
    assert not (raw & (SENSITIVITY_CODES | LAW_CODES)) - rule.allowed_sensitivity - rule.allowed_law
    # Fail closed: every label is a known confidentiality, sensitivity or law code, or harmless.
    assert all(system == CONFIDENTIALITY_SYSTEM or (system == ACT_CODE_SYSTEM and code in
               SENSITIVITY_CODES | LAW_CODES) or (system, code) in POLICY.harmless
               for system, code in security)
    assert rule.allowed_types is None or type_code in rule.allowed_types
    assert task is None or type_code in task
