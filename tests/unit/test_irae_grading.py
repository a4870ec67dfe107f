"""CTCAE v5 grading of the irAE screen (``grading.py``, ``rules/ctcae.yaml``), and the precision and
style rules added with it. Every sentence here was written for these tests; none comes from
eval_corpora/ or synthetic_data/.
"""

from __future__ import annotations

import pytest

from app.agent.clinical import grading, pipeline
from tests.unit.test_irae_traps import START, FakeTools, run


def grade(group: str, text: str, term: str = "x", prior: str = "") -> int | None:
    return grading.infer_grade(group, term, text, prior=prior)[0]


# ---- measured values, CTCAE v5 bands -------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("Up to 3 loose motions per day, usually 1.", 1),               # 2 over baseline
    ("Now 6 watery stools a day against a usual of 1.", 2),           # 5 over baseline
    ("Stool frequency 11/day (baseline 2).", 3),                      # 9 over baseline
    ("Diarrhoea 5 times a day, no baseline stated.", 2),
])
def test_stools_over_baseline(text, expected):
    assert grade("colitis", text, "diarrhea") == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("SGPT 95 (upper limit 40).", 1),          # 2.4 x ULN
    ("ALT 170 U/L, ULN 41.", 2),               # 4.1 x
    ("Transaminases: AST 7.5 x ULN.", 3),
    ("ALT rose from 35 to 1,050 (ULN 45).", 4),  # 23 x
    ("Total bilirubin 2.4 (ULN 1.2), ALT 60.", 2),  # bilirubin 2 x ULN decides
    ("T bili 5.0 mg/dL, ALT 50.", 3),          # bilirubin 4.2 x the default ULN 1.2 mg/dL
])
def test_liver_values_times_the_upper_limit(text, expected):
    assert grade("hepatitis", text) == expected


def test_a_value_x_uln_belongs_to_the_analyte_written_before_it():
    # "2 x ULN" is the alkaline phosphatase, not a transaminase
    assert grade("hepatitis", "ALP 2 x ULN; ALT 44.") == 1


def test_lab_tables_count_like_prose():
    single = "SERUM CREATININE (ref 0.6-1.2 mg/dL)\n2026-01-03  0.8\n2026-02-10  1.9 H\n2026-02-17  2.8 H\n"
    assert grade("nephritis", single) == 3  # 2.8 / 0.8 baseline = 3.5 x
    multi = ("Date        ALT   AST   ALP   Bili   (ALT 5-40, AST 5-35, Bili 0-20)\n"
             "2026-03-01  30    25    90    8\n2026-03-09  520 H 300 H 140   11\n")
    assert "ALT 30 -> 520 (ULN 40)" in grading.table_facts(multi)
    assert grade("hepatitis", multi) == 3  # 13 x ULN; the ALP column is not read as bilirubin


@pytest.mark.parametrize(("text", "prior", "expected"), [
    ("Creatinine 0.9 -> 1.6 -> 2.1 this week.", "", 2),      # 2.3 x the first value
    ("Cr now 3.0, was 0.7 last month.", "", 3),                # 4.3 x
    ("Creatinine 1.5 today.", "Creatinine 1.1 at the first visit.", 1),  # baseline from an earlier note
    ("Creatinine 2.4 (ULN 1.1).", "", 2),                      # 2.2 x ULN
])
def test_creatinine_against_baseline_or_uln(text, prior, expected):
    assert grade("nephritis", text, prior=prior) == expected


def test_skin_detachment_decides_sjs_and_the_word_ten_is_not_toxic_epidermal_necrolysis():
    sjs = "Stevens-Johnson syndrome: erythema over 45% BSA, epidermal detachment about 4% BSA, oral erosions."
    assert grading.infer_grade("dermatitis", "dermatitis", sjs) == (3, "skin detachment 4% BSA")
    overlap = "SJS with sloughing of 18% BSA."
    assert grade("dermatitis", overlap) == 4
    plain = "Pruritic maculopapular rash for ten days, about 20% BSA."
    assert grade("dermatitis", plain) == 2
    assert grade("dermatitis", "Evolving to TEN, detachment 35% BSA, burns unit.") == 4


