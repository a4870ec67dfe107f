"""Chart questions: the rules added after error analysis on unseen clinicians' wording (issue 10,
item 4): person words, statements before the question, safety questions, soft terms, one-way
"also finds", code spellings, typo correction, trigger patterns, the tests topic, the visit before
its reason, lay words. The notes are written for these tests (a paediatric clinic note, a
telegraphic follow-up, a telephone note, a women's-health visit); no sentence comes from a corpus
or a generator's templates.
"""

from __future__ import annotations

import pytest

from app.agent.clinical.question import NoteSet, _typos_fixed, parse_question
from tests.unit.test_clinical_question_fixtures import CountingTools, ask, chart

CLINIC = ("c-2024", "2024-03-02T09:15:00+00:00",
          "Reason for visit: sore ear and fever for two days\n\n"
          "Allergies:\nNSAIDs (hives)\n\n"
          "Current medications:\ncetirizine 5 mg nightly\n\n"
          "Vital Signs:\nWeight 31.4 kg\nResp 22\nPulse 104\nBP 102/64\n\n"
          "Assessment:\nLeft acute otitis media. Impaired fasting glucose on last labs, recheck in 6 months.\n"
          "History of a greenstick fracture of the right radius at age 6.\n\n"
          "Plan:\nAmoxicillin 45 mg/kg/day for 10 days.\nTests done today:\n- rapid strep antigen\n- tympanometry\n")
FOLLOW = ("c-2025", "2025-08-19T14:00:00+00:00",
          "Reason for visit: follow-up of ear, no complaints today\n\n"
          "Allergies:\nNSAIDs (hives)\n\n"
          "Current medications:\ncetirizine 5 mg nightly; Sprintec 1 tab daily\n\n"
          "Vital Signs:\nWeight 33.0 kg\nPulse 88\n\n"
          "Assessment:\nEar exam normal, effusion resolved. Well visit otherwise.\n\n"
          "Plan:\nPHQ9 administered: score 3. GAD 7 score 2.\n"
          "Dental prophylaxis done by hygienist last week; gingivitis noted on the lower incisors.\n")
PHONE = ("c-2026", "2026-01-05T10:30:00+00:00",
         "Telephone note: mother called, child doing well. Lives near the fire station.\n\n"
         "Vital Signs:\nnot obtained, telephone encounter\n")


@pytest.fixture(scope="module")
def kid():
    return chart([CLINIC, FOLLOW, PHONE])


# -- words for the person asked about are no search terms (topics.yaml person_words) ----------

@pytest.mark.parametrize("question", ["Any drug allergies for this kid?", "Is the young lady allergic to anything?",
                                      "Allergies for this gentleman?"])
def test_person_words_are_no_search_terms(kid, question):
    draft, cited = ask(kid, question)
    assert cited == {"c-2025"} and "nsaids" in draft.text.lower()


def test_person_words_leave_the_content_words():
    assert [g.word for g in parse_question("Has the toddler had a fracture?").groups] == ["fracture"]


# -- wordings a phrase list cannot hold (topics.yaml trigger_patterns, recency, "set") -------------

@pytest.mark.parametrize("question", ["What is she currently taking?", "what's the child taking right now?",
                                      "What was she on at her last appointment?"])
def test_what_is_she_taking_with_words_between_is_the_medication_list(kid, question):
    draft, cited = ask(kid, question)
    assert cited == {"c-2025"} and "sprintec" in draft.text.lower()


def test_final_is_a_recency_word_and_set_is_no_term(kid):
    draft, cited = ask(kid, "Final recorded weight?")
    assert cited == {"c-2025"} and "33.0 kg" in draft.text
    draft, cited = ask(kid, "Pulse at the last set of vitals?")
    assert cited == {"c-2025"} and "88" in draft.text


def test_resp_rate_shorthand_is_the_respiratory_rate(kid):
    draft, cited = ask(kid, "What was her resp rate the last time it was checked?")
    assert cited == {"c-2024"} and "22" in draft.text  # the newer notes have no respiratory rate


# -- a statement before the question is context (topics.yaml context_lead) ---------------------

def test_a_statement_before_the_question_does_not_pick_the_topic(kid):
    parsed = parse_question("She's penicillin-allergic - is cetirizine on her current list?")
    assert parsed.topic.name == "medications" and [g.word for g in parsed.groups] == ["cetirizine"]
    draft, cited = ask(kid, "Given her NSAID allergy, is cetirizine on her med list?")
    assert cited == {"c-2025"} and "cetirizine" in draft.text.lower() and "hives" not in draft.text.lower()


