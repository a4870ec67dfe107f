"""The Synthea evaluation corpus: its gold agrees with its own bundles.

Checks, from the decoded note text only (no application code): every answer_document exists and
belongs to the patient, states every expected value, and is the newest note that does (no strictly
newer note states the fact or carries the section the question is about); unanswerable questions
really have no trace in the chart; summary facts cite notes that state them.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "eval_corpora" / "synthea"
CATEGORIES = {"allergies", "medications", "blood_pressure", "vitals", "condition", "recent_encounter",
              "lab", "paraphrase", "not_in_chart"}
# the line that shows a note carries the fact a category is about
SECTION_MARK = {"allergies": "# Allergies", "medications": "# Medications",
                "blood_pressure": "- Systolic Blood Pressure:", "recent_encounter": "# Assessment and Plan"}
VITAL_MARK = {"weight": "- Body Weight:", "heart_rate": "- Heart rate:",
              "bmi": "- Body mass index (BMI) [Ratio]:"}


@pytest.fixture(scope="module")
def charts() -> dict[str, dict]:
    out = {}
    for path in sorted((ROOT / "bundles").glob("*.json")):
        resources = [e["resource"] for e in json.loads(path.read_text(encoding="utf-8"))["entry"]]
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        assert path.stem == patient["id"]
        docs = {}
        for r in resources:
            if r["resourceType"] == "DocumentReference":
                att = r["content"][0]["attachment"]
                assert att["contentType"].startswith("text/plain")
                docs[r["id"]] = (r["date"], base64.b64decode(att["data"]).decode("utf-8").lower())
        out[patient["id"]] = {"docs": docs, "resources": resources}
    return out


@pytest.fixture(scope="module")
def questions() -> list[dict]:
    return json.loads((ROOT / "gold" / "questions.json").read_text(encoding="utf-8"))


def _values(expected) -> tuple[str, list[str]]:
    if isinstance(expected, dict):
        (mode, vals), = expected.items()
        assert mode in ("all", "any")
        return mode, [v.lower() for v in vals]
    return "all", [v.lower() for v in expected]


def _states(text: str, expected) -> bool:
    mode, vals = _values(expected)
    hits = [v in text for v in vals]
    return all(hits) if mode == "all" else any(hits)


def _mark(q: dict) -> str | None:
    cat = q.get("paraphrase_of") or q["category"]
    if cat == "vitals":
        return VITAL_MARK[q["vital"]]
    return SECTION_MARK.get(cat)


def test_corpus_shape(charts, questions):
    assert 6 <= len(charts) <= 8
    counts = sorted(len(c["docs"]) for c in charts.values())
    assert counts[0] >= 20 and counts[-1] <= 300 and counts[-1] >= 200, counts
    ids = [q["id"] for q in questions]
    assert len(ids) == len(set(ids))
    assert {q["category"] for q in questions} == CATEGORIES
    for pid in charts:
        mine = [q for q in questions if q["patient"] == pid]
        assert len(mine) >= 6
        assert sum(q["category"] == "not_in_chart" for q in mine) == 1


def test_answer_document_is_newest_note_stating_the_value(charts, questions):
    for q in questions:
        if not q["answer_found"]:
            continue
        docs = charts[q["patient"]]["docs"]
        assert q["answer_document"] in docs, q["id"]
        when, text = docs[q["answer_document"]]
        assert when[:10] == q["answer_date"], q["id"]
        mode, vals = _values(q["expected_values"])
        assert vals, q["id"]
        assert _states(text, q["expected_values"]), (q["id"], vals)
        mark = _mark(q)
        if mark:
            assert mark.lower() in text, q["id"]
        lab = q.get("lab")
        for other in q["acceptable_documents"]:
            assert other in docs and docs[other][0][:10] == q["answer_date"], q["id"]
            assert _states(docs[other][1], q["expected_values"]), q["id"]
        for did, (d_when, d_text) in docs.items():
            if d_when <= when or did in q["acceptable_documents"]:
                continue
            # a newer note must neither state the value nor carry the fact's section
            assert not _states(d_text, q["expected_values"]), (q["id"], did)
            if mark:
                assert mark.lower() not in d_text, (q["id"], did, mark)
            if lab:
                tail = d_text.split("the following lab reports were completed:", 1)
                assert len(tail) == 1 or lab not in tail[1], (q["id"], did, lab)


def test_not_in_chart_questions_have_no_trace(charts, questions):
    for q in questions:
        if q["category"] != "not_in_chart":
            assert q["answer_found"], q["id"]
            continue
        assert q["answer_found"] is False and not q["expected_values"] and q["answer_document"] is None
        raw = json.dumps(charts[q["patient"]]["resources"]).lower()
        notes = "\n".join(t for _, t in charts[q["patient"]]["docs"].values())
        for term in q["absent_terms"]:
            assert term not in raw and term not in notes, (q["id"], term)


def test_blood_pressure_matches_observation(charts, questions):
    for q in questions:
        if q["category"] != "blood_pressure":
            continue
        obs = next(r for r in charts[q["patient"]]["resources"]
                   if r["resourceType"] == "Observation" and r["id"] == q["observation"])
        assert obs["code"]["coding"][0]["code"] == "85354-9"
        comp = sorted(str(c["valueQuantity"]["value"]) for c in obs["component"])
        assert comp == sorted(q["expected_values"]["all"]), q["id"]


def test_summary_facts_cite_notes_that_state_them(charts):
    summaries = json.loads((ROOT / "gold" / "summaries.json").read_text(encoding="utf-8"))
    assert {s["patient"] for s in summaries} == set(charts)
    for s in summaries:
        docs = charts[s["patient"]]["docs"]
        cats = {f["category"] for f in s["facts"]}
        assert {"allergy", "medication", "vital", "recent_encounter"} <= cats, s["patient"]
        for f in s["facts"]:
            if f["document"] is None:
                continue
            assert f["document"] in docs
            assert _states(docs[f["document"]][1], f["expected_values"]), (s["patient"], f["value"])