# ---- facts count only when stated as facts ------------------------------------------------
@pytest.mark.parametrize(("group", "text", "expected"), [
    ("nephritis", "Creatinine 1.4, was 1.0. No dialysis indication at present.", 1),
    ("nephritis", "Started on haemodialysis for refractory hyperkalaemia.", 4),
    ("pneumonitis", "Saturating 96% on room air, no oxygen requirement. Started prednisone.", 2),
    ("pneumonitis", "Needing 3 L nasal cannula overnight.", 3),
    ("pneumonitis", "Would need oxygen if she worsens; currently symptomatic with cough.", 2),
    ("colitis", "Loose stools 3/day over baseline; if this worsens she will be admitted.", 1),
    ("colitis", "Sigmoid perforation on CT, taken for emergency laparotomy.", 4),
    ("diabetes", "New autoimmune diabetes; basal-bolus insulin started.", 3),
    ("thyroid", "Hypothyroid phase, started levothyroxine 75 mcg.", 2),
    ("pituitary", "Hypophysitis with headache, outpatient hydrocortisone, no adrenal crisis.", 2),
])
def test_stated_facts(group, text, expected):
    assert grade(group, text) == expected


def test_myositis_and_arthritis_stop_at_ctcae_grade_3():
    icu = "Myositis with CK 12,000; transferred to the ICU for monitoring; unable to get out of bed."
    assert grade("myositis", icu) == 3
    assert grade("arthritis", "Knee synovitis, admitted to the ICU with sepsis.") is None


def test_mild_arthritis_without_steroids_is_grade_1():
    text = "Mild synovitis of both wrists; ibuprofen, steroids not needed; working full time."
    assert grading.infer_grade("arthritis", "inflammatory arthritis", text) == (1, "mild")


def test_neurologic_self_care_limitation_is_grade_3():
    reason = grading.infer_grade("neuro", "x", "Needs assistance with dressing and toileting on the ward.")
    assert reason[0] == 3 and "self-care" in reason[1]


def test_rules_file_is_consistent():
    data = grading._criteria()
    assert data["groups"]["myositis"]["max"] == 3
    for spec in data["groups"].values():
        for tier in spec["tiers"]:
            for crit in tier:
                assert "fact" in crit or "measure" in crit


# ---- on the screen: grade reasons, the event window, explicit peaks -----------------------
def test_a_note_written_during_the_event_without_naming_it_grades_it():
    between = [START,
               ("2026-02-10", "Assessment: immune-mediated myasthenia gravis on pembrolizumab. Pyridostigmine, "
                              "prednisone 20 mg."),
               ("2026-02-12", "Home visit: ptosis worse, needs help with feeding and washing."),
               ("2026-02-20", "Myasthenia gravis improving on pyridostigmine.")]
    _r, events, _c, verified = run(between)
    ev = events["neurologic"]
    assert ev["ctcae_grade"] == 3 and ev["grade_basis"] == "inferred"
    assert "self-care" in ev["grade_reason"]
    assert "inferred from limiting self-care ADL" in verified[ev["sentence_indexes"][0]].text
    after_admission = [START,
                       ("2026-02-10", "Immune-related myasthenia gravis on pembrolizumab, admitted to neurology, "
                                      "IVIG started."),
                       ("2026-02-13", "Night team: worsening respiratory failure, intubated, moved to the ICU.")]
    ev = run(after_admission)[1]["neurologic"]
    assert ev["ctcae_grade"] == 4