def test_a_question_pointing_back_to_the_statement_keeps_it():
    parsed = parse_question("She has reflux - is she on anything for it?")
    assert parsed.topic.name == "medications"
    assert any(g.word == "reflux" for g in parsed.groups)  # "it" is the reflux: kept


def test_a_statement_with_nothing_asked_after_it_is_the_question():
    assert parse_question("He's had a colonoscopy - when?").groups  # nothing left to ask: keep all


def test_a_statement_with_a_tag_is_the_question():
    parsed = parse_question("She is on cetirizine, right?")
    assert [g.word for g in parsed.groups] == ["cetirizine"] and parsed.topic.name == "medications"


# -- safety of a drug is the allergy list (topics.yaml safety) ----------------------------------

def test_ok_to_give_a_drug_of_an_allergic_class_cites_the_allergy(kid):
    draft, cited = ask(kid, "Is it ok to give her ibuprofen?")
    assert cited == {"c-2025"} and "nsaids" in draft.text.lower() and "allerg" in draft.text.lower()


def test_safe_to_prescribe_a_drug_not_in_the_allergy_list_gives_the_list(kid):
    draft, cited = ask(kid, "Safe to prescribe codeine for her?")
    assert cited == {"c-2025"} and "nsaids (hives)" in draft.text.lower()


def test_a_safety_cue_without_a_drug_is_no_safety_question():
    assert not parse_question("Can she have visitors?").safety
    assert parse_question("Can he take naproxen?").safety


# -- soft terms are dropped only when nothing answers with them (topics.yaml soft_terms) ---------

def test_screened_for_with_an_instrument_code_in_another_spelling(kid):
    draft, cited = ask(kid, "When was she last screened for depression (PHQ-9)?")
    assert cited == {"c-2025"} and "phq9" in draft.text.lower()
    draft, cited = ask(kid, "Last GAD-7 score?")
    assert cited == {"c-2025"} and "gad 7" in draft.text.lower()


def test_a_soft_term_is_not_dropped_when_a_lone_term_would_remain(kid):
    from app.agent.clinical.question import _relaxed

    draft, cited = ask(kid, "Did she pass her vision screen?")  # "vision" is in no note
    assert not draft.answer_found and not cited
    assert _relaxed(parse_question("Was her hearing evaluated?")) is None  # "hearing" alone: not relaxed
    relaxed = _relaxed(parse_question("When was her BP screened?"))  # a topic remains
    assert relaxed is not None and relaxed.groups == ()


# -- a condition also finds its milder forms, one way (synonyms.yaml also_finds) -----------------

def test_diabetic_finds_impaired_fasting_glucose(kid):
    draft, cited = ask(kid, "Is she diabetic?")
    assert cited == {"c-2024"} and "impaired fasting glucose" in draft.text.lower()


def test_also_finds_is_one_way():
    group = parse_question("Does he have prediabetes?").groups[0]
    assert group.pattern.search("prediabetes") and not group.pattern.search("type 2 diabetes mellitus")
    assert parse_question("Does he have diabetes?").groups[0].pattern.search("prediabetes (finding)")


# -- codes in any spelling ----------------------------------------------------------------------

def test_a_code_matches_with_or_without_its_hyphen():
    pattern = parse_question("Any PHQ-9 on file?").groups[0].pattern
    assert pattern.search("phq9 score 4") and pattern.search("PHQ 9: 4") and pattern.search("phq-9")
    assert not pattern.search("phq-2") and not pattern.search("phq")


# -- typos, corrected only to vocabulary words the chart does not contradict ---------------------

def test_misspelt_vocabulary_words_are_corrected(kid):
    draft, cited = ask(kid, "Any alergies?")
    assert cited == {"c-2025"} and "nsaids" in draft.text.lower()
    draft, cited = ask(kid, "current medicaitons?")
    assert cited == {"c-2025"} and "sprintec" in draft.text.lower()


def test_a_word_the_chart_has_is_never_corrected(kid):
    notes = NoteSet(CountingTools([CLINIC, FOLLOW, PHONE]))
    assert _typos_fixed("Does she live near the fire station?", notes) == "Does she live near the fire station?"
    # "hypotension" is two edits from "hypertension": left alone, and honestly not found
    assert "hypotension" in _typos_fixed("Any hypotension?", notes)
    draft, _ = ask(kid, "Any hypotension?")
    assert not draft.answer_found


