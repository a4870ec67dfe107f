"""app.monitoring.eval_chart: scoring rules and a tiny corpus through the real loading pipeline."""

from __future__ import annotations

import base64
import json

import pytest

from app.agent.backends.offline import OfflineBackend
from app.agent.citations import Citation, Sentence
from app.agent.runtime import Draft
from app.monitoring.eval_chart import (
    EvalDataError,
    evaluate_chart_tasks,
    score_question,
    values_match,
)
from app.retrieval.embeddings import HashingEmbedder


def _draft(text: str, docs: list[str], found: bool = True) -> Draft:
    sentences = [Sentence(text=text, supported=True,
                          citations=tuple(Citation(d, "1", 0, 9, "x" * 9, f"{d}:1:0") for d in docs))] if found else []
    return Draft(run_id="r", task="question", patient_id="p", status="completed", sentences=sentences,
                 findings=None, injection_suspected=[], backend="offline", model="m", turns=1, tokens_in=0,
                 tokens_out=0, cost_usd=0.0, latency_ms=1, prompt_version="v", answer_found=found,
                 notes=[] if found else ["not found"])


def test_values_all_any_and_case():
    assert values_match("BP 138/86, Pulse 76", {"all": ["138/86", "pulse"]})
    assert not values_match("BP 138/86", {"all": ["138/86", "76"]})
    assert values_match("Latex (hives)", {"any": ["penicillin", "LATEX"]})
    assert values_match("anything", None)


def test_a_right_value_citing_an_older_note_is_wrong():
    item = {"answer_found": True, "expected_values": {"all": ["latex"]}, "answer_document": "new",
            "acceptable_documents": ["also-new"]}
    assert score_question(item, _draft("latex", ["new"]))["correct"]
    assert score_question(item, _draft("latex", ["also-new"]))["correct"]
    verdict = score_question(item, _draft("latex", ["old"]))
    assert verdict["value"] and not verdict["cited"] and not verdict["correct"]


def test_not_found_must_be_said_when_the_chart_has_no_answer():
    item = {"answer_found": False, "expected_values": None, "answer_document": None}
    assert score_question(item, _draft("", [], found=False))["correct"]
    assert not score_question(item, _draft("a guess", ["d"]))["correct"]


def _bundle(patient: str, notes: list[tuple[str, str, str]]) -> dict:
    entries = [{"fullUrl": f"urn:uuid:{patient}", "resource": {"resourceType": "Patient", "id": patient}}]
    for doc_id, date, text in notes:
        entries.append({"fullUrl": f"urn:uuid:{doc_id}", "resource": {
            "resourceType": "DocumentReference", "id": doc_id, "status": "current", "date": date,
            "meta": {"versionId": "1"},
            "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]},
            "subject": {"reference": f"urn:uuid:{patient}"},
            "content": [{"attachment": {"contentType": "text/plain",
                                        "data": base64.b64encode(text.encode()).decode()}}]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_a_small_corpus_end_to_end(tmp_path):
    (tmp_path / "bundles").mkdir()
    (tmp_path / "gold").mkdir()
    notes = [("d1", "2025-01-05T10:00:00+00:00", "Allergies: peanuts (anaphylaxis)\n\nVitals: BP 141/90\n"),
             ("d2", "2026-02-07T10:00:00+00:00", "Allergies: peanuts (anaphylaxis), latex\n\nVitals: none recorded\n")]
    (tmp_path / "bundles" / "p1.json").write_text(json.dumps(_bundle("p1", notes)))
    questions = [
        {"id": "q1", "patient": "p1", "category": "allergies", "question": "Any allergies?", "answer_found": True,
         "expected_values": {"all": ["peanuts", "latex"]}, "answer_document": "d2", "answer_date": "2026-02-07",
         "acceptable_documents": []},
        {"id": "q2", "patient": "p1", "category": "blood_pressure", "question": "Latest BP?", "answer_found": True,
         "expected_values": {"all": ["141/90"]}, "answer_document": "d1", "answer_date": "2025-01-05",
         "acceptable_documents": []},
        {"id": "q3", "patient": "p1", "category": "not_in_chart", "question": "What is the INR goal?",
         "answer_found": False, "expected_values": None, "answer_document": None, "answer_date": None,
         "acceptable_documents": []},
    ]
    (tmp_path / "gold" / "questions.json").write_text(json.dumps(questions))
    (tmp_path / "gold" / "summaries.json").write_text(json.dumps([{"patient": "p1", "facts": [
        {"category": "allergy", "value": "latex", "expected_values": ["latex"], "document": "d2"},
        {"category": "vital", "value": "BP 141/90", "expected_values": ["141/90"], "document": "d1"}]}]))
    out = evaluate_chart_tasks(OfflineBackend(), HashingEmbedder(64, model_id="t"), tmp_path)
    q, s = out["questions"], out["summaries"]
    assert (q["questions"], q["correct"]) == (3, 3)
    assert q["per_category"]["not_in_chart"] == {"n": 1, "correct": 1, "accuracy": 1.0, "value_ok": 1,
                                                 "cited_ok": 1, "answered": 0}
    assert s["completed"] == 1 and s["recall"] == 1.0 and s["cited_recall"] == 1.0
    assert "peanuts" not in json.dumps(out)  # counts and ratios only, never note text


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(EvalDataError):
        evaluate_chart_tasks(OfflineBackend(), HashingEmbedder(64, model_id="t"), tmp_path)


def test_extra_questions_are_scored_apart(tmp_path):
    (tmp_path / "bundles").mkdir()
    (tmp_path / "gold").mkdir()
    for pid, text in (("p1", "Medications: metformin 500 mg twice daily\n"),
                      ("p2", "Immunizations: Tdap given, left deltoid\n")):
        (tmp_path / "bundles" / f"{pid}.json").write_text(
            json.dumps(_bundle(pid, [(f"{pid}-d", "2026-03-01T10:00:00+00:00", text)])))
    base = {"answer_found": True, "answer_date": "2026-03-01", "acceptable_documents": []}
    (tmp_path / "gold" / "questions.json").write_text(json.dumps([
        {**base, "id": "q1", "patient": "p1", "category": "medications", "question": "Meds?",
         "expected_values": {"all": ["metformin"]}, "answer_document": "p1-d"}]))
    # p2 is only in the extra file; a wrong expectation counts against the extra figures only
    (tmp_path / "gold" / "questions_extra.json").write_text(json.dumps([
        {**base, "id": "x1", "patient": "p2", "category": "immunization", "question": "Up to date on tetanus?",
         "expected_values": {"all": ["tdap"]}, "answer_document": "p2-d"},
        {**base, "id": "x2", "patient": "p2", "category": "immunization", "question": "Tdap?",
         "expected_values": {"all": ["zoster"]}, "answer_document": "p2-d"}]))
    (tmp_path / "gold" / "summaries.json").write_text(json.dumps([]))
    out = evaluate_chart_tasks(OfflineBackend(), HashingEmbedder(64, model_id="t"), tmp_path)["questions"]
    assert (out["questions"], out["correct"]) == (1, 1)
    assert (out["extra"]["questions"], out["extra"]["correct"]) == (2, 1)
    assert out["extra"]["per_category"]["immunization"]["n"] == 2
