"""The irAE screen's rules on phrasings that are not the synthetic templates."""

from __future__ import annotations

import re

import pytest

from app.agent.irae_legacy import TERMS, _copied_spans, _pieces, classify, rule_grade, therapy_start
from app.retrieval.chunking import Chunk


def _verdict(sentence: str, term: str) -> str:
    m = re.search(term, sentence, re.IGNORECASE)
    assert m, term
    return classify(sentence, m.start(), m.end())


@pytest.mark.parametrize(("sentence", "term", "expected"), [
    ("Biopsy-proven colitis, likely immune-mediated, on nivolumab.", "colitis", "affirmed"),
    ("She denies abdominal pain and has no signs of colitis.", "colitis", "negated"),
    ("Skin: negative for rash, pruritus.", "rash", "negated"),
    ("CT without evidence of pneumonitis.", "pneumonitis", "negated"),
    ("Pneumonitis was excluded by bronchoscopy.", "Pneumonitis", "ruled_out"),
    ("Immune hepatitis ruled out; ALT normalised.", "hepatitis", "ruled_out"),
    ("Concern for early pneumonitis on imaging.", "pneumonitis", "uncertain"),
    ("Differential includes ICI colitis versus infectious diarrhea.", "colitis", "uncertain"),
    ("Nephritis was considered but creatinine normalised.", "Nephritis", "uncertain"),
    ("We reviewed the risk of myocarditis with combination therapy.", "myocarditis", "hypothetical"),
    ("Call if diarrhea or rash develops.", "rash", "hypothetical"),
    ("Dermatitis after radiation therapy to the chest wall.", "Dermatitis", "other_cause"),
    ("Colitis secondary to C. difficile infection.", "Colitis", "other_cause"),
    ("Hypothyroidism, not immune-related, on levothyroxine for years.", "Hypothyroidism", "not_ici"),
    ("Longstanding hypothyroidism on replacement.", "hypothyroidism", "predates"),
    ("Psoriatic dermatitis since 2015, stable.", "dermatitis", "predates"),
])
def test_classify(sentence, term, expected):
    assert _verdict(sentence, term) == expected


def test_negation_does_not_cross_a_clause_boundary():
    s = "No diarrhea at baseline; now grade 2 immune-mediated colitis on pembrolizumab."
    assert _verdict(s, "colitis") == "affirmed"


def test_viral_hepatitis_is_not_an_irae_term():
    hepatic = [p for o, g, t, p in TERMS if t == "hepatitis"][0]
    assert not hepatic.search("Child-Pugh A cirrhosis from hepatitis C, cured.")
    assert not hepatic.search("Viral hepatitis serologies negative.")
    assert hepatic.search("Immune-mediated hepatitis on nivolumab.")


@pytest.mark.parametrize(("group", "text", "grade"), [
    ("colitis", "3 loose stools per day over baseline", 1),
    ("colitis", "increase of 5 stools per day over baseline", 2),
    ("colitis", "12 watery stools per day over a baseline of 2", 3),
    ("hepatitis", "ALT 2.5 x ULN", 1),
    ("hepatitis", "AST 4.1 x ULN, ALT 3.5 x ULN", 2),
    ("hepatitis", "ALT 12 x ULN", 3),
    ("hepatitis", "ALT 25 x ULN", 4),
    ("dermatitis", "rash over 5% BSA", 1),
    ("dermatitis", "rash covering 40% of body surface area", 3),
    ("nephritis", "creatinine 3.5 x baseline", 3),
    ("pneumonitis", "asymptomatic, radiographic findings only", 1),
    ("pneumonitis", "dyspnea limiting self-care, oxygen indicated", 3),
    ("myocarditis", "symptoms at rest", 3),
    ("thyroid", "symptomatic, thyroid replacement indicated", 2),
    ("thyroid", "asymptomatic TSH elevation", 1),
    ("pneumonitis", "life-threatening respiratory compromise", 4),
    ("colitis", "colitis noted", None),
])
def test_ctcae_rule_grades(group, text, grade):
    organ = next(o for o, g, _t, _p in TERMS if g == group)
    assert rule_grade(organ, group, text) == grade


def _chunk(text: str) -> Chunk:
    return Chunk(id="d:1:0", document_id="d", version="1", section=None, start=0, end=len(text), text=text)


def test_therapy_start_prefers_the_stated_start_over_a_plan():
    notes = [("2026-01-02", _chunk(""), "Plan: start nivolumab on 2026-01-10."),
             ("2026-01-12", _chunk(""), "Started nivolumab on 2026-01-12 after a delay.")]
    assert therapy_start(notes) == ("2026-01-12", True)


def test_therapy_start_falls_back_to_the_first_cycle_given_and_ignores_not_started():
    notes = [("2025-12-01", _chunk(""),
              "Immunotherapy has not been started; cycle 1 pembrolizumab administered later."),
             ("2026-02-03", _chunk(""), "Cycle 1 pembrolizumab administered without reaction.")]
    assert therapy_start(notes) == ("2026-02-03", True)
    assert therapy_start([("2026-01-01", _chunk(""), "FOLFIRI cycle 3 given.")]) == (None, False)


def test_copied_forward_span_ends_at_the_next_header():
    text = "HPI: well.\nPrior Assessment (copied forward from 2026-01-01): grade 2 colitis.\nPlan: continue."
    (start, end), = _copied_spans(text)
    assert "grade 2 colitis" in text[start:end] and "Plan" not in text[start:end]


def test_glued_headers_split_sentences():
    text = "Pneumonitis considered and ruled outPlan: - Proceed with nivolumab today."
    assert [text[a:b] for a, b in _pieces(text)][0] == "Pneumonitis considered and ruled out"
