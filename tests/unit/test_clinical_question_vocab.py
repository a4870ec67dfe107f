"""Chart questions, the rules added for questions clinicians type (issue 10, item 4).

Each rule has a test here on notes written for these tests (SOAP with abbreviations, a
telegraphic follow-up, a telephone note, a narrative consult); no sentence is taken from a corpus
or a generator's templates.
"""

from __future__ import annotations

import pytest

from app.agent.clinical.question import parse_question
from tests.unit.test_clinical_question_fixtures import ask, chart

ANNUAL = ("n-2023", "2023-05-10T08:40:00+00:00",
          "Subjective: here for her yearly physical. Works as a bus driver and lives with her wife.\n"
          "Denies illicit drug use. Two beers on weekends.\n\n"
          "PMH: GERD, prediabetes, hypertension\n\n"
          "PSH: laparoscopic cholecystectomy 2015; tonsillectomy as a child\n\n"
          "Medications:\nomeprazole 20 mg daily; lisinopril 20 mg daily; amlodipine 5 mg daily; "
          "sertraline 50 mg daily\n\n"
          "Immunizations:\nTdap given today.\nDeclined the influenza vaccine.\n\n"
          "Vital Signs:\nBP 142/88\nHR 78\nHeight 165 cm\nWeight 71 kg\n\n"
          "Assessment and Plan:\nHTN above goal, lisinopril increased. GERD stable on omeprazole.\n")
COUGH = ("n-2025", "2025-02-03T16:05:00+00:00",
         "Reason for visit: cough for five days\n\n"
         "Medications:\nomeprazole 20 mg daily; lisinopril 40 mg daily; amlodipine 5 mg daily; sertraline 50 mg daily; "
         "azithromycin 250 mg for five days\n\n"
         "Vital Signs:\nBP 131/79\nHR 84\nWeight 70.2 kg\n\n"
         "Social History:\nUnemployed since January. Staying with her sister after an eviction.\n\n"
         "Assessment:\nAcute bronchitis, no pneumonia on exam.\n")
PHONE = ("n-2026", "2026-06-20T11:00:00+00:00",
         "Reason for visit: refill request by telephone\n\n"
         "Vital Signs:\nnot obtained, telephone encounter\n\n"
         "Plan:\nOmeprazole refilled for 90 days.\n")


@pytest.fixture(scope="module")
def visits():
    return chart([ANNUAL, COUGH, PHONE])


# -- a condition names the drugs that treat it (synonyms.yaml condition_drugs) -----------------

def test_on_anything_for_a_condition_reads_the_newest_medication_list_for_its_drugs(visits):
    draft, cited = ask(visits, "Is she on anything for her reflux?")
    assert cited == {"n-2025"} and "omeprazole" in draft.text.lower()
    assert "lisinopril" not in draft.text.lower() and "sertraline" not in draft.text.lower()


def test_condition_then_meds_shorthand(visits):
    draft, cited = ask(visits, "BP meds?")
    text = draft.text.lower()
    assert cited == {"n-2025"} and "lisinopril 40 mg" in text and "amlodipine" in text
    assert "omeprazole" not in text and "142/88" not in text  # drugs, not the readings


def test_condition_with_no_drug_in_the_chart_is_not_found(visits):
    draft, cited = ask(visits, "What is she taking for seizures?")
    assert not draft.answer_found and not cited


def test_a_plan_for_a_condition_is_not_a_drug_question():
    assert parse_question("What is the plan for his hypertension?").topic.name != "medications"
    assert parse_question("What does he take for his mood?").topic.name == "medications"


# -- vaccines (synonyms.yaml vaccines, vaccine_names, vaccine_cues) ---------------------------

def test_up_to_date_on_tetanus_finds_the_older_note_with_tdap(visits):
    draft, cited = ask(visits, "Is she up to date on tetanus?")
    assert cited == {"n-2023"} and "tdap" in draft.text.lower()


def test_flu_shot_finds_influenza_even_when_declined(visits):
    draft, cited = ask(visits, "last flu shot?")
    assert cited == {"n-2023"} and "influenza" in draft.text.lower()


def test_a_disease_alone_is_not_a_vaccine_question():
    assert parse_question("Has she had shingles?").topic is None
    assert parse_question("Is he due for shingles?").topic.name == "immunizations"
    assert parse_question("Tdap?").topic.name == "immunizations"


def test_a_vaccine_the_chart_never_names_is_not_found(visits):
    draft, cited = ask(visits, "Has she had the hepatitis A vaccine?")
    assert not draft.answer_found and not cited


# -- social history topics -------------------------------------------------------------------

def test_drug_use_is_substance_use_not_the_medication_list(visits):
    draft, cited = ask(visits, "Does she use drugs?")
    assert cited == {"n-2023"} and "illicit" in draft.text.lower() and "omeprazole" not in draft.text.lower()


def test_work_and_housing_from_the_newest_note_that_states_them(visits):
    draft, cited = ask(visits, "What does she do for work?")
    assert cited == {"n-2025"} and "unemployed" in draft.text.lower()
    draft, cited = ask(visits, "Living situation?")
    assert cited == {"n-2025"} and "sister" in draft.text.lower()