def test_the_peak_explicit_grade_wins_when_it_changes():
    notes = [START,
             ("2026-02-02", "Immune-related hepatitis, grade 2, on pembrolizumab; prednisone started."),
             ("2026-02-09", "Immune-related hepatitis now grade 3 despite steroids; mycophenolate added."),
             ("2026-03-01", "Immune-related hepatitis improving, grade 1.")]
    _r, events, _c, _v = run(notes)
    assert events["hepatic"]["ctcae_grade"] == 3 and events["hepatic"]["grade_basis"] == "explicit"


def test_another_drugs_grade_in_the_same_sentence_is_not_the_events():
    notes = [START, ("2026-02-02", "Grade 2 neuropathy from oxaliplatin; separately immune-mediated colitis "
                                   "on pembrolizumab with 8 stools a day over baseline.")]
    _r, events, _c, _v = run(notes)
    assert events["gastrointestinal"]["ctcae_grade"] == 3
    assert events["gastrointestinal"]["grade_basis"] == "inferred"


# ---- precision: settled differentials, other causes, negated treatment ---------------------
def test_considered_and_excluded_rules_the_event_out():
    notes = [START,
             ("2026-02-02", "Chest pain, troponin up. Differential: ICI myocarditis versus ACS."),
             ("2026-02-03", "Angiogram: occluded circumflex, stented. Pembrolizumab myocarditis considered "
                            "and excluded on cardiac MRI.")]
    assert "cardiac" not in run(notes)[1]


def test_evidence_argued_against_rules_the_event_out():
    notes = [START, ("2026-02-02", "Creatinine up after contrast. Bland sediment and quick recovery argue "
                                   "against immune-related nephritis; contrast nephropathy.")]
    assert "renal" not in run(notes)[1]


def test_a_later_plan_to_reconsider_the_event_is_not_the_event():
    notes = [START,
             ("2026-02-02", "LFTs up two weeks after starting sunitinib: sunitinib hepatotoxicity, "
                            "sunitinib held. If LFTs keep rising off sunitinib we will\nreconsider "
                            "checkpoint inhibitor hepatitis.")]
    assert "hepatic" not in run(notes)[1]


def test_a_drug_named_liver_injury_is_that_drugs_toxicity():
    notes = [START, ("2026-02-02", "Cholestatic picture: flucloxacillin-related DILI per hepatology.")]
    assert "hepatic" not in run(notes)[1]


def test_no_steroids_is_neither_a_negated_event_nor_a_treatment():
    notes = [START,
             ("2026-02-02", "Diarrhoea 4/day over baseline on pembrolizumab, no steroids needed, loperamide."),
             ("2026-02-05", "Immune-related colitis confirmed on sigmoidoscopy; still managing without "
                            "steroids.")]
    _r, events, _c, _v = run(notes)
    assert events["gastrointestinal"]["ctcae_grade"] == 2
    assert "treated" not in events["gastrointestinal"]["grade_reason"]


def test_a_named_other_disease_in_a_differential_or_negated_decides_nothing():
    notes = [START,
             ("2026-02-02", "Ddx: HSV encephalitis vs pembrolizumab-related encephalitis."),
             ("2026-02-04", "CSF HSV PCR negative, no HSV encephalitis. Autoimmune encephalitis panel sent. "
                            "Assessment: immune-related encephalitis on pembrolizumab; IV methylprednisolone.")]
    assert "neurologic" in run(notes)[1]


def test_a_test_named_after_a_disease_is_not_the_disease():
    notes = [START, ("2026-02-02", "Hepatitis serologies and myositis antibody panel sent before the trial.")]
    assert run(notes)[1] == {}


def test_a_note_with_instructions_hidden_in_its_markup_is_never_cited():
    notes = [START, ("2026-02-02", "Immune-mediated colitis on pembrolizumab, budesonide started."),
             ("2026-02-03", "Immune-mediated colitis settling on budesonide.")]
    tools = FakeTools(notes)

    class Chart:
        hidden_injection = frozenset({"doc-02"})

    tools.chart = Chart()
    from app.agent.clinical.irae import screen

    result = screen(tools)
    cited = {q[0].split(":")[0] for s in result.sentences for q in s.evidence}
    assert "doc-02" not in cited and "doc-01" in cited


