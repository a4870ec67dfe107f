"""Offline immune-related adverse event (irAE) screen.

A clinical lexicon per organ system, NegEx-style negation and uncertainty
cues, attribution cues (checkpoint inhibitor versus another cause, or a
condition predating therapy) and CTCAE v5 grading rules (explicit "grade N"
first, then organ-specific thresholds). Every event cites verbatim sentences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.agent.backends import BackendResult, Tools
from app.agent.backends.offline import candidate_sentences
from app.agent.citations import ProposedSentence
from app.retrieval.index import SearchResult

ICI_DRUGS = ("pembrolizumab", "nivolumab", "ipilimumab", "atezolizumab", "durvalumab",
             "cemiplimab", "avelumab", "dostarlimab", "keytruda", "opdivo", "yervoy", "tecentriq")
LEXICON: dict[str, tuple[str, ...]] = {
    "gastrointestinal": ("colitis", "enterocolitis"),
    "hepatic": ("hepatitis", "transaminitis"),
    "pulmonary": ("pneumonitis",),
    "endocrine": ("thyroiditis", "hypothyroidism", "hyperthyroidism", "hypophysitis", "adrenal insufficiency",
                  "type 1 diabetes"),
    "dermatologic": ("dermatitis", "maculopapular rash", "rash"),
    "cardiac": ("myocarditis",),
    "renal": ("nephritis",),
    "neurologic": ("myasthenia", "encephalitis", "guillain"),
    "musculoskeletal": ("arthritis", "myositis"),
}
NEGATION = re.compile(
    r"\b(no|denies|denied|without|negative for|free of|not consistent with|ruled out|"
    r"no evidence of|no signs? of|resolved without|absence of)\b[^.;]{0,60}$", re.IGNORECASE)
POST_NEGATION = re.compile(r"^[^.;]{0,40}\b(was|were|has been|is)\s+(ruled out|excluded|unlikely)\b",
                           re.IGNORECASE)
UNCERTAIN = re.compile(r"\b(possible|possibly|rule out|r/o|concern for|differential|versus|vs\.?|"
                       r"cannot exclude|suspected|query)\b[^.;]{0,40}$", re.IGNORECASE)
OTHER_CAUSE = re.compile(
    r"\b(chemotherapy[- ]induced|chemo[- ]related|due to (capecitabine|irinotecan|fluorouracil|5-fu|"
    r"oxaliplatin|radiation|infection|c\.? ?diff)|c\.? difficile|clostridi|viral|infectious|"
    r"radiation pneumonitis|not (immune|ici|checkpoint)[- ]related|unrelated to (immunotherapy|"
    r"pembrolizumab|nivolumab|ipilimumab|atezolizumab))", re.IGNORECASE)
PREDATES = re.compile(r"\b(history of|long[- ]?standing|pre-?existing|prior to (starting|initiation)|"
                      r"predat\w+|since (childhood|\d{4})|chronic)\b", re.IGNORECASE)
ICI_CUE = re.compile(r"\b(immune[- ]related|irae|immune[- ]mediated|checkpoint|ici[- ]|"
                     + "|".join(ICI_DRUGS) + r")", re.IGNORECASE)
GRADE = re.compile(r"\b(?:ctcae\s*(?:v5\s*)?)?grade\s*([1-5])\b|\bg([1-5])\b", re.IGNORECASE)


@dataclass
class Event:
    organ: str
    term: str
    grade: int | None = None
    onset: str | None = None
    attribution: str = "ici"
    evidence: list[tuple[SearchResult, str]] = field(default_factory=list)


def _mention(sentence: str) -> list[tuple[str, str, int]]:
    low = sentence.lower()
    found = []
    for organ, terms in LEXICON.items():
        for term in terms:
            pos = low.find(term)
            if pos >= 0:
                found.append((organ, term, pos))
                break
    return found


def _grade(sentence: str, organ: str) -> int | None:
    m = GRADE.search(sentence)
    if m:
        return int(m.group(1) or m.group(2))
    low = sentence.lower()
    if organ == "gastrointestinal":
        n = re.search(r"(\d+)\s*(?:-\s*\d+\s*)?(?:loose |watery )?(?:stools|bowel movements)", low)
        if n:
            count = int(n.group(1))
            return 3 if count >= 7 else 2 if count >= 4 else 1
    if organ == "hepatic":
        n = re.search(r"(\d+(?:\.\d+)?)\s*(?:x|times)\s*(?:the\s*)?(?:uln|upper limit)", low)
        if n:
            mult = float(n.group(1))
            return 4 if mult > 20 else 3 if mult > 5 else 2 if mult > 3 else 1
    if "hospitali" in low or "admitted" in low or "iv methylprednisolone" in low:
        return 3
    if "prednisone" in low or "steroid" in low or "levothyroxine" in low:
        return 2
    return None


def classify(sentence: str, term_pos: int) -> str | None:
    """'affirmed', 'negated', 'uncertain', 'other_cause' or 'predates' for a mention."""
    before = sentence[:term_pos]
    after = sentence[term_pos:]
    if NEGATION.search(before) or POST_NEGATION.search(after):
        return "negated"
    if OTHER_CAUSE.search(sentence):
        return "other_cause"
    if PREDATES.search(before) and not ICI_CUE.search(sentence):
        return "predates"
    if UNCERTAIN.search(before):
        return "uncertain"
    return "affirmed"


def screen(tools: Tools) -> BackendResult:
    from app.agent.tasks import TASKS

    results: dict[str, SearchResult] = {}
    for query in TASKS["irae"].queries:
        for res in tools.search(query, k=12):
            results.setdefault(res.chunk.id, res)
    ordered = sorted(results.values(), key=lambda r: (tools.document_date(r.chunk.document_id) or "", r.chunk.start))
    on_ici = any(ICI_CUE.search(r.chunk.text) for r in ordered)
    events: dict[str, Event] = {}
    excluded: dict[str, str] = {}
    for res, sent in candidate_sentences(ordered):
        for organ, term, pos in _mention(sent):
            verdict = classify(sent, pos)
            if verdict != "affirmed":
                excluded.setdefault(organ, verdict or "")
                continue
            if not on_ici:
                continue
            ev = events.setdefault(organ, Event(organ=organ, term=term))
            grade = _grade(sent, organ)
            if grade and (ev.grade is None or grade > ev.grade):
                ev.grade = grade
            date = tools.document_date(res.chunk.document_id)
            if date and (ev.onset is None or date < ev.onset):
                ev.onset = date[:10]
            if len(ev.evidence) < 3:
                ev.evidence.append((res, sent))
    sentences: list[ProposedSentence] = []
    findings_events = []
    for organ in sorted(events):
        ev = events[organ]
        grade_txt = f"CTCAE grade {ev.grade}" if ev.grade else "grade not documented"
        first = len(sentences)
        sentences.append(ProposedSentence(
            text=f"Possible immune-related {ev.term} ({organ}, {grade_txt}), onset {ev.onset or 'unknown'}.",
            evidence=tuple((r.chunk.id, s) for r, s in ev.evidence)))
        for res, sent in ev.evidence[:2]:
            sentences.append(ProposedSentence(text=f"Evidence: {sent}", evidence=((res.chunk.id, sent),)))
        findings_events.append({"organ": organ, "term": ev.term, "ctcae_grade": ev.grade,
                                "attribution": ev.attribution, "onset": ev.onset, "status": "active",
                                "sentence_indexes": list(range(first, len(sentences)))})
    if not events:
        note = ("No immune-related adverse event was found in the permitted notes."
                if on_ici else "No immune checkpoint inhibitor therapy was found in the permitted notes.")
        return BackendResult(sentences=[], findings={"irae_detected": False, "events": [], "on_ici": on_ici},
                             notes=[note])
    return BackendResult(sentences=sentences,
                         findings={"irae_detected": True, "events": findings_events, "on_ici": on_ici})
