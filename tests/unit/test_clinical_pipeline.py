"""The shared medspaCy pipeline: sections, sentences, targets with ConText, and no note text in logs."""

from __future__ import annotations

import logging

import pytest

from app.agent.clinical import pipeline

CANARY = "Zyxwend Canarywhistle"


def _mods(doc, label="IRAE"):
    return {e.text.lower(): {m.category for m in e._.modifiers} for e in doc.ents if e.label_ == label}


def test_sections_are_normalised_with_offsets():
    text = ("CHIEF COMPLAINT: loose stools\n"
            "History of Present Illness:\nSeen for follow-up after two doses.\n"
            "ROS: negative for cough.\n"
            "# Allergies\nSulfa (hives)\n"
            "Assessment & Plan: improving.\n"
            "Family hx: aunt with lupus.\n")
    secs = pipeline.sections(text)
    cats = [s.category for s in secs]
    assert cats == ["chief_complaint", "hpi", "ros", "allergies", "assessment_and_plan", "family_history"]
    allergy = secs[3]
    assert text[allergy.start:allergy.end].startswith("# Allergies")
    assert "Sulfa (hives)" in text[allergy.body_start:allergy.end]
    assert allergy.title == "Allergies"
    assert pipeline.section_at(secs, text.index("Sulfa")) == allergy
    assert all(a.end <= b.start for a, b in zip(secs, secs[1:], strict=False))


def test_text_before_any_header_is_an_uncategorised_section():
    text = "Portal message from patient.\nPlan: call back tomorrow."
    secs = pipeline.sections(text)
    assert secs[0].category is None and secs[0].start == 0
    assert secs[1].category == "plan"
    assert pipeline.sections("   ") == []


def test_sentences_split_on_punctuation_and_new_lines_not_wrapped_lines():
    text = "Feels well today. Appetite fair\nand weight stable.\nMeds reviewed"
    spans = [text[a:b] for a, b in pipeline.sentences(text)]
    assert spans == ["Feels well today.", "Appetite fair\nand weight stable.", "Meds reviewed"]


@pytest.mark.parametrize("sentence, term, expected", [
    ("She denies any rash or itching.", "rash", "NEGATED_EXISTENCE"),
    ("Pneumonitis has been ruled out.", "pneumonitis", "NEGATED_EXISTENCE"),
    ("Concern for early hepatitis, repeat LFTs Friday.", "hepatitis", "POSSIBLE_EXISTENCE"),
    ("Reviewed the risk of colitis with infusions.", "colitis", "HYPOTHETICAL"),
    ("Her brother has hypothyroidism.", "hypothyroidism", "FAMILY"),
    ("Thyroiditis, likely immune-related.", "thyroiditis", "IMMUNE_ATTRIBUTION"),
    ("Nephritis attributed to cemiplimab.", "nephritis", "ICI_MENTION"),
    ("Colitis from C. diff, toxin positive.", "colitis", "OTHER_CAUSE"),
])
def test_context_modifiers(sentence, term, expected):
    assert expected in _mods(pipeline.process(sentence))[term]


def test_terminator_limits_negation():
    mods = _mods(pipeline.process("No cough but new myocarditis on MRI."))
    assert "NEGATED_EXISTENCE" not in mods["myocarditis"]


def test_exposure_cues_on_checkpoint_inhibitor_mentions():
    doc = pipeline.process("Tislelizumab was declined by the patient. Received dose 3 of Opdualag.")
    mods = _mods(doc, "ICI")
    assert "NOT_GIVEN" in mods["tislelizumab"] and "GIVEN" in mods["opdualag"]


def test_rule_files_reject_unquoted_yaml_booleans():
    with pytest.raises(ValueError, match="quote it"):
        pipeline._phrases(["fine", True], "test")


def test_nlp_is_built_once():
    assert pipeline.get_nlp() is pipeline.get_nlp()
    assert "sentencizer" in pipeline.get_nlp().pipe_names
    assert "medspacy_pyrush" not in pipeline.get_nlp().pipe_names


def test_no_note_text_in_logs_at_any_level(caplog, capfd):
    note = (f"Patient: {CANARY}\nHPI: {CANARY} reports diarrhea after pembrolizumab.\n"
            f"Assessment: immune-mediated colitis grade 2 in {CANARY}.")
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG):
            for name in ("medspacy", "PyRuSH", "PyFastNER", "spacy"):
                logging.getLogger(name).setLevel(logging.DEBUG)  # even if someone turns them up
            pipeline.quiet_third_party_logs()
            pipeline.process(note)
            pipeline.sections(note + " ")
            pipeline.sentences(note)
            from PyRuSH import RuSH  # the splitter we do not use must stay silent too

            assert RuSH is not None
    finally:
        root.setLevel(old)
    out, err = capfd.readouterr()
    assert CANARY not in caplog.text
    assert CANARY not in out and CANARY not in err
    assert all(CANARY not in r.getMessage() for r in caplog.records)