def test_screening_procedures_are_not_substance_use():
    c = chart([("s-1", "2024-01-01T09:00:00+00:00",
                "Plan:\nScreening for drug abuse performed, negative.\nBrief counselling given.\n")])
    draft, cited = ask(c, "Any substance use?")
    assert not draft.answer_found and not cited


# -- surgery -------------------------------------------------------------------------------

def test_surgical_history_and_an_organ_taken_out(visits):
    draft, cited = ask(visits, "any surgeries?")
    assert cited == {"n-2023"} and "cholecystectomy" in draft.text.lower() and "tonsillectomy" in draft.text.lower()
    draft, cited = ask(visits, "Has she had her gallbladder out?")
    assert cited == {"n-2023"} and "cholecystectomy" in draft.text.lower()


# -- the last visit, recency wording ---------------------------------------------------------

def test_when_last_seen_is_the_newest_note(visits):
    draft, cited = ask(visits, "When was she last seen?")
    assert cited == {"n-2026"} and "2026-06-20" in draft.text and "refill" in draft.text.lower()


def test_a_reading_as_of_the_last_visit_is_the_newest_note_that_has_it(visits):
    draft, cited = ask(visits, "As of the last visit, what was her blood pressure?")
    assert cited == {"n-2025"} and "131/79" in draft.text


def test_done_at_the_last_visit_is_no_search_term():
    assert [g.word for g in parse_question("What procedures were done at the last visit?").groups] == []


# -- trend -----------------------------------------------------------------------------------

def test_a_trend_cites_the_newest_notes_that_answer_newest_first(visits):
    draft, cited = ask(visits, "BP trend")
    assert cited == {"n-2025", "n-2023"}
    assert draft.text.index("131/79") < draft.text.index("142/88")
    assert len(draft.sentences) == 2 and all(s.supported for s in draft.sentences)


# -- phrases, adjectives, several vitals at once ---------------------------------------------

def test_vocabulary_phrases_survive_filler_words():
    words = [g.word for g in parse_question("Is he on a calcium channel blocker?").groups]
    assert words == ["calcium channel blocker"]
    assert "hepatitis a" in [g.word for g in parse_question("hepatitis A vaccination given?").groups]


def test_calcium_channel_blocker_finds_the_agent(visits):
    draft, cited = ask(visits, "Is she on a calcium channel blocker?")
    assert cited == {"n-2025"} and "amlodipine" in draft.text.lower() and "lisinopril" not in draft.text.lower()


def test_an_adjective_finds_its_noun(visits):
    draft, cited = ask(visits, "Is she prediabetic?")
    assert cited == {"n-2023"} and "prediabetes" in draft.text.lower()


def test_height_and_weight_each_from_their_newest_note(visits):
    draft, cited = ask(visits, "height and weight?")
    assert cited == {"n-2023", "n-2025"}
    assert "165 cm" in draft.text and "70.2 kg" in draft.text and "71 kg" not in draft.text


# -- long run-on lines -----------------------------------------------------------------------

def test_a_long_list_line_is_quoted_by_its_matching_item():
    consult = ("c-1", "2025-09-09T10:00:00+00:00",
               "History of Present Illness:\n58 year old retired machinist with COPD, CKD stage 3, osteoarthritis "
               "of both knees, alcohol use disorder in sustained remission since 2009, a left inguinal hernia "
               "repair in 2001, and hearing loss for which he wears aids.\n")
    c = chart([consult])
    draft, cited = ask(c, "Is he still working?")
    assert cited == {"c-1"} and "retired machinist" in draft.text and "hearing" not in draft.text
    draft, _ = ask(c, "Has he had hernia surgery?")
    assert "inguinal hernia repair" in draft.text and "COPD" not in draft.text


# -- wording of the usual questions ----------------------------------------------------------

def test_a_trigger_inside_a_longer_vocabulary_phrase_is_that_phrase():
    # "blood pressure" inside "high blood pressure" (hypertension) is no blood-pressure reading question
    parsed = parse_question("Does he have high blood pressure?")
    assert parsed.topic is None and [g.word for g in parsed.groups] == ["high blood pressure"]
    assert parsed.groups[0].pattern.search("Hypertension, well controlled")


def test_high_blood_pressure_finds_hypertension_not_a_reading(visits):
    draft, cited = ask(visits, "Does she have high blood pressure?")
    assert draft.answer_found and "hypertension" in draft.text.lower() and "142/88" not in draft.text


def test_words_qualifying_a_reading_are_not_search_terms(visits):
    draft, cited = ask(visits, "Was her BP high?")
    assert cited == {"n-2025"} and "131/79" in draft.text
    draft, cited = ask(visits, "How heavy is she?")
    assert cited == {"n-2025"} and "70.2" in draft.text


def test_reactions_to_medications_is_the_allergy_list():
    c = chart([("a-1", "2024-04-04T09:00:00+00:00",
                "Allergies: latex (contact dermatitis); morphine - itching\n\n"
                "Medications: levothyroxine 75 mcg daily\n")])
    draft, cited = ask(c, "Reactions to any medications?")
    assert cited == {"a-1"} and "morphine" in draft.text and "levothyroxine" not in draft.text


