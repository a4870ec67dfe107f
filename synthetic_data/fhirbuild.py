"""Pure builders for the FHIR R4 resources of the synthetic data (dicts, no I/O)."""

from __future__ import annotations

import base64
import hashlib

from . import cohort

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
NOTE_TYPES = {
    "11488-4": "Consult note", "18842-5": "Discharge summary",
    "34117-2": "History and physical note", "11506-3": "Progress note",
    "18748-4": "Diagnostic imaging study", "11502-2": "Laboratory report",
    "11526-1": "Pathology study", "34111-5": "Emergency department note",
    "34746-8": "Nurse note",
}
LABELS = {
    "R": {"system": CONF, "code": "R", "display": "restricted"},
    "PSY": {"system": ACTCODE, "code": "PSY",
            "display": "psychiatry disorder information sensitivity"},
    "42CFRPart2": {"system": ACTCODE, "code": "42CFRPart2", "display": "42 CFR Part2"},
}
ENC_CLASS = {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient encounter"}
MRN_SYSTEM = "urn:oid:1.2.3.4.5.1"
US_CORE_CAT = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"


def ref(kind: str, rid: str) -> dict:
    return {"reference": f"{kind}/{rid}"}


def entry(resource: dict) -> dict:
    path = f"{resource['resourceType']}/{resource['id']}"
    return {"request": {"method": "PUT", "url": path}, "resource": resource}


def bundle(bundle_id: str, resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "id": bundle_id, "type": "transaction",
            "entry": [entry(r) for r in resources]}


def practitioners_bundle() -> dict:
    res: list[dict] = [{
        "resourceType": "Organization", "id": cohort.ORG_ID, "active": True,
        "name": cohort.ORG_NAME,
        "identifier": [{"system": "urn:oid:1.2.3.4.5.6", "value": "SANDBOX-HOSP"}],
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                              "code": "prov", "display": "Healthcare Provider"}]}],
    }]
    roles = []
    for i, (pid, fam, giv, prefix, rcode, rdisp, scode, sdisp, title) in enumerate(
            cohort.PRACTITIONERS):
        name = {"use": "official", "family": fam, "given": [giv]}
        if prefix:
            name["prefix"] = [prefix]
        res.append({"resourceType": "Practitioner", "id": pid, "active": True, "name": [name],
                    "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi",
                                    "value": f"99900000{i + 1:02d}"}],
                    "qualification": [{"code": {"text": title}}]})
        roles.append({
            "resourceType": "PractitionerRole", "id": f"role-{pid}", "active": True,
            "practitioner": ref("Practitioner", pid),
            "organization": ref("Organization", cohort.ORG_ID),
            "code": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/practitioner-role",
                "code": rcode, "display": rdisp}], "text": title}],
            "specialty": [{"coding": [{"system": SNOMED, "code": scode, "display": sdisp}]}],
        })
    return bundle("bundle-practitioners", res + roles)


