"""Which clinical notes a user may see: a pure, deny-by-default decision.

Security labels follow HL7's Healthcare Privacy and Security Classification
System (HCS), as carried by FHIR R4 ``DocumentReference.securityLabel`` and
``meta.security``:

- confidentiality (``v3-Confidentiality``): U, L, M, N, R, V; R and V are restricted;
- sensitivity (``v3-ActCode`` InformationSensitivityPolicy): ETH, SUD, PSY, MH, BH,
  HIV, STD, SDV, SEX;
- privacy law (``v3-ActCode`` ActPrivacyLaw): 42CFRPart2.

https://hl7.org/fhir/R4/security-labels.html

Checks run in a fixed order and the first failing one gives the reason:
``no_scope``, ``unknown_role``, ``confidentiality_restricted``, ``law_label``,
``sensitivity_label``, ``role_type_not_allowed``, ``not_needed_for_task``.
A document without a confidentiality label counts as N (normal); a missing
sensitivity label is not proof of non-sensitivity, which is why roles are
also limited to the note types they need.

The only I/O here is ``RolePolicy.load`` reading its YAML file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from app.errors import ConfigError

CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
LOINC_SYSTEM = "http://loinc.org"

# Older or OID spellings of the same code systems, mapped to the canonical URL.
_SYSTEM_ALIASES = {
    "http://hl7.org/fhir/v3/Confidentiality": CONFIDENTIALITY_SYSTEM,
    "urn:oid:2.16.840.1.113883.5.25": CONFIDENTIALITY_SYSTEM,
    "http://hl7.org/fhir/v3/ActCode": ACT_CODE_SYSTEM,
    "urn:oid:2.16.840.1.113883.5.4": ACT_CODE_SYSTEM,
}

CONFIDENTIALITY_CODES = ("U", "L", "M", "N", "R", "V")  # ascending
RESTRICTED_CONFIDENTIALITY = frozenset({"R", "V"})
SENSITIVITY_CODES = frozenset({"ETH", "SUD", "PSY", "MH", "BH", "HIV", "STD", "SDV", "SEX"})
# More specific v3-ActCode sensitivity codes, handled as their broader code.
SENSITIVITY_ALIASES = {"ETHUD": "ETH", "OPIOIDUD": "SUD", "PSYTHPN": "PSY"}
LAW_CODES = frozenset({"42CFRPart2"})
UNLABELLED_CONFIDENTIALITY = "N"

REASONS = (
    "allowed", "no_scope", "unknown_role", "confidentiality_restricted", "law_label",
    "sensitivity_label", "role_type_not_allowed", "not_needed_for_task",
)
DEFAULT_ROLE = "default"
DEFAULT_POLICY_PATH = Path(__file__).with_name("role_policy.yaml")


@dataclass(frozen=True)
class DocumentMeta:
    id: str
    version: str | None
    type_code: str | None  # LOINC
    category_codes: frozenset[str]
    security: frozenset[tuple[str, str]]  # (system, code) from securityLabel + meta.security
    date: str | None


@dataclass(frozen=True)
class AccessContext:
    role: str  # e.g. "clinician"; an unknown role is denied everything
    can_read_documents: bool  # granted scopes allow DocumentReference read/search
    task_types: frozenset[str] | None = None  # the task's minimum-necessary LOINC types; None = any


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


@dataclass(frozen=True)
class Labels:
    """A document's security labels, sorted into the three kinds the policy checks."""

    confidentiality: frozenset[str]
    sensitivity: frozenset[str]
    law: frozenset[str]


def _canonical_system(system: str | None) -> str:
    system = (system or "").strip()
    return _SYSTEM_ALIASES.get(system, system)


def labels(doc: DocumentMeta) -> Labels:
    """Sort labels by kind. A label without a system is read by its code (conservative)."""
    conf: set[str] = set()
    sens: set[str] = set()
    law: set[str] = set()
    for raw_system, code in doc.security:
        system = _canonical_system(raw_system)
        if system in (CONFIDENTIALITY_SYSTEM, "") and code in CONFIDENTIALITY_CODES:
            conf.add(code)
        if system in (ACT_CODE_SYSTEM, ""):
            code = SENSITIVITY_ALIASES.get(code, code)
            if code in SENSITIVITY_CODES:
                sens.add(code)
            elif code in LAW_CODES:
                law.add(code)
    return Labels(frozenset(conf or {UNLABELLED_CONFIDENTIALITY}), frozenset(sens), frozenset(law))


@dataclass(frozen=True)
class RoleRule:
    """What one role may see. ``None`` for types or categories means any ("*")."""

    allowed_types: frozenset[str] | None = frozenset()
    allowed_categories: frozenset[str] | None = None
    allowed_sensitivity: frozenset[str] = frozenset()
    allowed_confidentiality: frozenset[str] = frozenset({"U", "L", "M", "N"})
    allowed_law: frozenset[str] = frozenset()


_RULE_KEYS = {"allowed_types", "allowed_categories", "allowed_sensitivity",
              "allowed_confidentiality", "allowed_law", "description"}


def _codes(role: str, key: str, value: Any, *, star: bool, known: Iterable[str] | None = None,
           ) -> frozenset[str] | None:
    if value == "*" and star:
        return None
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise ConfigError(f"Role policy: {role}.{key} must be a list of codes"
                          + (' or "*"' if star else "") + ".")
    codes = frozenset(str(v).strip() for v in value)
    if known is not None and (unknown := codes - set(known)):
        raise ConfigError(f"Role policy: {role}.{key} has unknown codes: {sorted(unknown)}; "
                          f"known: {sorted(known)}.")
    return codes


