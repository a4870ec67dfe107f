"""The committed synthetic data set: reproducible, big enough, well-formed, gold consistent."""

from __future__ import annotations

import base64
import io
import json
import re
from functools import lru_cache
from pathlib import Path

import pytest

from synthetic_data import generate

ROOT = Path(__file__).resolve().parents[2] / "synthetic_data"
ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


@lru_cache(maxsize=1)
def bundles() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((ROOT / "bundles").glob("*.json"))}


@lru_cache(maxsize=1)
def resources() -> dict[str, dict]:
    """'Type/id' -> resource over every bundle."""
    out = {}
    for b in bundles().values():
        for e in b["entry"]:
            r = e["resource"]
            out[f"{r['resourceType']}/{r['id']}"] = r
    return out


def docs() -> list[dict]:
    return [r for r in resources().values() if r["resourceType"] == "DocumentReference"]


def raw_bytes(doc: dict) -> bytes:
    att = doc["content"][0]["attachment"]
    if "data" in att:
        return base64.b64decode(att["data"])
    return base64.b64decode(resources()[att["url"]]["data"])


def text_of(doc: dict) -> str:
    ctype = doc["content"][0]["attachment"]["contentType"]
    raw = raw_bytes(doc)
    if ctype == "application/pdf":
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(raw))
        return "\n".join(p.extract_text() for p in reader.pages)
    text = raw.decode("utf-8", errors="replace")
    if ctype.startswith("text/html"):
        text = re.sub(r"<[^>]+>", " ", text)
    return text


def manifest() -> dict:
    return json.loads((ROOT / "manifest.json").read_text())


def gold() -> list[dict]:
    return json.loads((ROOT / "gold" / "irae.json").read_text())


def test_regeneration_is_byte_identical(tmp_path):
    assert generate.main(["--out", str(tmp_path), "--no-validate"]) == 0
    produced = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json"))
    committed = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.json"))
    assert produced == committed
    for rel in produced:
        assert (tmp_path / rel).read_bytes() == (ROOT / rel).read_bytes(), rel


def test_counts_meet_minimums():
    m = manifest()
    patients = [r for r in resources().values() if r["resourceType"] == "Patient"]
    assert len(patients) == m["patients"] >= 12
    assert len(docs()) == m["notes"] >= 300
    loincs = {d["type"]["coding"][0]["code"] for d in docs()}
    assert len(loincs) >= 6
    ctypes = {d["content"][0]["attachment"]["contentType"].split(";")[0] for d in docs()}
    assert {"text/plain", "text/html", "application/pdf"} <= ctypes
    atts = [d["content"][0]["attachment"] for d in docs()]
    assert any("data" in a for a in atts) and any("url" in a for a in atts)
    dates = sorted(d["date"][:10] for d in docs())
    assert dates[0] >= "2025-11-01" and dates[-1] <= "2026-10-31"


def test_practitioners_bundle():
    b = bundles()["00-practitioners"]
    ids = {e["resource"]["id"] for e in b["entry"]}
    pracs = {"prac-onc-1", "prac-nurse-1", "prac-psych-1", "prac-gp-1", "prac-admin-1"}
    assert pracs | {f"role-{p}" for p in pracs} | {"org-sandbox-hospital"} == ids
    for e in b["entry"]:
        r = e["resource"]
        assert e["request"] == {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}


