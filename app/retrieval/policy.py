"""Which resources a user may see: a pure, deny-by-default decision.

Security labels follow HL7's Healthcare Privacy and Security Classification
System (HCS), as carried by FHIR R4 ``DocumentReference.securityLabel`` and
``meta.security``:

- confidentiality (``v3-Confidentiality``): U, L, M, N, R, V; R and V are restricted;
- sensitivity (``v3-ActCode`` InformationSensitivityPolicy): ETH, SUD, PSY, MH, BH,
  HIV, STD, SDV, SEX;
- privacy law (``v3-ActCode`` ActPrivacyLaw): 42CFRPart2.

https://hl7.org/fhir/R4/security-labels.html

The policy applies to every resource the app reads or shows (Patient,
Condition, DocumentReference): ``decide`` for notes, ``decide_resource`` for
the others. Labels fail closed: a label whose system and code are not
understood (``label_systems.yaml``: systems compared exactly, known aliases
listed as data, a short allowlist of harmless codes such as HTEST), or a
malformed label (no system, no code, not a Coding), denies the resource as
``unknown_label``.

Checks run in a fixed order and the first failing one gives the reason:
``no_scope``, ``unknown_role``, ``resource_not_allowed``, ``unknown_label``,
``confidentiality_restricted``, ``law_label``, ``sensitivity_label``,
``role_type_not_allowed``, ``not_needed_for_task``.
A resource without a confidentiality label counts as N (normal); a missing
sensitivity label is not proof of non-sensitivity, which is why roles are
also limited to the note types they need.

The only I/O here is reading the two YAML files (``RolePolicy.load``, the
label vocabulary at import).
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

CONFIDENTIALITY_CODES = ("U", "L", "M", "N", "R", "V")  # ascending
RESTRICTED_CONFIDENTIALITY = frozenset({"R", "V"})
SENSITIVITY_CODES = frozenset({"ETH", "SUD", "PSY", "MH", "BH", "HIV", "STD", "SDV", "SEX"})
LAW_CODES = frozenset({"42CFRPart2"})
UNLABELLED_CONFIDENTIALITY = "N"
MALFORMED_LABEL = ("<malformed>", "")  # stands for a label that is not a readable Coding
# Resource types the policy can grant; anything else is denied (new types are added here).
RESOURCE_TYPES = ("Patient", "Condition", "DocumentReference")

REASONS = (
    "allowed", "no_scope", "unknown_role", "resource_not_allowed", "unknown_label",
    "confidentiality_restricted", "law_label", "sensitivity_label", "role_type_not_allowed",
    "not_needed_for_task",
)
DEFAULT_ROLE = "default"
DEFAULT_POLICY_PATH = Path(__file__).with_name("role_policy.yaml")
LABEL_SYSTEMS_PATH = Path(__file__).with_name("label_systems.yaml")


@dataclass(frozen=True)
class LabelVocabulary:
    """What the policy understands about labels (``label_systems.yaml``)."""

    aliases: Mapping[str, str]  # exact spelling -> canonical system URL
    sensitivity_aliases: Mapping[str, str]  # specific v3-ActCode -> broader sensitivity code
    harmless: frozenset[tuple[str, str]]  # (canonical system, code) that restrict nothing

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "label vocabulary") -> LabelVocabulary:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping.")
        aliases = data.get("aliases") or {}
        sens = data.get("sensitivity_aliases") or {}
        if not isinstance(aliases, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
            raise ConfigError(f"{source}: 'aliases' must map spellings to system URLs.")
        if not isinstance(sens, dict) or not all(
                isinstance(k, str) and v in SENSITIVITY_CODES for k, v in sens.items()):
            raise ConfigError(f"{source}: 'sensitivity_aliases' must map codes to "
                              f"{sorted(SENSITIVITY_CODES)}.")
        return cls(aliases=MappingProxyType(dict(aliases)),
                   sensitivity_aliases=MappingProxyType(dict(sens)),
                   harmless=harmless_labels(data.get("harmless"), source=source))

    def canonical(self, system: str) -> str:
        return self.aliases.get(system, system)


def harmless_labels(value: Any, *, source: str) -> frozenset[tuple[str, str]]:
    """``[[system, code], ...]`` as a set; refuses labels the policy already gives a meaning."""
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(
            isinstance(x, list) and len(x) == 2 and all(isinstance(v, str) and v for v in x)
            for x in value):
        raise ConfigError(f"{source}: 'harmless' labels must be a list of [system, code] pairs.")
    out = frozenset((system, code) for system, code in value)
    for system, code in out:
        if system == CONFIDENTIALITY_SYSTEM or (
                system == ACT_CODE_SYSTEM and code in SENSITIVITY_CODES | LAW_CODES):
            raise ConfigError(f"{source}: {system}|{code} restricts access; it cannot be harmless.")
    return out


def _load_vocabulary(path: Path) -> LabelVocabulary:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        raise ConfigError(f"Label vocabulary cannot be read: {path}.") from None
    return LabelVocabulary.from_dict(data, source=str(path))


VOCABULARY = _load_vocabulary(LABEL_SYSTEMS_PATH)
SENSITIVITY_ALIASES = VOCABULARY.sensitivity_aliases


@dataclass(frozen=True)
class DocumentMeta:
    id: str
    version: str | None
    type_code: str | None  # LOINC
    category_codes: frozenset[str]
    security: frozenset[tuple[str, str]]  # (system, code) from securityLabel + meta.security
    date: str | None
    resource_type: str = "DocumentReference"


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
    unknown: frozenset[tuple[str, str]] = frozenset()  # not understood or malformed: deny


def _canonical_system(system: str | None, vocabulary: LabelVocabulary = VOCABULARY) -> str:
    """The canonical system URL: exact spelling or a listed alias; no other normalisation."""
    return vocabulary.canonical(system) if isinstance(system, str) else ""


def labels(doc: DocumentMeta | Iterable[tuple[str, str]], *,
           harmless: frozenset[tuple[str, str]] | None = None,
           vocabulary: LabelVocabulary = VOCABULARY) -> Labels:
    """Sort labels by kind; whatever is not understood goes to ``unknown`` (fail closed).

    Codes and systems are compared exactly. ``harmless`` (default: the vocabulary's
    list) are labels that restrict nothing and are left out of every kind.
    """
    security = doc.security if isinstance(doc, DocumentMeta) else doc
    harmless = vocabulary.harmless if harmless is None else harmless
    conf: set[str] = set()
    sens: set[str] = set()
    law: set[str] = set()
    unknown: set[tuple[str, str]] = set()
    for raw_system, code in security:
        system = _canonical_system(raw_system, vocabulary)
        if not system or not isinstance(code, str) or not code:
            unknown.add((str(raw_system), str(code)))
        elif system == CONFIDENTIALITY_SYSTEM:
            (conf.add(code) if code in CONFIDENTIALITY_CODES else unknown.add((system, code)))
        elif system == ACT_CODE_SYSTEM and vocabulary.sensitivity_aliases.get(code, code) in \
                SENSITIVITY_CODES:
            sens.add(vocabulary.sensitivity_aliases.get(code, code))
        elif system == ACT_CODE_SYSTEM and code in LAW_CODES:
            law.add(code)
        elif (system, code) not in harmless:
            unknown.add((system, code))
    return Labels(frozenset(conf or {UNLABELLED_CONFIDENTIALITY}), frozenset(sens), frozenset(law),
                  frozenset(unknown))


@dataclass(frozen=True)
class RoleRule:
    """What one role may see. ``None`` for types or categories means any ("*")."""

    allowed_types: frozenset[str] | None = frozenset()
    allowed_categories: frozenset[str] | None = None
    allowed_sensitivity: frozenset[str] = frozenset()
    allowed_confidentiality: frozenset[str] = frozenset({"U", "L", "M", "N"})
    allowed_law: frozenset[str] = frozenset()
    allowed_resources: frozenset[str] = frozenset({"DocumentReference"})


_RULE_KEYS = {"allowed_types", "allowed_categories", "allowed_sensitivity",
              "allowed_confidentiality", "allowed_law", "allowed_resources", "description"}


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
        allowed_resources=_codes(role, "allowed_resources",
                                 data.get("allowed_resources", ["DocumentReference"]),
                                 star=False, known=RESOURCE_TYPES) or frozenset(),
    )


@dataclass(frozen=True)
class RolePolicy:
    """Rules per role. Roles not listed (and the ``default`` role) are denied everything."""

    roles: Mapping[str, RoleRule] = field(default_factory=dict)
    harmless: frozenset[tuple[str, str]] = VOCABULARY.harmless

    def labels(self, security: Iterable[tuple[str, str]]) -> Labels:
        return labels(security, harmless=self.harmless)

    def rule(self, role: str) -> RoleRule | None:
        key = (role or "").strip().lower()
        return None if key == DEFAULT_ROLE else self.roles.get(key)

    @classmethod
    def from_dict(cls, data: Any) -> RolePolicy:
        if not isinstance(data, dict) or not isinstance(data.get("roles"), dict):
            raise ConfigError("Role policy: expected a mapping with a 'roles' mapping.")
        if extra := set(data) - {"roles", "harmless_labels"}:
            raise ConfigError(f"Role policy: unknown top-level keys: {sorted(extra)}.")
        harmless = (VOCABULARY.harmless if "harmless_labels" not in data else
                    harmless_labels(data["harmless_labels"], source="Role policy"))
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
        return cls(roles=MappingProxyType(roles), harmless=harmless)

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


def _label_decision(found: Labels, rule: RoleRule) -> Decision | None:
    if found.unknown:
        return Decision(False, "unknown_label")
    if not found.confidentiality <= rule.allowed_confidentiality:
        return Decision(False, "confidentiality_restricted")
    if not found.law <= rule.allowed_law:
        return Decision(False, "law_label")
    if not found.sensitivity <= rule.allowed_sensitivity:
        return Decision(False, "sensitivity_label")
    return None


def decide(doc: DocumentMeta, ctx: AccessContext, policy: RolePolicy) -> Decision:
    """May this user see this document for this task? Deny by default, first failing check wins."""
    if not ctx.can_read_documents:
        return Decision(False, "no_scope")
    rule = policy.rule(ctx.role)
    if rule is None:
        return Decision(False, "unknown_role")
    if doc.resource_type not in rule.allowed_resources:
        return Decision(False, "resource_not_allowed")
    if (refused := _label_decision(policy.labels(doc.security), rule)) is not None:
        return refused
    if rule.allowed_types is not None and doc.type_code not in rule.allowed_types:
        return Decision(False, "role_type_not_allowed")
    if (rule.allowed_categories is not None and doc.category_codes
            and not doc.category_codes & rule.allowed_categories):
        return Decision(False, "role_type_not_allowed")
    if ctx.task_types is not None and doc.type_code not in ctx.task_types:
        return Decision(False, "not_needed_for_task")
    return Decision(True, "allowed")


def decide_resource(resource: Any, role: str, policy: RolePolicy) -> Decision:
    """May this role see this non-document resource (Patient, Condition, ...)? Labels only.

    The resource type must be granted to the role (``allowed_resources``); then its
    ``meta.security`` labels are checked as a note's are. A DocumentReference goes
    through ``decide`` instead (types, categories, task).
    """
    rule = policy.rule(role)
    if rule is None:
        return Decision(False, "unknown_role")
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    if rtype not in rule.allowed_resources or rtype == "DocumentReference":
        return Decision(False, "resource_not_allowed")
    if (refused := _label_decision(policy.labels(security_labels(resource)), rule)) is not None:
        return refused
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
    return DocumentMeta(id=doc_id, version=_text(meta.get("versionId")), type_code=type_code,
                        category_codes=categories, security=security_labels(resource),
                        date=_text(resource.get("date")))


def security_labels(resource: Any) -> frozenset[tuple[str, str]]:
    """``(canonical system, code)`` of ``meta.security`` and ``securityLabel`` codings.

    Nothing is trimmed or case-folded. Whatever is not a Coding with a string system and
    code (a wrong shape, a missing system or code) becomes ``MALFORMED_LABEL``, which
    denies: a label we cannot read is not proof that the resource is unrestricted.
    """
    if not isinstance(resource, dict):
        return frozenset({MALFORMED_LABEL})
    out: set[tuple[str, str]] = set()
    meta = resource.get("meta", {})
    codings: list[Any] = []
    if not isinstance(meta, dict):
        out.add(MALFORMED_LABEL)
        meta = {}
    security = meta.get("security", [])
    if isinstance(security, list):
        codings += security
    else:
        out.add(MALFORMED_LABEL)
    concepts = resource.get("securityLabel", [])
    if not isinstance(concepts, list):
        concepts = [None]
    for concept in concepts:
        coding = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(coding, list) or not coding:
            out.add(MALFORMED_LABEL)
            continue
        codings += coding
    for c in codings:
        system = c.get("system") if isinstance(c, dict) else None
        code = c.get("code") if isinstance(c, dict) else None
        if isinstance(system, str) and system and isinstance(code, str) and code:
            out.add((_canonical_system(system), code))
        else:
            out.add(MALFORMED_LABEL)
    return frozenset(out)


def summarize(decisions: Iterable[Decision]) -> dict[str, int]:
    """Counts by reason (no document ids: safe to log)."""
    return dict(Counter(d.reason for d in decisions))
