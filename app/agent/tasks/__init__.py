"""Task specs: declarative descriptions of what each drafting task needs and produces."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import AppError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    title: str
    document_types: frozenset[str] | None  # minimum-necessary LOINC note types; None = any
    queries: tuple[str, ...]  # retrieval queries the task runs
    loinc_code: str  # LOINC type of the draft DocumentReference
    loinc_display: str
    review_rule: str  # who must review before the draft is final
    prompt_version: str


NOTE_TYPES = frozenset({"11488-4", "18842-5", "34117-2", "28570-0", "11506-3", "18748-4",
                        "11502-2", "11526-1", "11504-8", "34111-5"})

TASKS = {
    "summary": TaskSpec(
        name="summary", title="Pre-visit chart summary", document_types=NOTE_TYPES,
        queries=("assessment and plan", "active problems diagnosis", "recent hospital admission or emergency visit",
                 "current treatment therapy medications", "pending follow-up tests referrals"),
        loinc_code="60591-5", loinc_display="Patient summary Document",
        review_rule="treating clinician approves", prompt_version="summary-v1",
    ),
    "irae": TaskSpec(
        name="irae", title="Immune-related adverse event screen", document_types=NOTE_TYPES,
        queries=("immune checkpoint inhibitor pembrolizumab nivolumab ipilimumab atezolizumab",
                 "durvalumab tremelimumab cemiplimab dostarlimab relatlimab retifanlimab toripalimab tislelizumab",
                 "colitis diarrhea", "hepatitis transaminases AST ALT", "pneumonitis cough dyspnea",
                 "thyroiditis hypothyroidism TSH", "rash dermatitis pruritus", "hypophysitis",
                 "myocarditis troponin", "nephritis creatinine", "steroids prednisone irAE grade"),
        loinc_code="11506-3", loinc_display="Progress note",
        review_rule="oncologist approves", prompt_version="irae-v1",
    ),
    "question": TaskSpec(
        name="question", title="Answer a question from the notes", document_types=NOTE_TYPES,
        queries=(), loinc_code="11506-3", loinc_display="Progress note",
        review_rule="asking clinician approves", prompt_version="question-v1",
    ),
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise AppError(f"Unknown task '{name}'; choose one of {', '.join(TASKS)}.",
                       code="unknown_task", http_status=400) from None
