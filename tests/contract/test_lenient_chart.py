"""Lenient on read: an invalid Condition or DocumentReference is skipped and counted, the chart still opens."""

from __future__ import annotations

import base64

import responses

from app.fhir.client import FhirClient, StaticToken
from app.retrieval.embeddings import HashingEmbedder
from app.retrieval.indexer import build_index, open_chart
from app.retrieval.policy import RolePolicy
from app.smart.scopes import Grants

BASE = "https://ehr.test/fhir"


def note(doc_id: str, text: str, **extra) -> dict:
    return {"resourceType": "DocumentReference", "id": doc_id, "status": "current", "meta": {"versionId": "1"},
            "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]},
            "subject": {"reference": "Patient/p1"}, "date": "2026-01-02T10:00:00Z",
            "content": [{"attachment": {"contentType": "text/plain",
                                        "data": base64.b64encode(text.encode()).decode()}}], **extra}


def searchset(*resources):
    return {"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources]}


@responses.activate
def test_invalid_resources_are_skipped_and_counted():
    responses.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    responses.get(f"{BASE}/Condition", json=searchset(
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}},
        {"resourceType": "Condition", "id": "c2", "subject": {"reference": "Patient/p1"}, "onsetDateTime": "soon"}))
    responses.get(f"{BASE}/DocumentReference", json=searchset(
        note("d1", "Assessment: stable. Plan: continue."),
        note("d2", "Assessment: broken date.", date="the day after tomorrow")))
    client = FhirClient(BASE, StaticToken("t"))
    chart = open_chart(client, "p1", grants=Grants.parse("patient/*.rs"), role="clinician",
                       policy=RolePolicy.default(), embedder=HashingEmbedder())
    assert [c["id"] for c in chart.conditions] == ["c1"]
    assert chart.counts["skipped:invalid_Condition"] == 1 and chart.counts["skipped:invalid_DocumentReference"] == 1
    build_index(client, chart)
    assert chart.progress.state == "ready" and set(chart.texts) == {"d1"}


@responses.activate
def test_earlier_ai_drafts_are_never_evidence():
    ai = note("draft-1", "Problem list (active): Immune-related colitis.",
              meta={"versionId": "1", "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                                                    "code": "AIAST"}]}, docStatus="final")
    responses.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    responses.get(f"{BASE}/Condition", json=searchset())
    responses.get(f"{BASE}/DocumentReference", json=searchset(note("d1", "Assessment: colitis resolved."), ai))
    client = FhirClient(BASE, StaticToken("t"))
    chart = build_index(client, open_chart(client, "p1", grants=Grants.parse("patient/*.rs"), role="clinician",
                                           policy=RolePolicy.default(), embedder=HashingEmbedder()))
    assert set(chart.texts) == {"d1"} and chart.counts["skipped:ai_generated"] == 1
    assert all(r.chunk.document_id == "d1" for r in chart.search("colitis", k=5))