# ---- exposure -------------------------------------------------------------------------------
def test_first_cycle_today_is_an_administration():
    notes = [("2026-01-05", "Plan: atezolizumab 1200 mg q3w.\nFirst cycle today, no reaction."),
             ("2026-02-02", "Immune-mediated pneumonitis, prednisone 1 mg/kg.")]
    _r, events, _c, _v = run(notes)
    assert "pulmonary" in events and _r.findings["ici_start"] == "2026-01-05"


def test_an_event_attributed_to_the_agent_moves_the_first_dose_before_it():
    notes = [("2026-01-05", "Mesothelioma: nivolumab and ipilimumab chosen."),
             ("2026-03-02", "Probable ipilimumab-related hypophysitis; hydrocortisone started."),
             ("2026-04-06", "On nivo/ipi, cycle 4 given today.")]
    result, events, _c, _v = run(notes)
    assert "endocrine" in events
    assert result.findings["ici_start"] <= "2026-03-02"


# ---- style: wrapped lines, list items, dictation -------------------------------------------
def _sents(text: str) -> list[str]:
    return [text[a:b] for a, b in pipeline.sentences(text)]


def test_a_line_ending_mid_sentence_continues_on_a_capitalised_line():
    text = "Plan reviewed with the patient and her husband, and we agreed that if\nALT rises we stop."
    assert len(_sents(text)) == 1
    short = "Diarrhoea improving\nRash resolved"
    assert len(_sents(short)) == 2


def test_a_sentence_wrapped_over_two_list_items_is_one_sentence():
    text = "- Findings are not consistent with\n- immune-related pneumonitis.\n- no fever\n- rash on arms"
    assert _sents(text) == ["- Findings are not consistent with\n- immune-related pneumonitis.", "- no fever",
                            "- rash on arms"]


def test_parenthesis_continues_a_sentence_but_numbered_items_do_not():
    assert len(_sents("Risks explained: gut\n(colitis), liver (hepatitis).")) == 1
    assert len(_sents("Plan:\n(1) hold drug\n(2) steroids")) >= 3


def test_dictation_spoken_punctuation():
    text = ("assessment colon immune-related colitis on pembrolizumab, Stool studies were negative, "
            "Budesonide was started and she will be seen again in one week by the nurse practitioner at "
            "the infusion clinic with repeat bloods period plan colon continue budesonide period")
    sents = _sents(text)
    assert any(s.startswith("Stool studies") for s in sents)
    assert any(s.startswith("plan colon") for s in sents)
    secs = pipeline.sections(text)
    assert {s.category for s in secs} >= {"assessment", "plan"}
    assert len(_sents("Colitis, Grade 2, on budesonide.")) == 1


def test_a_repeated_context_literal_is_refused(tmp_path, monkeypatch):
    (tmp_path / "dup.yaml").write_text(
        "modifiers:\n  - {category: NEGATED_EXISTENCE, direction: FORWARD, literals: [vs]}\n"
        "  - {category: POSSIBLE_EXISTENCE, direction: BACKWARD, literals: [vs]}\n", encoding="utf-8")
    monkeypatch.setattr(pipeline, "RULES_DIR", tmp_path)
    with pytest.raises(ValueError, match="listed twice"):
        pipeline.context_rules("dup.yaml")


