"""CTCAE v5 grades: explicit ("CTCAE grade 3", "G2", "grade II colitis") tied to the event, or inferred
from what the notes state (stools over baseline, ALT/AST x ULN at the peak, creatinine x baseline,
BSA %, hospitalisation, ICU / life-threatening, hormone replacement) with the reason given.

CTCAE v5.0: https://ctep.cancer.gov/protocoldevelopment/electronic_applications/ctc.htm
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from app.agent.clinical.pipeline import load_yaml

_I = re.IGNORECASE
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5}
GRADE = re.compile(r"(?:\bctcae\s*(?:v(?:ersion)?\.?\s*5(?:\.0)?\s*)?)?"
                   r"\b(?:grade|gr\.?)\s*[:#]?\s*([1-5]|iv|v|i{1,3})\b"
                   r"|\bG([1-5])\b(?![-/]?\d)", _I)


@lru_cache(maxsize=1)
def _cues() -> dict[str, re.Pattern[str]]:
    data = load_yaml("cues.yaml")
    return {k: re.compile(r"\b(?:" + "|".join(v) + r")", _I) for k, v in data.items()}


def cue(name: str) -> re.Pattern[str]:
    return _cues()[name]


_NOT_FACT = re.compile(r"\b(?:no|not|without|avoid\w*|risk|prevent\w*|monitor\w*|watch\w*|if|would|may|might|"
                       r"could|consider\w*|denie[sd]|declined|unless|call|return|precautions|never)\b"
                       r"[^.;\n]{0,25}$", _I)


def fact(name: str, text: str) -> re.Match[str] | None:
    """The first match of cue ``name`` stated as a fact (not "no ICU", "risk of crisis", "if admitted")."""
    for m in cue(name).finditer(text):
        if not _NOT_FACT.search(text[max(0, m.start() - 40):m.start()]):
            return m
    return None


def explicit_grades(sentence: str) -> list[tuple[int, int, int]]:
    """(start, end, grade) of every explicit grade in a sentence."""
    out = []
    for m in GRADE.finditer(sentence):
        raw = (m.group(1) or m.group(2) or "").lower()
        g = int(raw) if raw.isdigit() else _ROMAN.get(raw)
        if g:
            out.append((m.start(), m.end(), g))
    return out


def tied_grade(sentence: str, start: int, end: int, others: Iterable[tuple[int, int]] = ()) -> int | None:
    """The explicit grade written for the term at ``sentence[start:end]``: in the same clause, within
    60 characters, and nearer to this term than to any other irAE term of the sentence."""
    best: tuple[int, int] | None = None
    for g0, g1, grade in explicit_grades(sentence):
        lo, hi = min(g1, start), max(g0, end)
        between = sentence[lo:hi]
        if re.search(r"[;\n]|\bfrom\b|\bdue to\b|\bvs\.?\b|\bversus\b", between, _I) and g0 > end:
            continue  # "colitis; grade 2 neuropathy from ..." belongs to the other clause
        if ";" in between or "\n" in between:
            continue
        dist = max(0, g0 - end, start - g1)
        if dist > 60:
            continue
        if any(max(0, g0 - e, s - g1) < dist for s, e in others):
            continue
        if best is None or dist < best[0]:
            best = (dist, grade)
    return best[1] if best else None


def _ratio_uln(text: str) -> tuple[float, str] | None:
    """The highest ALT/AST multiple of the upper limit of normal stated."""
    low = text.lower()
    ratios: list[tuple[float, str]] = []
    for m in re.finditer(r"(\d+(?:\.\d+)?)\s*(?:x|×|times)\s*(?:the\s+)?(?:uln|upper limit)", low):
        ratios.append((float(m.group(1)), f"{m.group(1)} x ULN"))
    for m in re.finditer(r"\b(alt|ast|sgpt|sgot)\b\s*(?:of|was|is|:|=|up to|peaked at|peak)?\s*(\d{2,4})\b"
                         r"(?:[^.;\n]{0,25}?\b(?:uln|ref(?:erence)?|normal|nl)\b[^\d]{0,12}"
                         r"(?:\d+\s*-\s*)?(\d{2,3}))?", low):
        value = float(m.group(2))
        uln = float(m.group(3)) if m.group(3) else 40.0
        if uln >= 10:
            ratios.append((value / uln, f"{m.group(1).upper()} {m.group(2)} (ULN {int(uln)})"))
    return max(ratios) if ratios else None


def _stool_increase(text: str) -> tuple[int, str] | None:
    low = text.lower()
    over = re.search(r"(\d+)(?:\s*(?:-|to)\s*(\d+))?\s*(?:/\s*(?:day|d)\s*|\s*(?:stools|bms|bowel movements|episodes)?"
                     r"\s*(?:a|per)\s*day\s*)?(?:over|above)\s*(?:her |his |the )?baseline", low)
    if over:
        n = int(over.group(2) or over.group(1))
        return n, f"{n} stools/day over baseline"
    counts = [int(m.group(2) or m.group(1)) for m in re.finditer(
        r"(\d+)(?:\s*(?:-|to)\s*(\d+))?\s*(?:\+\s*)?(?:x\s*)?(?:watery |loose |liquid |bloody |non-bloody |soft )?"
        r"(?:stools?|bms?|bowel movements?|episodes|motions|times)\s*(?:/|per|a|each)\s*(?:day|d\b|24 ?h)", low)]
    counts += [int(m.group(2) or m.group(1)) for m in re.finditer(
        r"(?:stools?|bms?|bowel movements?|diarrh\w+)[^.;\n]{0,20}?(\d+)(?:\s*(?:-|to)\s*(\d+))?\s*(?:x\s*)?"
        r"(?:/\s*(?:day|d)\b|per day|a day|times (?:a|per) day|daily)", low)]
    counts = [c for c in counts if c < 40]
    if not counts:
        return None
    base = re.search(r"(?:baseline|usual(?:ly)?|normally)\s*(?:of|is|was|=|:)?\s*(\d+)"
                     r"|\((?:usual|baseline)\s*(\d+)\)", low)
    top = max(counts)
    if base:
        b = int(base.group(1) or base.group(2))
        if b < top:
            return top - b, f"{top} stools/day against a baseline of {b}"
    return top, f"{top} stools/day"


def _creatinine_ratio(text: str) -> tuple[float, str] | None:
    low = text.lower()
    m = re.search(r"(\d+(?:\.\d+)?)\s*(?:x|×|times)\s*(?:her |his |the )?baseline", low)
    if m:
        return float(m.group(1)), f"creatinine {m.group(1)} x baseline"
    vals = [float(v) for v in re.findall(r"\b(?:creatinine|creat|cr|scr)\b\s*(?:of|was|is|:|=|up to|rose to|peaked at)?"
                                         r"\s*(\d\.\d+|\d{1,2}\.\d)\b", low)]
    base = re.search(r"baseline\s*(?:creatinine|cr)?\s*(?:of|was|is|:|=)?\s*(\d\.\d+)"
                     r"|(\d\.\d+)\s*(?:at\s*)?baseline", low)
    if vals and base:
        b = float(base.group(1) or base.group(2))
        top = max(vals)
        if b > 0 and top > b:
            return top / b, f"creatinine {top} against a baseline of {b}"
    return None


def _bsa(text: str) -> tuple[int, str] | None:
    m = [int(x) for x in re.findall(
        r"(\d{1,3})\s*%\s*(?:of\s+)?(?:the\s+)?(?:total\s+)?(?:body surface area|bsa|tbsa)", text, _I)]
    m += [int(x) for x in re.findall(r"\b(?:bsa|tbsa|body surface area)\b[^.;\d]{0,15}(\d{1,3})\s*%", text, _I)]
    return (max(m), f"{max(m)}% BSA") if m else None


def infer_grade(group: str, term: str, text: str, *, treated: str | None,
                hormone: str | None) -> tuple[int | None, str]:
    """(grade, reason) from what the event's notes state; (None, "") when nothing supports a grade."""
    low = text.lower()
    if fact("death", low):
        return 5, "death documented"
    icu = fact("life_threatening", low)
    hosp = fact("hospital", low)
    if group == "colitis":
        if icu:
            return 4, f"life-threatening features ({icu.group(0)})"
        inc = _stool_increase(text)
        if hosp:
            return 3, "hospitalisation"
        if inc:
            n, why = inc
            grade = 3 if n >= 7 else 2 if n >= 4 else 1
            if grade == 1 and (re.search(r"abdominal pain|cramp|blood|mucus|hematochezia", low) and term == "colitis"):
                return 2, why + " with abdominal pain or blood (colitis)"
            return grade, why
        if treated:
            return 2, f"treated with {treated}"
        return None, ""
    if group == "hepatitis":
        r = _ratio_uln(text)
        if r:
            ratio, why = r
            return (4 if ratio > 20 else 3 if ratio > 5 else 2 if ratio > 3 else 1), f"peak {why}"
        if icu:
            return 4, f"life-threatening features ({icu.group(0)})"
        if hosp:
            return 3, "hospitalisation"
        return (2, f"treated with {treated}") if treated else (None, "")
    if group == "dermatitis":
        if re.search(r"toxic epidermal necrolysis|\bten\b", low):
            return 4, "toxic epidermal necrolysis"
        if re.search(r"stevens[- ]johnson|\bsjs\b", low):
            return 3, "Stevens-Johnson syndrome"
        b = _bsa(text)
        if b:
            n, why = b
            return (3 if n > 30 else 2 if n >= 10 else 1), why
        if hosp:
            return 3, "hospitalisation"
        if re.search(r"limiting self[- ]care", low):
            return 3, "limiting self-care ADL"
        return (2, f"treated with {treated}") if treated else (None, "")
    if group == "nephritis":
        if re.search(r"dialysis|hemodialysis|\bcrrt\b", low):
            return 4, "dialysis"
        r = _creatinine_ratio(text)
        if r:
            ratio, why = r
            return (3 if ratio > 3 else 2 if ratio > 1.5 else 1), why
        if hosp:
            return 3, "hospitalisation"
        return (2, f"treated with {treated}") if treated else (None, "")
    if group in ("thyroid", "pituitary", "adrenal", "diabetes"):
        if group == "diabetes":
            if icu:
                return 4, f"life-threatening features ({icu.group(0)})"
            if hosp or re.search(r"\bdka\b|ketoacidosis", low):
                return 3, "hospitalisation (diabetic ketoacidosis)" if re.search(r"\bdka\b|ketoacidosis", low) \
                    else "hospitalisation"
            if re.search(r"\binsulin\b", low):
                return 3, "insulin therapy initiated"
            return None, ""
        if icu:
            return 4, f"life-threatening features ({icu.group(0)})"
        if hosp:
            return 3, "hospitalisation"
        if hormone or re.search(r"\bsymptomatic\b", low):
            return 2, f"hormone replacement ({hormone})" if hormone else "symptomatic"
        if re.search(r"asymptomatic", low):
            return 1, "asymptomatic"
        return None, ""
    if group in ("pneumonitis", "myocarditis", "neuro", "myositis", "arthritis", "upper_gi"):
        if icu:
            return 4, f"life-threatening features ({icu.group(0)})"
        if group == "pneumonitis" and re.search(r"\b(?:supplemental )?oxygen\b|\bo2\b|hypoxi|\bnasal cannula\b", low):
            return 3, "oxygen indicated"
        if hosp:
            return 3, "hospitalisation"
        if re.search(r"limiting self[- ]care|bed-?bound|unable to walk|wheelchair", low):
            return 3, "limiting self-care ADL"
        if re.search(r"asymptomatic|radiographic(?:ally)? only|incidental", low):
            return 1, "asymptomatic (radiographic only)"
        if group in ("arthritis", "myositis") and not (treated and re.search(
                r"predni|steroid|methylpred|dexameth|hydrocortisone|infliximab|tocilizumab|methotrexate", treated, _I)):
            if re.search(r"\bmild\b|nsaids?\b|ibuprofen|naproxen|celecoxib|meloxicam|diclofenac", low):
                return 1, "mild, NSAIDs only"
        if treated:
            return 2, f"treated with {treated}"
        return None, ""
    return (2, f"treated with {treated}") if treated else (None, "")
