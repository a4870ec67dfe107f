"""Server quirk profiles, each quirk named with its reason (../shared/STANDARDS.md).

``APP_SERVER_PROFILE=auto`` picks a profile from the CapabilityStatement.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerProfile:
    name: str
    transactions: bool  # accepts transaction Bundles
    preliminary_drafts: bool  # accepts DocumentReference.docStatus=preliminary on create
    audit_event_create: bool  # accepts client-written AuditEvents
    requires_encounter: bool  # DocumentReference create needs context.encounter
    no_cache_readback: bool  # searches are cached: send Cache-Control: no-cache on read-back


PROFILES = {
    "generic": ServerProfile("generic", True, True, False, False, True),
    # sekmet-fhir: transactions with urn:uuid rewriting and rollback, strict validation.
    "sekmet": ServerProfile("sekmet", True, True, True, False, False),
    # HAPI public sandbox: searches cached 60 s; open server, volatile data.
    "hapi": ServerProfile("hapi", True, True, True, False, True),
    # Epic: no transaction/batch; encounter required; client AuditEvents refused.
    "epic": ServerProfile("epic", False, True, False, True, False),
    # Oracle Health: provider-access DocumentReference create must be final.
    "oracle": ServerProfile("oracle", False, False, False, True, False),
}


def _interactions(cap: dict, resource_type: str) -> set[str]:
    out: set[str] = set()
    for rest in cap.get("rest") or []:
        for res in rest.get("resource") or []:
            if isinstance(res, dict) and res.get("type") == resource_type:
                out |= {i.get("code") for i in res.get("interaction") or [] if isinstance(i, dict)}
    return out


def detect(cap: dict) -> ServerProfile:
    """Choose a profile from a CapabilityStatement (software name, then declared interactions)."""
    software = str((cap.get("software") or {}).get("name") or "").lower()
    publisher = str(cap.get("publisher") or "").lower()
    for key in ("epic", "oracle", "cerner", "hapi", "sekmet"):
        if key in software or key in publisher:
            return PROFILES["oracle" if key == "cerner" else key]
    system = set()
    for rest in cap.get("rest") or []:
        system |= {i.get("code") for i in rest.get("interaction") or [] if isinstance(i, dict)}
    return ServerProfile(
        "generic",
        transactions="transaction" in system,
        preliminary_drafts=True,
        audit_event_create="create" in _interactions(cap, "AuditEvent"),
        requires_encounter=False,
        no_cache_readback=True,
    )


def profile_for(name: str, cap: dict | None) -> ServerProfile:
    if name != "auto":
        return PROFILES[name]
    return detect(cap or {})
