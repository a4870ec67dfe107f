"""Template stress transforms keep the facts; the HTML report is self-contained."""

from __future__ import annotations

import base64
import json
import re

import pytest

from app.errors import AppError
from app.monitoring.report import render
from app.monitoring.stress import TRANSFORMS, transform_corpus

NOTE = """Reason for visit: loose stools for a week.

History: 71F on durvalumab since 2026-02-10. Eight bowel movements a day (baseline one). No melena.

Impression: checkpoint-inhibitor enterocolitis, likely grade 3. Plan: admit, IV methylprednisolone 2 mg/kg."""


def _facts(text: str) -> set[str]:
    return set(re.findall(r"\d+(?:[-./]\d+)*|durvalumab|methylprednisolone|enterocolitis|melena", text.lower()))


@pytest.mark.parametrize("kind", sorted(TRANSFORMS))
def test_transform_keeps_facts_and_changes_form(kind):
    out = TRANSFORMS[kind](NOTE)
    assert out != NOTE
    assert _facts(out) == _facts(NOTE)


def test_reorder_puts_plan_before_reason():
    out = TRANSFORMS["reorder"](NOTE)
    assert out.index("Impression") < out.index("Reason for visit")


def test_transform_corpus_rewrites_text_notes(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "bundles").mkdir(parents=True)
    (src / "gold").mkdir()
    (src / "gold" / "irae.json").write_text("[]")
    doc = {"resourceType": "DocumentReference", "id": "d1", "content": [{"attachment": {
        "contentType": "text/plain; charset=utf-8", "data": base64.b64encode(NOTE.encode()).decode()}}]}
    pdf = {"resourceType": "DocumentReference", "id": "d2", "content": [{"attachment": {
        "contentType": "application/pdf", "data": "JVBERi0="}}]}
    (src / "bundles" / "p.json").write_text(json.dumps({"resourceType": "Bundle", "entry": [
        {"resource": doc}, {"resource": pdf}]}))
    assert transform_corpus(src, dst, "upper") == 1
    out = json.loads((dst / "bundles" / "p.json").read_text())
    text = base64.b64decode(out["entry"][0]["resource"]["content"][0]["attachment"]["data"]).decode()
    assert text == NOTE.upper()
    assert out["entry"][1]["resource"]["content"][0]["attachment"]["data"] == "JVBERi0="
    assert (dst / "gold" / "irae.json").read_text() == "[]"
    with pytest.raises(AppError):
        transform_corpus(src, dst, "shout")


def test_report_is_self_contained_with_plots():
    page = render({"task": "irae", "gates": [{"name": "f1", "value": 0.7, "threshold": 0.75, "passed": False}],
                   "summary": {"f1": 0.7, "precision": 0.9},
                   "per_organ": {"hepatic": {"precision": 1.0, "recall": 0.5}},
                   "per_trap": {"negated": {"passed": 3, "total": 4, "rate": 0.75}}, "latency_ms": [120, 80, 95]})
    assert page.count("<svg") == 4
    assert "<script" not in page
    # nothing fetched: no src attributes, links only to fragments inside the page
    assert not re.search(r"\bsrc=", page)
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))
    assert "FAIL" in page and "hepatic" in page