@pytest.mark.parametrize(("sentence", "term", "expected"), [
    ("Grade 3 serous carcinoma of the ovary, now immune-related colitis.", "colitis", None),
    ("Gleason grade 4 prostate primary; immune hepatitis on ipilimumab.", "hepatitis", None),
    ("Immune-related colitis with grade 1 fatigue.", "colitis", None),
    ("Immune pneumonitis, CTCAE grade 2 (cough limiting housework).", "pneumonitis", 2),
    ("Nephritis grade 3 requiring admission.", "Nephritis", 3),
    ("Grade 2 immune-mediated hepatitis.", "hepatitis", 2),
])
def test_an_explicit_grade_is_the_events_not_a_tumours_or_another_symptoms(sentence, term, expected):
    i = sentence.index(term)
    assert grading.tied_grade(sentence, i, i + len(term)) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Sats 87% on room air at rest, crackles at both bases.", 3),
    ("Comfortable on 2 L/min by nasal prongs.", 3),
    ("SpO2 96% on air; dry cough limiting her gardening.", None),
])
def test_pneumonitis_oxygen_from_saturation_or_flow(text, expected):
    assert grade("pneumonitis", text) == expected


def test_an_all_caps_list_wrapped_after_a_comma_stays_one_sentence():
    text = "RISKS DISCUSSED INCLUDING COLITIS, HEPATITIS,\nPNEUMONITIS AND MYOCARDITIS."
    assert len(_sents(text)) == 1


def test_a_named_other_disease_of_a_relative_is_not_an_alternative_cause():
    notes = [START,
             ("2026-02-02", "Immune-related hepatitis on pembrolizumab, ALT 300 (ULN 40); prednisone 1 mg/kg."),
             ("2026-02-20", "Hepatitis settling. We talked about his brother's hepatitis C, which is unrelated.")]
    assert "hepatic" in run(notes)[1]


def test_a_drug_known_only_by_its_stem_is_another_drugs_toxicity():
    notes = [START, ("2026-02-02", "Rising creatinine; lisinopril-associated kidney injury, ACE inhibitor stopped.")]
    assert "renal" not in run(notes)[1]


@pytest.mark.parametrize("text", [
    "Hypothyroidism after total thyroidectomy for a nodule; levothyroxine dose increased.",
    "Low cortisol after stopping a long prednisone course: adrenal insufficiency from HPA axis suppression.",
])
def test_endocrine_failure_with_a_structural_or_iatrogenic_cause_is_not_an_irae(text):
    assert run([START, ("2026-03-02", text)])[1] == {}


def test_a_grade_written_in_words():
    sentence = "Immune-mediated colitis, grade three, on infliximab."
    i = sentence.index("colitis")
    assert grading.tied_grade(sentence, i, i + len("colitis")) == 3


@pytest.mark.parametrize("text", [
    "Her partner is worried about immune-related colitis after reading online; bowels normal.",
    "He asked whether pneumonitis could happen with this drug. Chest clear.",
])
def test_worries_and_questions_about_an_irae_are_not_the_irae(text):
    assert run([START, ("2026-02-02", text)])[1] == {}


def test_a_later_note_documenting_worse_outranks_an_earlier_written_grade():
    notes = [START,
             ("2026-02-02", "Immune-mediated colitis, grade 2, 5 stools/day over baseline, budesonide."),
             ("2026-02-06", "Colitis worse: 9 stools/day over baseline, admitted for IV steroids.")]
    ev = run(notes)[1]["gastrointestinal"]
    assert ev["ctcae_grade"] == 3 and ev["grade_basis"] == "inferred"
    assert "after grade 2 was written" in ev["grade_reason"]


def test_an_unrelated_admission_after_an_outpatient_event_does_not_grade_it():
    notes = [START,
             ("2026-02-02", "Immune-related hypothyroidism on pembrolizumab, levothyroxine 50 mcg started."),
             ("2026-02-09", "ED: mechanical fall on ice, wrist fracture, admitted overnight for analgesia.")]
    ev = run(notes)[1]["endocrine"]
    assert ev["ctcae_grade"] == 2


@pytest.mark.parametrize(("text", "expected"), [
    ("Bowels open 6 times a day, usually once.", 2),      # 5 over baseline
    ("BO x9/day since Monday.", 3),
    ("Bristol type 6 stools 3 times daily, baseline twice.", 1),  # the Bristol type is not a count
])
def test_stool_counts_in_other_phrasings(text, expected):
    assert grade("colitis", text, "diarrhea") == expected
