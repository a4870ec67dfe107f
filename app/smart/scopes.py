"""Granted SMART scopes parsed into grants the rest of the app can ask.

SMART App Launch 2.2, "Scopes and launch context":
https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html

v1 ``patient/Observation.read`` equals v2 ``patient/Observation.rs``;
v1 ``.write`` equals v2 ``.cud``; ``*`` is any resource type or any of
``cruds``. v2 query restrictions (``?category=...``) are kept as a note but
treated conservatively: a restricted scope grants nothing for unrestricted use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(
    r"^(?P<ctx>patient|user|system)/(?P<type>[A-Za-z]+|\*)\.(?P<perm>[cruds]+|read|write|\*)"
    r"(?P<query>\?.*)?$"
)
# What an open (non-SMART) development server is treated as granting: the app's own needs, nothing more.
OPEN_SERVER_GRANTS = ("patient/Patient.r patient/Condition.rs patient/DocumentReference.rs patient/Binary.r "
                      "user/Practitioner.r user/DocumentReference.cu user/Provenance.c user/Device.cr")
INTERACTIONS = {"create": "c", "read": "r", "update": "u", "delete": "d", "search": "s"}


@dataclass(frozen=True)
class ResourceScope:
    context: str  # patient | user | system
    resource_type: str  # a FHIR type or "*"
    permissions: frozenset[str]  # subset of {"c","r","u","d","s"}
    restricted: bool  # carries a v2 query restriction


@dataclass(frozen=True)
class Grants:
    """What the granted scope string allows."""

    raw: tuple[str, ...]
    resources: tuple[ResourceScope, ...]

    @classmethod
    def parse(cls, scope: str | None) -> Grants:
        tokens = tuple(t for t in (scope or "").split() if t)
        parsed: list[ResourceScope] = []
        for token in tokens:
            m = _SCOPE.match(token)
            if not m:
                continue
            perm = m["perm"]
            letters = _V1.get(perm, perm)
            parsed.append(
                ResourceScope(
                    context=m["ctx"],
                    resource_type=m["type"],
                    permissions=frozenset(letters),
                    restricted=bool(m["query"]),
                )
            )
        return cls(raw=tokens, resources=tuple(parsed))

    def allows(self, resource_type: str, interaction: str, *, contexts: tuple[str, ...] = ()) -> bool:
        """May the app perform ``interaction`` (create/read/update/delete/search) on the type?"""
        letter = INTERACTIONS[interaction]
        for rs in self.resources:
            if rs.restricted:
                continue
            if contexts and rs.context not in contexts:
                continue
            if rs.resource_type in (resource_type, "*") and letter in rs.permissions:
                return True
        return False

    def may_read(self, resource_type: str) -> bool:
        return self.allows(resource_type, "read") or self.allows(resource_type, "search")

    def may_create(self, resource_type: str) -> bool:
        return self.allows(resource_type, "create")

    def has(self, scope: str) -> bool:
        return scope in self.raw

    @property
    def writeback_enabled(self) -> bool:
        return self.may_create("DocumentReference") and self.may_create("Provenance")

    def writeback_reason(self) -> str | None:
        """Why write-back is off, in words a clinician understands; None when on."""
        missing = [t for t in ("DocumentReference", "Provenance") if not self.may_create(t)]
        if not missing:
            return None
        return (
            "Write-back is disabled: the EHR did not grant permission to create "
            + " and ".join(missing)
            + ". Drafts stay in this app; ask your EHR administrator for the write scopes."
        )

    def summary(self) -> dict[str, bool]:
        return {
            "read_patient": self.may_read("Patient"),
            "read_conditions": self.may_read("Condition"),
            "read_documents": self.may_read("DocumentReference"),
            "read_binary": self.may_read("Binary"),
            "write_documents": self.may_create("DocumentReference"),
            "write_provenance": self.may_create("Provenance"),
            "write_audit": self.may_create("AuditEvent"),
            "update_documents": self.allows("DocumentReference", "update"),
        }


def spell_for_server(scopes: str, *, v2: bool) -> str:
    """Request scopes in the spelling the server understands.

    A server that advertises ``permission-v2`` gets v2 (``.rs``, ``.c``); any
    other gets v1 (``.read``, ``.write``), because a v1-only server ignores or
    refuses scopes it cannot parse. v1 cannot express "create but not update":
    ``.c`` becomes ``.write``, which asks for more than the app needs; the
    grants actually received are still what the app obeys. Query-restricted
    v2 scopes have no v1 form and are dropped for v1 servers.
    """
    out: list[str] = []
    for token in scopes.split():
        m = _SCOPE.match(token)
        if not m:
            out.append(token)  # launch, openid, fhirUser, offline_access ...
            continue
        perm = m["perm"]
        letters = set(_V1.get(perm, perm))
        prefix = f"{m['ctx']}/{m['type']}"
        if v2:
            spelled = "".join(c for c in "cruds" if c in letters)
            out.append(f"{prefix}.{spelled}{m['query'] or ''}")
            continue
        if m["query"]:
            continue
        if letters & {"r", "s"}:
            out.append(f"{prefix}.read")
        if letters & {"c", "u", "d"}:
            out.append(f"{prefix}.write")
    return " ".join(dict.fromkeys(out))  # de-duplicated, order kept