def _rule(role: str, data: Any) -> RoleRule:
    if not isinstance(data, dict):
        raise ConfigError(f"Role policy: role {role!r} must be a mapping.")
    if extra := set(data) - _RULE_KEYS:
        raise ConfigError(f"Role policy: role {role!r} has unknown keys: {sorted(extra)}.")
    conf = _codes(role, "allowed_confidentiality",
                  data.get("allowed_confidentiality", ["U", "L", "M", "N"]),
                  star=False, known=CONFIDENTIALITY_CODES)
    return RoleRule(
        allowed_types=_codes(role, "allowed_types", data.get("allowed_types"), star=True),
        allowed_categories=_codes(role, "allowed_categories", data.get("allowed_categories", "*"),
                                  star=True),
        allowed_sensitivity=_codes(role, "allowed_sensitivity", data.get("allowed_sensitivity"),
                                   star=False, known=SENSITIVITY_CODES) or frozenset(),
        allowed_confidentiality=conf or frozenset(),
        allowed_law=_codes(role, "allowed_law", data.get("allowed_law"), star=False,
                           known=LAW_CODES) or frozenset(),
    )


@dataclass(frozen=True)
class RolePolicy:
    """Rules per role. Roles not listed (and the ``default`` role) are denied everything."""

    roles: Mapping[str, RoleRule] = field(default_factory=dict)

    def rule(self, role: str) -> RoleRule | None:
        key = (role or "").strip().lower()
        return None if key == DEFAULT_ROLE else self.roles.get(key)

    @classmethod
    def from_dict(cls, data: Any) -> RolePolicy:
        if not isinstance(data, dict) or not isinstance(data.get("roles"), dict):
            raise ConfigError("Role policy: expected a mapping with a 'roles' mapping.")
        roles: dict[str, RoleRule] = {}
        for name, body in data["roles"].items():
            key = str(name).strip().lower()
            if key == DEFAULT_ROLE:
                denies = body in (None, {}) or (
                    isinstance(body, dict) and body.get("deny_all") is True
                    and set(body) <= {"deny_all", "description"})
                if not denies:
                    raise ConfigError("Role policy: the 'default' role always denies everything; "
                                      "set it to {deny_all: true} or leave it out.")
                continue
            roles[key] = _rule(key, body)
        return cls(roles=MappingProxyType(roles))

    @classmethod
    def load(cls, path: str | Path) -> RolePolicy:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError:
            raise ConfigError(
                f"Role policy file cannot be read: {path} (set APP_ROLE_POLICY).") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"Role policy file is not valid YAML: {path}.") from None
        return cls.from_dict(data)

    @classmethod
    def default(cls) -> RolePolicy:
        return cls.load(DEFAULT_POLICY_PATH)


AI_LABEL = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "AIAST")


def is_ai_generated(doc: DocumentMeta) -> bool:
    """Labelled AI-asserted (AI Transparency on FHIR): never evidence for a new draft.

    The user may well be allowed to read it, but citing an earlier AI draft (reviewed or not)
    would let the model's own output become its source. The indexer skips such documents and
    counts them as ``skipped:ai_generated``.
    """
    return AI_LABEL in doc.security


def decide(doc: DocumentMeta, ctx: AccessContext, policy: RolePolicy) -> Decision:
    """May this user see this document for this task? Deny by default, first failing check wins."""
    if not ctx.can_read_documents:
        return Decision(False, "no_scope")
    rule = policy.rule(ctx.role)
    if rule is None:
        return Decision(False, "unknown_role")
    found = labels(doc)
    if not found.confidentiality <= rule.allowed_confidentiality:
        return Decision(False, "confidentiality_restricted")
    if not found.law <= rule.allowed_law:
        return Decision(False, "law_label")
    if not found.sensitivity <= rule.allowed_sensitivity:
        return Decision(False, "sensitivity_label")
    if rule.allowed_types is not None and doc.type_code not in rule.allowed_types:
        return Decision(False, "role_type_not_allowed")
    if (rule.allowed_categories is not None and doc.category_codes
            and not doc.category_codes & rule.allowed_categories):
        return Decision(False, "role_type_not_allowed")
    if ctx.task_types is not None and doc.type_code not in ctx.task_types:
        return Decision(False, "not_needed_for_task")
    return Decision(True, "allowed")


def _codings(concept: Any) -> list[dict]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict)]


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def document_meta(resource: dict) -> DocumentMeta:
    """Metadata of a FHIR R4 DocumentReference (JSON). Raises ValueError when it has no id."""
    if not isinstance(resource, dict) or resource.get("resourceType", "DocumentReference") != \
            "DocumentReference":
        raise ValueError("not a DocumentReference")
    doc_id = _text(resource.get("id"))
    if doc_id is None:
        raise ValueError("DocumentReference without id")
    meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
    type_code = next((_text(c.get("code")) for c in _codings(resource.get("type"))
                      if c.get("system") == LOINC_SYSTEM and _text(c.get("code"))), None)
    categories = frozenset(
        code for concept in resource.get("category") or [] for c in _codings(concept)
        if (code := _text(c.get("code"))))
    codings = [c for concept in resource.get("securityLabel") or [] for c in _codings(concept)]
    codings += [c for c in meta.get("security") or [] if isinstance(c, dict)]
    security = frozenset(
        (_canonical_system(c.get("system") if isinstance(c.get("system"), str) else None), code)
        for c in codings if (code := _text(c.get("code"))))
    return DocumentMeta(id=doc_id, version=_text(meta.get("versionId")), type_code=type_code,
                        category_codes=categories, security=security,
                        date=_text(resource.get("date")))


def summarize(decisions: Iterable[Decision]) -> dict[str, int]:
    """Counts by reason (no document ids: safe to log)."""
    return dict(Counter(d.reason for d in decisions))