def test_taking_anything_is_the_medication_list(visits):
    draft, cited = ask(visits, "Is she taking anything regularly?")
    assert cited == {"n-2025"} and "sertraline" in draft.text


def test_problem_list_and_suffer_are_no_search_terms(visits):
    draft, cited = ask(visits, "Is GERD on her problem list?")
    assert "n-2023" in cited and "GERD" in draft.text
    assert [g.word for g in parse_question("Does he suffer from gout?").groups] == ["gout"]


def test_a_diagnosis_asked_by_name_is_the_newest_note_naming_it_in_any_section():
    c = chart([("d-1", "2019-01-15T09:00:00+00:00", "Assessment:\nMild persistent asthma, new diagnosis.\n"),
               ("d-2", "2025-07-01T09:00:00+00:00",
                "HPI:\nKnown asthma, uses albuterol about twice a month.\n\nAssessment:\nAnkle sprain.\n"),
               ("d-3", "2026-02-01T09:00:00+00:00", "Family History:\nBrother with asthma.\n\nAssessment:\nWart.\n")])
    draft, cited = ask(c, "Has she been diagnosed with asthma?")
    assert cited == {"d-2"} and "albuterol" in draft.text  # not the 2019 assessment, not the brother
    draft, cited = ask(c, "What was the diagnosis?")
    assert cited == {"d-3"} and "Wart" in draft.text


def test_lab_panel_abbreviations_and_chat_words(visits):
    c = chart([("l-1", "2025-11-02T09:00:00+00:00",
                "Labs:\nBasic metabolic panel and lipid profile sent today.\n")])
    draft, cited = ask(c, "When was her BMP last drawn?")
    assert cited == {"l-1"} and "2025-11-02" in draft.text
    for question in ("What did her last blood pressure read?", "How was her BP at the last check-up?"):
        draft, cited = ask(visits, question)
        assert cited == {"n-2025"} and "131/79" in draft.text
    draft, cited = ask(visits, "What is she allergic to, if anything?")
    assert not draft.answer_found  # no allergy section in these notes: not a guess


def test_spacy_stop_words_are_filler_except_the_meaningful_ones():
    from spacy.lang.en.stop_words import STOP_WORDS

    from app.agent.clinical.question import _spacy_stop_words

    assert set(_spacy_stop_words()) == {w for w in STOP_WORDS if w.isalpha()}  # read without importing spaCy
    assert [g.word for g in parse_question("Is she really still on amlodipine, though?").groups] == ["amlodipine"]
    words = [g.word for g in parse_question("Any back pain without fever?").groups]
    assert "back pain" in words and "without" in words  # "back" is kept (here as part of a synonym phrase)


def test_typed_shorthand_without_apostrophes_and_chat(visits):
    draft, cited = ask(visits, "whats she on right now")
    assert cited == {"n-2025"} and "azithromycin" in draft.text
    draft, cited = ask(visits, "what was her bp at the last physical")
    assert cited == {"n-2025"} and "131/79" in draft.text
    draft, cited = ask(visits, "why was she here last")
    assert cited == {"n-2026"} and "refill" in draft.text.lower()


def test_treated_for_a_condition_leaves_no_stray_term(visits):
    parsed = parse_question("Is she being treated for hypertension?")
    assert parsed.topic.name == "medications" and [g.word for g in parsed.groups] == ["hypertension"]
    draft, cited = ask(visits, "Is she being treated for hypertension?")
    assert cited == {"n-2025"} and "lisinopril 40 mg" in draft.text and "omeprazole" not in draft.text


def test_the_example_after_like_is_what_is_asked():
    assert [g.word for g in parse_question("Any stomach trouble like reflux?").groups] == ["reflux"]
    assert [g.word for g in parse_question("Any lung disease such as asthma?").groups] == ["asthma"]


def test_lay_words_and_qualifiers_reach_the_chart_term():
    c = chart([("q-1", "2024-03-03T09:00:00+00:00",
                "Problem list:\nIron deficiency anemia\nRecurrent cystitis\n\n"
                "Vital Signs:\nBMI 29.4\n\nProcedures:\nColonoscopy 2019, two polyps removed\n")])
    for question, want in (("Is she anemic?", "anemia"), ("Any bladder infections?", "cystitis"),
                           ("Is her BMI in the overweight range?", "29.4"), ("Any prior colonoscopy?", "polyps")):
        draft, cited = ask(c, question)
        assert cited == {"q-1"} and want in draft.text, question


def test_replacement_therapy_is_no_surgery_and_discussed_is_no_term(visits):
    c = chart([("h-1", "2024-06-01T09:00:00+00:00",
                "Medications:\nestradiol patch, hormone replacement therapy since 2019\n\n"
                "Assessment:\nMenopausal symptoms controlled.\n")])
    draft, cited = ask(c, "Any surgeries?")
    assert not draft.answer_found and not cited
    draft, cited = ask(visits, "What was discussed at the last visit?")
    assert cited == {"n-2026"} and "refill" in draft.text.lower()
