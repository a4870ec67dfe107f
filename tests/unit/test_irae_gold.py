"""The offline irAE screen on the gold labels of synthetic_data (docs/agent.md has the figures).

Every oncology patient's permitted chart is built from its bundle through the real
pipeline pieces (tests/unit/test_agent_fixtures.py) and screened through
``runtime.run_task`` with the offline backend, so citations are verified as in production.
Floors: precision and recall ≥ 0.85 per patient (irae_detected) and per event
(patient + organ); CTCAE grade agreement on matched events is reported and held at ≥ 0.85.

These notes come from a template generator, so they no longer define quality (issue 10): the
engine is developed on eval_corpora/irae/dev and never tuned on this set; the test keeps it from
regressing on the app's other fixtures. Quality figures: docs/agent.md, "Evaluation".
"""

from __future__ import annotations

import pytest

from app.agent.backends.offline import OfflineBackend
from app.agent.runtime import run_task
from app.agent.tasks import TASKS
from app.monitoring.evaluation import irae_figures
from tests.unit.test_agent_fixtures import bundle_chart, gold

FLOOR = 0.85


@pytest.fixture(scope="module")
def drafts():
    return {g["patient"]: run_task(bundle_chart(g["patient"]), TASKS["irae"], OfflineBackend()) for g in gold()}


@pytest.fixture(scope="module")
def figures(drafts):
    out = irae_figures(gold(), {p: d.contract(None) for p, d in drafts.items()})
    print("\nirAE gold figures:", out)
    return out


def test_gold_set_is_the_documented_one():
    labels = gold()
    assert len(labels) == 14
    assert sum(len(g["events"]) for g in labels) == 11
    assert sum(1 for g in labels if not g["irae_detected"]) == 6


def test_patient_level_precision_and_recall_meet_the_floor(figures):
    assert figures["patient_precision"] >= FLOOR, figures
    assert figures["patient_recall"] >= FLOOR, figures


def test_event_level_precision_and_recall_meet_the_floor(figures):
    assert figures["event_precision"] >= FLOOR, figures
    assert figures["event_recall"] >= FLOOR, figures


def test_grade_agreement_meets_the_floor(figures):
    assert figures["grade_agreement"] >= FLOOR, figures


def test_every_reported_event_cites_verified_text(drafts):
    for patient, draft in drafts.items():
        contract = draft.contract(None)
        assert draft.status == "completed", patient
        for event in contract["findings"]["events"]:
            assert event["citations"], (patient, event["organ"])
        for sentence in contract["draft"]["sentences"]:
            assert sentence["supported"], (patient, sentence["text"][:60])


def test_distractors_are_reported_as_exclusions_not_events(drafts):
    for g in gold():
        if not g["distractors"]:
            continue
        findings = drafts[g["patient"]].findings
        excluded_docs = {
            c.document for x in findings["excluded"] for i in x["sentence_indexes"]
            for c in drafts[g["patient"]].sentences[i].citations}
        for distractor in g["distractors"]:
            assert set(distractor["documents"]) & excluded_docs, (g["patient"], distractor["kind"])


def test_contract_events_say_how_their_grade_was_reached(drafts):
    graded = 0
    for patient, draft in drafts.items():
        for event in draft.contract(None)["findings"]["events"]:
            assert {"grade_basis", "grade_reason"} <= set(event), patient
            if event["ctcae_grade"] is None:
                assert event["grade_basis"] is None
                continue
            graded += 1
            assert event["grade_basis"] in ("explicit", "inferred"), patient
            assert event["grade_reason"], patient
    assert graded
