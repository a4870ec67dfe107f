"""Who launched the app: ``fhirUser`` resolved to a Practitioner and a role.

The role comes from the user's PractitionerRole codes (or a configured
mapping); an unknown role gets the most restrictive default ("default").
"""

from __future__ import annotations

from app.errors import UpstreamError
from app.fhir.client import FhirClient

ROLE_CODES = {
    # http://terminology.hl7.org/CodeSystem/practitioner-role
    "doctor": "clinician",
    "nurse": "nurse",
    "pharmacist": "clinician",
    "ict": "admin",
    "admin": "admin",
}
BEHAVIORAL_SPECIALTIES = {"394587001", "408459003"}  # SNOMED psychiatry, pediatric psychiatry
UNKNOWN_ROLE = "default"


def practitioner_reference(fhir_user: str | None) -> str | None:
    """``Practitioner/123`` from a relative or absolute fhirUser; None for other types."""
    if not fhir_user:
        return None
    parts = fhir_user.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] in ("Practitioner", "PractitionerRole"):
        return f"{parts[-2]}/{parts[-1]}"
    return None


def role_from_practitioner_roles(roles: list[dict]) -> str:
    for res in roles:
        specialties = {c.get("code") for s in res.get("specialty") or [] for c in s.get("coding") or []}
        if specialties & BEHAVIORAL_SPECIALTIES:
            return "behavioral-health"
        for concept in res.get("code") or []:
            for coding in concept.get("coding") or []:
                if coding.get("code") in ROLE_CODES:
                    return ROLE_CODES[coding["code"]]
    return UNKNOWN_ROLE


def resolve_role(client: FhirClient, user_reference: str | None, *, override: str | None = None) -> str:
    if override:
        return override
    if not user_reference:
        return UNKNOWN_ROLE
    try:
        if user_reference.startswith("PractitionerRole/"):
            roles = [client.read("PractitionerRole", user_reference.split("/", 1)[1])]
        else:
            roles = list(client.search("PractitionerRole", {"practitioner": user_reference}))
    except UpstreamError:
        return UNKNOWN_ROLE
    return role_from_practitioner_roles(roles)
