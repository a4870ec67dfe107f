"""eval_corpora/synthea/gold/questions_extra.json agrees with the notes of its own bundles.

From the decoded note text only (no application code): every answer_document belongs to the
patient, has the stated date and states every expected value (a date value: the note's date);
no strictly newer note states the quoted line's value where the expected values are the line's;
not-found questions' key terms occur in no note of the chart.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "eval_corpora" / "synthea"
EXTRA = ROOT / "gold" / "questions_extra.json"


@pytest.fixture(scope="module")
def notes() -> dict[str, dict[str, tuple[str, str]]]:
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for path in sorted((ROOT / "bundles").glob("*.json")):
        docs = {}
        for entry in json.loads(path.read_text(encoding="utf-8"))["entry"]:
            r = entry["resource"]
            if r["resourceType"] == "DocumentReference":
                text = base64.b64decode(r["content"][0]["attachment"]["data"]).decode("utf-8").lower()
                docs[r["id"]] = (r["date"], text)
        out[path.stem] = docs
    return out


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return json.loads(EXTRA.read_text(encoding="utf-8"))


def test_shape_and_size(items):
    assert len(items) >= 60 and len({q["id"] for q in items}) == len(items)
    assert sum(1 for q in items if not q["answer_found"]) >= 7
    assert sum(1 for q in items if q.get("newest_note_of_chart") is False) >= 10  # older note answers


def test_answer_documents_state_the_expected_values(items, notes):
    for q in items:
        if not q["answer_found"]:
            continue
        docs = notes[q["patient"]]
        date, text = docs[q["answer_document"]]
        assert date[:10] == q["answer_date"], q["id"]
        for value in q["expected_values"].get("all", []):
            assert value.lower() in text, (q["id"], value)
        anyof = q["expected_values"].get("any", [])
        if anyof and q["answer_date"] not in anyof:
            assert any(v.lower() in text for v in anyof), q["id"]
        newest = max(docs, key=lambda i: (docs[i][0], i))  # the corpus order: date, then id
        assert q["newest_note_of_chart"] == (q["answer_document"] == newest), q["id"]


def test_no_newer_note_has_the_quoted_line(items, notes):
    for q in items:
        line = (q.get("note_line") or "").lower()
        if not q["answer_found"] or not line or q["category"] in ("recency", "last_visit"):
            continue
        date = notes[q["patient"]][q["answer_document"]][0]
        newer = [t for d, t in notes[q["patient"]].values() if d > date]
        # a vital line with its value, an immunization line naming the vaccine: not in a newer note
        if any(ch.isdigit() for ch in line) or "immunizations" in line:
            assert not any(line in t for t in newer), q["id"]


def test_not_found_terms_occur_in_no_note(items, notes):
    for q in items:
        if q["answer_found"]:
            continue
        assert q["absent_terms"], q["id"]
        for term in q["absent_terms"]:
            assert not any(term in t for _, t in notes[q["patient"]].values()), (q["id"], term)