def test_a_retried_question_still_reads_once_and_searches_at_most_once():
    from app.agent.clinical.question import answer

    tools = CountingTools([CLINIC, FOLLOW, PHONE])
    answer(tools, "When was he screened for tympanic membrane mobility testing?")  # strict, then relaxed
    assert tools.calls[("read_notes", "")] == 1
    assert sum(n for (name, _), n in tools.calls.items() if name == "search") <= 1


# -- tests done, the visit and its reason ---------------------------------------------------------

def test_which_tests_were_done_at_a_visit(kid):
    draft, cited = ask(kid, "Which tests were done at her latest visit?")
    text = draft.text.lower()
    assert cited == {"c-2024"} and "rapid strep antigen" in text and "tympanometry" in text


def test_what_the_most_recent_visit_was_for_gives_reason_and_assessment(kid):
    parsed = parse_question("What was her most recent visit for?")
    assert parsed.topic.name == "last_visit"
    assert parse_question("What was the reason for the visit?").topic.name == "reason"
    assert parse_question("Blood pressure at the last visit?").topic.name == "blood_pressure"
    assert parse_question("Diagnosis at the last visit?").topic.name == "diagnosis"


# -- lay words reach the terms notes use (synonyms.yaml groups) -----------------------------------

@pytest.mark.parametrize(("question", "expected", "note"), [
    ("Has she ever had an ear infection?", "otitis media", "c-2024"),
    ("Any broken bones?", "fracture", "c-2024"),
    ("When was her last dental cleaning?", "prophylaxis", "c-2025"),
    ("Any gum problems?", "gingivitis", "c-2025"),
])
def test_lay_words_find_the_clinical_term(kid, question, expected, note):
    draft, cited = ask(kid, question)
    assert cited == {note} and expected in draft.text.lower()


def test_gum_disease_is_not_the_anatomy():
    group = parse_question("Any gum disease?").groups[0]
    assert group.pattern.search("gingivitis") and not group.pattern.search("examination of gingivae")


def test_a_contraceptive_brand_answers_birth_control(kid):
    draft, cited = ask(kid, "Is she on birth control?")
    assert cited == {"c-2025"} and "sprintec" in draft.text.lower() and "cetirizine" not in draft.text.lower()


@pytest.mark.parametrize("question", ["Is she on the pill?", "Any OCPs?", "On an oral contraceptive?",
                                      "What contraception is she using?"])
def test_other_names_of_the_contraceptive_class(kid, question):
    draft, cited = ask(kid, question)
    assert cited == {"c-2025"} and "sprintec" in draft.text.lower() and "cetirizine" not in draft.text.lower()


def test_last_in_clinic_is_the_visit_and_a_throat_swab_is_the_strep_test(kid):
    assert parse_question("When was she last in clinic?").topic.name == "last_visit"
    draft, cited = ask(kid, "Did she have a throat swab?")
    assert cited == {"c-2024"} and "rapid strep antigen" in draft.text.lower()


def test_a_typo_near_an_inflection_is_corrected_but_question_words_are_kept(kid):
    draft, cited = ask(kid, "Any allergys?")
    assert cited == {"c-2025"} and "nsaids" in draft.text.lower()
    notes = NoteSet(CountingTools([CLINIC, FOLLOW, PHONE]))
    assert _typos_fixed("Safe to prescribe codeine?", notes) == "Safe to prescribe codeine?"  # a safety cue


def test_a_correction_must_name_a_topic_or_a_word_of_the_chart():
    notes = NoteSet(CountingTools([CLINIC, FOLLOW, PHONE]))
    # "migrane" is one edit from "migraine", which is neither a one-word trigger nor in these notes
    assert _typos_fixed("Any migrane?", notes) == "Any migrane?"
    assert _typos_fixed("Any alergies?", notes) == "Any allergies?"  # a topic's trigger
    assert _typos_fixed("Any otitsi media?", notes) == "Any otitis media?"  # a swap, to a word the chart has


def test_a_drug_screen_is_a_test_not_the_medication_list_nor_another_screening(kid):
    parsed = parse_question("Has he had a drug screen?")
    assert [g.word for g in parsed.groups] == ["drug screen"]
    draft, cited = ask(kid, "Has he had a drug screen?")  # no note has one; "PHQ9 administered" is no answer
    assert not draft.answer_found and not cited