def patient(p: dict, given: str, family: str, mrn: str, city: tuple) -> dict:
    return {"resourceType": "Patient", "id": p["id"], "active": True,
            "identifier": [{"system": MRN_SYSTEM, "value": mrn, "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
            "name": [{"use": "official", "family": family, "given": [given]}],
            "gender": p["sex"], "birthDate": p["birth"],
            "address": [{"use": "home", "line": [f"{100 + int(mrn[-3:])} Synthetic Lane"],
                         "city": city[0], "state": city[1], "postalCode": city[2],
                         "country": "US"}],
            "managingOrganization": ref("Organization", cohort.ORG_ID)}


def encounter(eid: str, pid: str, setting: str, start: str, end: str, reason: str,
              prac: str) -> dict:
    return {"resourceType": "Encounter", "id": eid, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": setting, "display": ENC_CLASS[setting]},
            "type": [{"text": reason}], "subject": ref("Patient", pid),
            "participant": [{"individual": ref("Practitioner", prac)}],
            "period": {"start": start, "end": end},
            "serviceProvider": ref("Organization", cohort.ORG_ID)}


def condition(cid: str, pid: str, code: str, display: str, onset: str, clinical: str = "active",
              verification: str = "confirmed", note: str | None = None,
              abatement: str | None = None, labels: list[str] | None = None) -> dict:
    res = {"resourceType": "Condition", "id": cid,
           "clinicalStatus": {"coding": [{
               "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
               "code": clinical}]},
           "verificationStatus": {"coding": [{
               "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
               "code": verification}]},
           "category": [{"coding": [{
               "system": "http://terminology.hl7.org/CodeSystem/condition-category",
               "code": "problem-list-item", "display": "Problem List Item"}]}],
           "code": {"coding": [{"system": SNOMED, "code": code, "display": display}],
                    "text": display},
           "subject": ref("Patient", pid), "onsetDateTime": onset, "recordedDate": onset}
    if abatement:
        res["abatementDateTime"] = abatement
    if note:
        res["note"] = [{"text": note}]
    if labels:  # a Condition has no securityLabel element: meta.security only
        res["meta"] = {"security": [dict(LABELS[x]) for x in labels]}
    return res


def medication_request(mid: str, pid: str, name: str, rxcui: str, dosage: str, authored: str,
                       status: str, prac: str, reason: str | None = None) -> dict:
    res = {"resourceType": "MedicationRequest", "id": mid, "status": status, "intent": "order",
           "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxcui,
                                                     "display": name}], "text": name},
           "subject": ref("Patient", pid), "authoredOn": authored,
           "requester": ref("Practitioner", prac), "dosageInstruction": [{"text": dosage}]}
    if reason:
        res["reasonReference"] = [ref("Condition", reason)]
    return res


def attachment_payload(text: str | bytes, fmt: str) -> tuple[str, bytes]:
    """Return (contentType, raw bytes) for a note in the given format."""
    from .pdf import make_pdf

    if isinstance(text, bytes):
        return "text/plain; charset=utf-8", text
    if fmt == "html":
        import html
        body = "".join(f"<p>{html.escape(line)}</p>" for line in text.splitlines())
        doc = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head>"
               f"<body>{body}</body></html>")
        return "text/html; charset=utf-8", doc.encode("utf-8")
    if fmt == "pdf":
        return "application/pdf", make_pdf(text)
    return "text/plain; charset=utf-8", text.encode("utf-8")


def document_reference(did: str, pid: str, loinc: str, date: str, prac: str, eid: str,
                       content_type: str, raw: bytes, title: str, binary_id: str | None,
                       labels: list[str]) -> tuple[dict, dict | None]:
    data = base64.b64encode(raw).decode("ascii")
    att = {"contentType": content_type, "language": "en-US", "title": title, "creation": date,
           "size": len(raw),
           "hash": base64.b64encode(hashlib.sha1(raw, usedforsecurity=False).digest()).decode()}
    binary = None
    if binary_id:
        att["url"] = f"Binary/{binary_id}"
        binary = {"resourceType": "Binary", "id": binary_id, "contentType": content_type,
                  "securityContext": ref("DocumentReference", did), "data": data}
    else:
        att["data"] = data
    doc = {"resourceType": "DocumentReference", "id": did,
           "meta": {"profile": [
               "http://hl7.org/fhir/us/core/StructureDefinition/us-core-documentreference"]},
           "identifier": [{"system": "urn:oid:1.2.3.4.5.99", "value": did}],
           "status": "current", "docStatus": "final",
           "type": {"coding": [{"system": LOINC, "code": loinc, "display": NOTE_TYPES[loinc]}],
                    "text": NOTE_TYPES[loinc]},
           "category": [{"coding": [{"system": US_CORE_CAT, "code": "clinical-note",
                                     "display": "Clinical Note"}]}],
           "subject": ref("Patient", pid), "date": date, "author": [ref("Practitioner", prac)],
           "custodian": ref("Organization", cohort.ORG_ID), "description": title,
           "content": [{"attachment": att}],
           "context": {"encounter": [ref("Encounter", eid)], "period": {"start": date}}}
    if labels:
        sec = [dict(LABELS[x]) for x in labels]
        doc["meta"]["security"] = sec
        doc["securityLabel"] = [{"coding": [dict(LABELS[x])]} for x in labels]
        if binary:
            binary["meta"] = {"security": [dict(LABELS[x]) for x in labels]}
    return doc, binary
