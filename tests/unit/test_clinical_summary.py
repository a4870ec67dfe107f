"""The offline chart summary: slots from the newest notes, 12-month window, citations, bounds.

Notes written for these tests (not generator templates).
"""

from __future__ import annotations

from app.agent.backends.offline import OfflineBackend
from app.agent.clinical.question import NoteSet
from app.agent.clinical.summary import summarize
from app.agent.guard import Limits
from app.agent.runtime import run_task
from app.agent.tasks import TASKS
from tests.unit.test_clinical_question_fixtures import CountingTools, chart, condition

NOTES = [
    ("a-2023", "2023-05-10T09:00:00+00:00",
     "Reason for visit: chest pain\n\nHospital Course: admitted to telemetry overnight, troponin negative.\n\n"
     "Medications: aspirin 81 mg daily\n\nAllergies: none known\n\nVitals: BP 128/80, HR 70\n\n"
     "Labs: lipid panel LDL 162 mg/dL\n\nAssessment: atypical chest pain.\n"),
    ("b-2026-03", "2026-03-14T11:00:00+00:00",
     "Chief Complaint: wheeze and cough for a week\n\n"
     "Hospital Course: seen in the emergency department, nebulised twice, discharged home the same day.\n\n"
     "Medications: albuterol inhaler as needed; prednisone 40 mg for 5 days\n\n"
     "Allergies: latex (hives)\n\nVitals: BP 122/76, HR 96, SpO2 94%\n\n"
     "Labs: CBC with WBC 11.2\n\nAssessment: moderate asthma exacerbation.\n\n"
     "Plan: potassium chloride 20 mEq oral tablet daily while on the steroid burst.\n"),
    ("c-2026-09", "2026-09-30T15:00:00+00:00",
     "Chief Complaint: asthma follow-up\n\n"
     "Medications: albuterol inhaler as needed; budesonide-formoterol twice daily\n\n"
     "Allergies: latex (hives), amoxicillin (rash)\n\nVitals: deferred\n\n"
     "Labs: hemoglobin A1c 6.1 %\n\nAssessment: asthma, well controlled. Routine review otherwise.\n"),
]
CONDITIONS = [condition("Asthma (disorder)"), condition("Full-time employment (finding)"),
              condition("Atypical chest pain"), condition("Gout (disorder)", "resolved"),
              condition("Hyperlipidemia (disorder)")]


def _summary():
    return run_task(chart(NOTES, CONDITIONS), TASKS["summary"], OfflineBackend(),
                    limits=Limits(max_repeats=1, max_tool_calls=2))


def _lines(draft, word):
    return [s for s in draft.sentences if word in s.text]


def test_summary_completes_under_a_strict_repeat_guard_and_cites_what_it_says():
    draft = _summary()
    assert draft.status == "completed"
    supported = [s for s in draft.sentences if s.supported]
    # the only unsupported line is the coded problem no note mentions
    assert [s.text for s in draft.sentences if not s.supported] == [
        "Active problem (coded, active): Hyperlipidemia (disorder)."]
    assert len(supported) >= 8


def test_problems_skip_social_context_and_resolved_conditions():
    text = _summary().text
    assert "Asthma (disorder)" in text and "Atypical chest pain" in text
    assert "employment" not in text and "Gout" not in text


def test_current_medications_and_allergies_come_from_the_newest_note_that_lists_them():
    draft = _summary()
    (meds,) = _lines(draft, "Current medications")
    assert "budesonide-formoterol" in meds.text and "prednisone" not in meds.text
    assert {c.document for c in meds.citations} == {"c-2026-09"}
    (allergies,) = _lines(draft, "Allergies (newest list)")
    assert "amoxicillin" in allergies.text and {c.document for c in allergies.citations} == {"c-2026-09"}


def test_latest_vitals_skip_a_deferred_set():
    (vitals,) = _lines(_summary(), "Latest vital signs")
    assert "SpO2 94%" in vitals.text and {c.document for c in vitals.citations} == {"b-2026-03"}


def test_each_lab_test_from_its_newest_note():
    labs = _lines(_summary(), "Labs:")
    by_doc = {c.document: s.text for s in labs for c in s.citations}
    assert "A1c" in by_doc["c-2026-09"] and "WBC" in by_doc["b-2026-03"] and "LDL" in by_doc["a-2023"]


def test_lab_values_in_running_text_but_not_a_drug_with_its_strength():
    note = ("d1", "2026-06-01T09:00:00+00:00",
            "Subjective: tired.\n\nObjective: creatinine 1.4 today, up from 1.1.\n\n"
            "Plan: potassium chloride 20 mEq oral tablet daily.\n")
    labs = _lines(run_task(chart([note]), TASKS["summary"], OfflineBackend()), "Labs:")
    assert len(labs) == 1 and "creatinine 1.4" in labs[0].text and "potassium" not in labs[0].text


def test_events_are_the_last_twelve_months_of_the_chart_not_of_the_wall_clock():
    events = _lines(_summary(), "Event:")
    texts = " ".join(s.text for s in events)
    assert "emergency department" in texts
    assert "telemetry" not in texts  # 2023: more than a year before the newest note


def test_recent_assessments_leave_routine_lines_out():
    assessments = _lines(_summary(), "Assessment:")
    texts = [s.text for s in assessments]
    assert any("asthma exacerbation" in t for t in texts)
    assert not any("Routine review" in t for t in texts)


def test_summary_of_an_empty_chart_says_so():
    draft = run_task(chart([]), TASKS["summary"], OfflineBackend())
    assert draft.status == "completed" and not draft.sentences
    assert "no notes" in draft.text


def test_large_chart_is_read_once_and_old_notes_are_never_split(monkeypatch):
    # 3,000 visits over 8 years; every slot fills from the newest notes
    notes = [(f"n{i:05d}", f"{2000 + i // 400}-{1 + (i // 33) % 12:02d}-{1 + i % 28:02d}T08:00:00+00:00",
              f"Chief Complaint: visit {i}\n\nMedications: lisinopril 10 mg\n\nAllergies: none known\n\n"
              f"Vitals: BP 12{i % 10}/80\n\nLabs: basic metabolic panel sodium 13{i % 10}\n\n"
              "Assessment: hypertension.\n")
             for i in range(3000)]
    tools = CountingTools(notes, [condition("Essential hypertension (disorder)")])
    seen: list[NoteSet] = []

    def keep(t):  # type: ignore[no-untyped-def]
        seen.append(NoteSet(t))
        return seen[-1]

    monkeypatch.setattr("app.agent.clinical.summary.NoteSet", keep)
    result = summarize(tools)
    assert result.status == "completed" and result.sentences
    assert tools.calls == {("read_notes", ""): 1, ("conditions", ""): 1}
    split = sum(1 for n in seen[0].notes if n._lines is not None)
    assert 0 < split < 600, split  # the last 12 months at most, not the 3,000 notes


def test_without_any_medication_list_the_summary_says_which_drugs_the_notes_name():
    note = ("n1", "2026-05-05T09:00:00+00:00",
            "Seen for follow-up. Takes atorvastatin nightly and metoprolol in the morning; no side effects.\n"
            "Allergies: none known\n")
    draft = run_task(chart([note]), TASKS["summary"], OfflineBackend())
    (meds,) = _lines(draft, "Medications mentioned (no medication list found)")
    assert "atorvastatin" in meds.text and meds.supported