def test_every_entry_is_put_with_fixed_id_and_references_resolve():
    refs = set(resources())
    for name, b in bundles().items():
        assert b["type"] == "transaction"
        for e in b["entry"]:
            r = e["resource"]
            assert e["request"] == {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
            for ref in re.findall(r'"reference": "([^"]+)"', json.dumps(r)):
                assert ref in refs, (name, ref)


def test_document_references_parse_as_r4b_and_us_core_shape():
    from fhir.resources.R4B.binary import Binary
    from fhir.resources.R4B.documentreference import DocumentReference

    for d in docs():
        DocumentReference.model_validate(d)
        assert d["status"] == "current" and d["docStatus"] == "final"
        assert d["type"]["coding"][0]["system"] == "http://loinc.org"
        assert d["category"][0]["coding"][0]["code"] == "clinical-note"
        assert d["subject"]["reference"].startswith("Patient/")
        assert d["author"][0]["reference"].startswith("Practitioner/")
        assert d["context"]["encounter"][0]["reference"].startswith("Encounter/")
        assert d["content"][0]["attachment"]["contentType"]
    for r in resources().values():
        if r["resourceType"] == "Binary":
            Binary.model_validate(r)


def test_security_labels_present_in_both_places():
    labelled = {lab: set() for lab in ("R", "PSY", "42CFRPart2")}
    for d in docs():
        meta = {(c["system"], c["code"]) for c in d.get("meta", {}).get("security", [])}
        label = {(c["system"], c["code"]) for s in d.get("securityLabel", []) for c in s["coding"]}
        assert meta == label
        for system, code in meta:
            assert system in (ACTCODE, CONF)
            labelled[code].add(d["id"])
    assert all(labelled.values())
    assert {k: sorted(v) for k, v in labelled.items()} == manifest()["labelled"]
    # an oncology patient with an irAE also has a PSY-labelled note (role-denial tests)
    irae_patients = {g["patient"] for g in gold() if g["irae_detected"]}
    psy_patients = {resources()[f"DocumentReference/{i}"]["subject"]["reference"][8:]
                    for i in labelled["PSY"]}
    assert irae_patients & psy_patients


def test_hostile_notes():
    h = manifest()["hostile"]
    by_id = {d["id"]: d for d in docs()}
    html = raw_bytes(by_id[h["html_script"]]).decode()
    assert "<script>alert('x')" in html and "onerror=" in html
    assert by_id[h["html_script"]]["content"][0]["attachment"]["contentType"].startswith(
        "text/html")
    assert "Ignore all previous instructions" in text_of(by_id[h["prompt_injection"]])
    assert len(raw_bytes(by_id[h["long_note"]])) >= 290_000
    bad = by_id[h["invalid_utf8"]]
    assert bad["content"][0]["attachment"]["contentType"] == "text/plain; charset=utf-8"
    with pytest.raises(UnicodeDecodeError):
        raw_bytes(bad).decode("utf-8")


def test_canary_patient():
    p = resources()["Patient/pat-canary"]
    assert p["name"][0]["family"] == "Canarywhistle" and p["name"][0]["given"] == ["Zyxwend"]
    notes = [d for d in docs() if d["subject"]["reference"] == "Patient/pat-canary"]
    assert notes and all("Canarywhistle" in text_of(d) for d in notes)
    assert any("Mr. Canarywhistle" in text_of(d) for d in notes)


def test_pdf_text_layer_is_extractable():
    pdfs = [d for d in docs() if d["content"][0]["attachment"]["contentType"] == "application/pdf"]
    assert pdfs
    for d in pdfs[:10]:
        assert "Patient:" in text_of(d)


def test_gold_irae_consistent_with_notes():
    organs = {"gastrointestinal", "hepatic", "pulmonary", "endocrine", "dermatologic", "cardiac",
              "renal", "neurologic", "musculoskeletal", "hematologic"}
    g = gold()
    assert len(g) >= 12
    assert any(x["irae_detected"] for x in g) and any(not x["irae_detected"] for x in g)
    assert any(x["distractors"] for x in g)
    by_id = {d["id"]: d for d in docs()}
    for entry in g:
        assert entry["irae_detected"] == bool(entry["events"])
        for ev in entry["events"]:
            assert ev["organ"] in organs and 1 <= ev["ctcae_grade"] <= 5
            assert ev["attribution"] == "ici" and re.fullmatch(r"\d{4}-\d\d-\d\d", ev["onset"])
            assert ev["evidence_documents"]
            for doc_id in ev["evidence_documents"]:
                d = by_id[doc_id]
                assert d["subject"]["reference"] == f"Patient/{entry['patient']}"
                assert "securityLabel" not in d
                text = text_of(d).lower()
                assert ev["term"] in text and f"grade {ev['ctcae_grade']}" in text, doc_id
        evidence = {i for ev in entry["events"] for i in ev["evidence_documents"]}
        for dist in entry["distractors"]:
            assert not set(dist["documents"]) & evidence
            for doc_id in dist["documents"]:
                assert by_id[doc_id]["subject"]["reference"] == f"Patient/{entry['patient']}"


def test_retrieval_queries():
    qs = json.loads((ROOT / "gold" / "retrieval_queries.json").read_text())
    assert len(qs) >= 40 and len({q["id"] for q in qs}) == len(qs)
    by_id = {d["id"]: d for d in docs()}
    for q in qs:
        assert q["query"] and q["relevant_documents"]
        for doc_id in q["relevant_documents"]:
            d = by_id[doc_id]
            assert d["subject"]["reference"] == f"Patient/{q['patient']}"
            assert "securityLabel" not in d
