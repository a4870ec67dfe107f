"""CTCAE v5 grades: explicit ("CTCAE grade 3", "G2", "grade II colitis") tied to the event, or inferred
from what the event's notes state, with the reason given.

The criteria are data (``rules/ctcae.yaml``): per event group the highest grade CTCAE v5 defines
and ordered tiers of criteria, each a fact stated in the notes (hospitalisation, ICU, oxygen,
limiting self-care ADL, hormone replacement, dialysis, ...) or a measured value with its bands
(stools/day over baseline, ALT/AST and bilirubin x ULN, creatinine x baseline or x ULN, rash %
BSA, skin detachment % BSA). The grade is the peak over all the event's notes. A fact counts only
when stated as one: not negated ("no dialysis indication"), not hypothetical ("if admitted"), not
declined ("steroids not needed").

CTCAE v5.0: https://ctep.cancer.gov/protocoldevelopment/electronic_applications/ctc.htm
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from app.agent.clinical.pipeline import load_yaml

_I = re.IGNORECASE
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
GRADE = re.compile(r"(?:\bctcae\s*(?:v(?:ersion)?\.?\s*5(?:\.0)?\s*)?)?"
                   r"\b(?:grade|gr\.?)\s*[:#]?\s*([1-5]|iv|v|i{1,3}|one|two|three|four|five)\b"
                   r"|\bG([1-5])\b(?![-/]?\d)", _I)


@lru_cache(maxsize=1)
def _cues() -> dict[str, re.Pattern[str]]:
    data = load_yaml("cues.yaml")
    return {k: re.compile(r"\b(?:" + "|".join(v) + r")", _I) for k, v in data.items()}


def cue(name: str) -> re.Pattern[str]:
    return _cues()[name]


_NOT_FACT = re.compile(r"\b(?:no|not|without|avoid\w*|risk|prevent\w*|monitor\w*|watch\w*|if|would|will|may|might|"
                       r"could|consider\w*|reconsider\w*|denie[sd]|declined|unless|call|return|precautions|never|"
                       r"potentially|concern(?:ing)? for|suspect\w*|rule out|r/o|in case|should|prn|vs\.?|versus)\b"
                       r"[^.;\n]{0,25}$", _I)
# "steroids not needed", "dialysis not indicated", "insulin was declined"
_NOT_FACT_AFTER = re.compile(r"^[^.;\n]{0,12}?\b(?:(?:is|was|were|are)\s+)?(?:not\s+(?:needed|required|indicated|"
                             r"given|started|necessary|warranted|recommended)|unnecessary|declined|refused|deferred|"
                             r"not an option)\b", _I)


def _is_fact(text: str, m: re.Match[str]) -> bool:
    return stated(text, m.start(), m.end())


def fact(name: str, text: str) -> re.Match[str] | None:
    """The first match of cue ``name`` (cues.yaml, or a fact of ctcae.yaml) stated as a fact: not
    "no ICU", "risk of crisis", "if admitted", "steroids not needed"."""
    pattern = cue(name) if name in _cues() else _facts()[name]
    for m in pattern.finditer(text):
        if _is_fact(text, m):
            return m
    return None


def stated(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` (a treatment, a finding) is stated as a fact in ``text``: "no
    steroids needed", "without steroids", "consider IVIG" are not."""
    return not (_NOT_FACT.search(text[max(0, start - 40):start]) or _NOT_FACT_AFTER.search(text[end:end + 40]))


@lru_cache(maxsize=1)
def _criteria() -> dict:
    data = load_yaml("ctcae.yaml")
    for group, spec in data["groups"].items():
        for tier in spec["tiers"]:
            for crit in tier:
                if "fact" in crit and crit["fact"] not in data["facts"] and crit["fact"] not in _cues():
                    raise ValueError(f"ctcae.yaml {group}: unknown fact {crit['fact']}")
                if "measure" in crit and (crit["measure"] not in data["measures"] or crit["measure"] not in _MEASURES):
                    raise ValueError(f"ctcae.yaml {group}: unknown measure {crit['measure']}")
    return data


@lru_cache(maxsize=1)
def _facts() -> dict[str, re.Pattern[str]]:
    return {k: re.compile(r"\b(?:" + "|".join(v) + r")", _I) for k, v in _criteria()["facts"].items()}


# a tumour's grade, not a toxicity's: "Gleason grade 4", "grade 3 serous carcinoma", "WHO grade 2"
_TUMOUR_BEFORE = re.compile(r"\b(?:gleason|figo|who|isup|fuhrman|nuclear|histologic(?:al)?|tumou?r|nottingham|"
                            r"elston|bloom|masaoka)\s*$", _I)
_TUMOUR_AFTER = re.compile(r"^\s*(?:[\w-]+\s+){0,2}?(?:carcinoma|adenocarcinoma|ca\b|cancer|tumou?r|glioma|"
                           r"astrocytoma|sarcoma|lymphoma|melanoma|neoplasm|malignancy|lesion|dcis|nets?\b|"
                           r"neuroendocrine|differentiated|histology|disease\b)", _I)
# words that may follow a grade written after its term ("colitis, grade 3 requiring admission");
# any other word is what the grade is for ("colitis with grade 1 fatigue")
_AFTER_GRADE_OK = frozenset(("on", "with", "and", "per", "by", "ctcae", "despite", "requiring", "now", "today", "in",
                             "at", "after", "since", "due", "secondary", "from", "that", "which", "severity", "or",
                             "v5", "v5.0", "version", "toxicity", "irae", "event", "adverse", "immune",
                             "immune-related", "immune-mediated", "was", "is", "has", "had", "so", "but", "then",
                             "while", "when",
                             "given", "treated", "managed", "needing", "resolved", "improving", "persisting",
                             "ongoing", "also", "as", "of", "the", "this"))


def explicit_grades(sentence: str) -> list[tuple[int, int, int]]:
    """(start, end, grade) of every explicit grade in a sentence that is not a tumour's grade."""
    out = []
    for m in GRADE.finditer(sentence):
        raw = (m.group(1) or m.group(2) or "").lower()
        g = int(raw) if raw.isdigit() else _ROMAN.get(raw)
        if not g or _TUMOUR_BEFORE.search(sentence[max(0, m.start() - 20):m.start()]) \
                or _TUMOUR_AFTER.match(sentence[m.end():m.end() + 40]):
            continue
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
        if g0 >= end:  # a grade after the term, followed by another word, is that word's grade
            nxt = re.match(r"\s*([A-Za-z][\w./-]*)", sentence[g1:])  # "(new oxygen need)" is its reason
            if nxt and nxt.group(1).lower() not in _AFTER_GRADE_OK:
                continue
        if any(max(0, g0 - e, s - g1) < dist for s, e in others):
            continue
        if best is None or dist < best[0]:
            best = (dist, grade)
    return best[1] if best else None




# ---- measured values ------------------------------------------------------------------------
_NUM = r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)"
_LINK = (r"(?:\s*(?:of|was|is|:|=|up to|peaked|peaking|peak|rose|rise|rising|risen|increased|increase|up|from|to|"
         r"now|at|~|>=|>|about|today)(?![\w.]))*\s*")
_CHAIN = (r"((?:\s*(?:->|→|=>|>|to|then|and then|,|/)\s*(?:\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)"
          r"(?!\d|\.\d))*)")
_ULN_NEAR = re.compile(r"^[^.;\n]{0,25}?\b(?:uln|upper limit(?: of normal)?|ref(?:erence)?(?: range)?|normal|nl|n)\b"
                       r"\s*(?:range)?\s*(?:[:=<≤]|is|of|up to)?\s*(?:\d+(?:\.\d+)?\s*(?:-|–|to)\s*)?"
                       r"(\d+(?:\.\d+)?)", _I)
_ANALYTE_BEFORE = re.compile(r"\b(alt|ast|sgpt|sgot|transaminases?|lfts?|liver enzymes|bili\w*|creat\w*|cr|alp|"
                             r"alk(?:aline)? phos\w*|ggt|lipase|amylase|tsh|ck|cpk|troponin\w*)\b[^.;\n]*$", _I)


_TABLE_ANALYTES = {"alt": "ALT", "sgpt": "ALT", "ast": "AST", "sgot": "AST", "bili": "bilirubin",
                   "bilirubin": "bilirubin", "tbili": "bilirubin", "t bili": "bilirubin", "cr": "creatinine",
                   "creat": "creatinine", "creatinine": "creatinine", "scr": "creatinine"}
_ROW = re.compile(r"^\s*(?:\d{4}-\d\d-\d\d|\d{1,2}/\d{1,2}(?:/\d{2,4})?|[A-Z][a-z]{2} \d{1,2})\b(.*)$")


def table_facts(text: str) -> str:
    """Lab tables as prose ("ALT 263 (ULN 41)"), so that a value written in a column counts like one
    written in a sentence: a header line naming the analytes (one or several columns), then rows that
    start with a date; flags (H, L, *) are dropped; a reference range written in the table
    ("ALT 7-41", "ref 0.7-1.3") gives the ULN."""
    lines = text.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        if _ROW.match(line):
            continue
        head = line.split("(")[0]
        words = [w for w in re.findall(r"[a-z][a-z0-9/-]*", head.lower())
                 if w not in ("date", "time", "day", "units", "unit", "ref", "range", "result", "value", "mg/dl")]
        cols = [_TABLE_ANALYTES.get(w) for w in words]
        if not any(cols) or re.search(r"\d", head):
            continue
        if sum(1 for c in cols if c) == 1:  # "SERUM CREATININE": one analyte, one value column
            cols = [c for c in cols if c]
        block = "\n".join(lines[i:i + 2])
        ulns = {}
        for name, hi in re.findall(r"\b(alt|ast|bili\w*|cr\w*)\s*:?\s*\d+(?:\.\d+)?\s*(?:-|–|to)\s*(\d+(?:\.\d+)?)",
                                   block, _I):
            ulns[_TABLE_ANALYTES.get(name.lower()[:4] if name.lower().startswith("bili") else name.lower(),
                                     _TABLE_ANALYTES.get(name.lower()[:2], ""))] = hi
        ref = re.search(r"\bref(?:erence)?(?: range)?\s*:?\s*\d+(?:\.\d+)?\s*(?:-|–|to)\s*(\d+(?:\.\d+)?)", line, _I)
        if ref and len(set(cols)) == 1:
            ulns[cols[0]] = ref.group(1)
        series: dict[str, list[str]] = {}
        for row in lines[i + 1:i + 40]:
            m = _ROW.match(row)
            if not m:
                if row.strip() and not re.match(r"^\s*\(", row):
                    break
                continue
            nums = re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])", m.group(1))
            for name, raw in zip(cols, nums, strict=False):
                if name is not None:
                    series.setdefault(name, []).append(raw)
        for name, vals in series.items():  # oldest row first: the first value is the baseline
            uln = ulns.get(name)
            out.append(f"{name} {' -> '.join(vals)}" + (f" (ULN {uln})" if uln else "") + ".")
    return "\n".join(out)


def _num(raw: str) -> float:
    return float(raw.replace(",", ""))


def _values(text: str, analyte: str) -> list[tuple[float, int, int, str]]:
    """(value, start, end, the value chain) of every value written after an analyte name, chains
    included ("Cr 0.8 -> 2.9 -> 3.1", "ALT/AST 250/180")."""
    out = []
    for m in re.finditer(r"\b(?:" + analyte + r")\b" + _LINK + _NUM + r"(?!\d|\.\d)" + _CHAIN, text, _I):
        chain = [m.group(1), *re.findall(r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)", m.group(2) or "")]
        for raw in chain:
            out.append((_num(raw), m.start(), m.end(), m.group(0)))
    return out


def _uln_after(text: str, end: int) -> float | None:
    m = _ULN_NEAR.search(text[end:end + 60])
    return float(m.group(1)) if m else None


def _alt_ast(text: str) -> tuple[float, str] | None:
    """The highest ALT/AST multiple of the upper limit of normal: "ALT 5.2 x ULN", "ALT 420 (ULN 40)"
    (a value without a written ULN against 40 U/L)."""
    ratios: list[tuple[float, str]] = []
    for m in re.finditer(r"(\d+(?:\.\d+)?)\s*(?:x|×|times)\s*(?:the\s+)?(?:uln|upper limit)", text, _I):
        analyte = _ANALYTE_BEFORE.search(text[max(0, m.start() - 40):m.start()])
        name = analyte.group(1).lower() if analyte else "alt"
        if name[:2] in ("al", "as", "sg", "tr", "lf", "li") and not name.startswith(("alp", "alk")):
            ratios.append((float(m.group(1)), f"{m.group(1)} x ULN"))
    for value, _a, end, chain in _values(text, r"alt|ast|sgpt|sgot|alt/ast|ast/alt"):
        if value < 10 or value > 20000:
            continue
        uln = _uln_after(text, end) or 40.0
        if uln >= 10:
            name = chain.split()[0].upper().rstrip(":")
            ratios.append((value / uln, f"{name} {value:g} (ULN {uln:g})"))
    return max(ratios) if ratios else None


def _bilirubin(text: str) -> tuple[float, str] | None:
    """The highest total bilirubin multiple of the ULN (written, else 1.2 mg/dL or 21 umol/L)."""
    ratios: list[tuple[float, str]] = []
    for m in re.finditer(r"\bbili\w*[^.;\n\d]{0,15}(\d+(?:\.\d+)?)\s*(?:x|×|times)\s*(?:the\s+)?(?:uln|upper limit)",
                         text, _I):
        ratios.append((float(m.group(1)), f"bilirubin {m.group(1)} x ULN"))
    for value, _a, end, _chain in _values(text, r"(?:total |t\.? ?)?bili(?:rubin)?|tbili|t bili|tbil"):
        uln = _uln_after(text, end) or (21.0 if value >= 15 else 1.2)
        ratios.append((value / uln, f"bilirubin {value:g} (ULN {uln:g})"))
    return max(ratios) if ratios else None


_CREAT = r"creatinine|creat|cr|scr|serum creatinine"


def _creatinine_vals(text: str) -> list[float]:
    return [v for v, *_ in _values(text, _CREAT) if 0.2 <= v < 20 or 30 <= v <= 2000]


def _creatinine_baseline(text: str, prior: str) -> tuple[float, str] | None:
    """Peak creatinine over its baseline: written ("baseline 0.8", "was 0.8", "from 0.8", the first
    value of "0.8 -> 2.9"), else the lowest value in the notes before the event."""
    vals = _values(text, _CREAT)
    if not vals:
        return None
    peak = max(v for v, *_ in vals)
    base = []
    for m in re.finditer(r"\b(?:baseline|was|from|previously|prior|usual)\s*(?:creatinine|cr)?\s*"
                         r"(?:of|was|is|:|=|~)?\s*(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)\s*(?:mg/dl\s*)?(?:at\s*)?baseline",
                         text, _I):
        base.append(float(m.group(1) or m.group(2)))
    base += [min(_num(x) for x in [c.split()[-1]] + re.findall(r"\d+(?:\.\d+)?", c))
             for _v, _a, _e, c in vals if re.search(r"->|→|=>|\bto\b|\bthen\b", c)]
    if not base and prior:
        base = _creatinine_vals(prior)
    same_unit = [b for b in base if (b < 20) == (peak < 20) and b > 0]
    if not same_unit:
        return None
    b = min(same_unit)
    if peak <= b:
        return None
    return peak / b, f"creatinine {peak:g} against a baseline of {b:g}"


def _creatinine_uln(text: str) -> tuple[float, str] | None:
    ratios = []
    for m in re.finditer(r"(\d+(?:\.\d+)?)\s*(?:x|×|times)\s*(?:her |his |the )?baseline", text, _I):
        analyte = _ANALYTE_BEFORE.search(text[max(0, m.start() - 40):m.start()])
        if analyte is None or analyte.group(1).lower().startswith("cr"):
            ratios.append((float(m.group(1)), f"creatinine {m.group(1)} x baseline", "baseline"))
    for value, _a, end, _chain in _values(text, _CREAT):
        uln = _uln_after(text, end)
        if uln:
            ratios.append((value / uln, f"creatinine {value:g} (ULN {uln:g})", "uln"))
    return max(ratios)[:2] if ratios else None


def _stools(text: str) -> tuple[float, str] | None:
    """Stools per day over baseline, at the peak ("8 stools/day, baseline 1", "4 over baseline")."""
    best: tuple[float, str] | None = None
    for over in re.finditer(r"(\d+)(?:\s*(?:-|to)\s*(\d+))?\s*(?:/\s*(?:day|d)\s*|\s*(?:stools|bms|bowel movements|"
                            r"episodes)?\s*(?:a|per)\s*day\s*)?(?:over|above)\s*(?:her |his |the )?baseline", text, _I):
        n = int(over.group(2) or over.group(1))
        if n < 40 and (best is None or n > best[0]):
            best = (n, f"{n} stools/day over baseline")
    counts = [int(m.group(2) or m.group(1)) for m in re.finditer(
        r"(\d+)(?:\s*(?:-|to)\s*(\d+))?\s*(?:\+\s*)?(?:x\s*)?(?:watery |loose |liquid |bloody |non-bloody |soft )?"
        r"(?:stools?|bms?|bowel movements?|episodes|motions|times)\s*(?:/|per|a|each)\s*(?:day|d\b|24 ?h)", text, _I)]
    counts += [int(m.group(2) or m.group(1)) for m in re.finditer(
        r"(?:stools?|bms?|bowel movements?|bowels (?:open|opened|opening)|bo\b|motions|diarrh\w+)[^.;\n]{0,20}?"
        r"(?<!type )(?<!type)(\d+)(?:\s*(?:-|to)\s*(\d+))?\s*(?:x\s*)?"
        r"(?:/\s*(?:day|d|24 ?h)\b|per day|a day|times (?:a |per )?day|times daily|x daily|daily)", text, _I)]
    counts = [c for c in counts if c < 40]
    if counts:
        base = re.search(r"(?:baseline|usual(?:ly)?|normally|normal for (?:her|him) is)\s*(?:of|is|was|=|:)?\s*"
                         r"(\d+|once|twice)|\((?:usual|baseline)\s*(\d+)\)", text, _I)
        top = max(counts)
        words = {"once": 1, "twice": 2}
        b = None
        if base:
            raw = (base.group(1) or base.group(2)).lower()
            b = words.get(raw) or int(raw)
        if b is not None and b < top:
            cand = (top - b, f"{top} stools/day against a baseline of {b}")
        else:
            cand = (top, f"{top} stools/day")
        if best is None or cand[0] > best[0]:
            best = cand
    return best


def _rash_bsa(text: str) -> tuple[float, str] | None:
    m = [int(x) for x in re.findall(
        r"(\d{1,3})\s*%\s*(?:of\s+)?(?:the\s+)?(?:total\s+)?(?:body surface area|bsa|tbsa)", text, _I)]
    m += [int(x) for x in re.findall(r"\b(?:bsa|tbsa|body surface area)\b[^.;\d]{0,15}(\d{1,3})\s*%", text, _I)]
    m = [x for x in m if x <= 100]
    return (max(m), f"{max(m)}% BSA") if m else None


def _detachment_bsa(text: str) -> tuple[float, str] | None:
    """Skin detachment % BSA, read only when the notes name Stevens-Johnson syndrome or TEN."""
    if not (fact("sjs", text) or fact("tox_epidermal_necrolysis", text)):
        return None
    vals = [int(x) for x in re.findall(r"\b(?:detach\w*|slough\w*|denud\w*|epidermal (?:loss|necrosis))"
                                       r"[^.;\n%]{0,50}?(\d{1,3})\s*%", text, _I)]
    vals += [int(x) for x in re.findall(r"(\d{1,3})\s*%\s*(?:bsa\s*|of (?:the )?(?:body surface area|bsa)\s*)?"
                                        r"(?:epidermal |skin )?(?:detachment|sloughing|denudation)", text, _I)]
    vals = [v for v in vals if v <= 100]
    return (max(vals), f"skin detachment {max(vals)}% BSA") if vals else None


_MEASURES = {"stools": lambda t, p: _stools(t), "alt_ast_uln": lambda t, p: _alt_ast(t),
             "bilirubin_uln": lambda t, p: _bilirubin(t), "creatinine_baseline": _creatinine_baseline,
             "creatinine_uln": lambda t, p: _creatinine_uln(t), "rash_bsa": lambda t, p: _rash_bsa(t),
             "detachment_bsa": lambda t, p: _detachment_bsa(t)}
_FACT_REASON = {"hospital": "hospitalisation", "life_threatening": "life-threatening features", "death": "death",
                "self_care": "limiting self-care ADL", "instrumental_adl": "limiting instrumental ADL",
                "oxygen": "oxygen indicated", "ventilation": "ventilatory support",
                "cardiac_life_threatening": "life-threatening cardiac features", "perforation": "perforation",
                "peritoneal": "peritoneal signs", "colitis_signs": "abdominal pain or blood in the stool (colitis)",
                "incontinence": "incontinence", "dialysis": "dialysis", "dka": "diabetic ketoacidosis",
                "insulin": "insulin therapy initiated", "endocrine_crisis": "life-threatening endocrine crisis",
                "hormone": "hormone replacement", "tox_epidermal_necrolysis": "toxic epidermal necrolysis",
                "sjs": "Stevens-Johnson syndrome", "treatment": "treated with", "asymptomatic": "asymptomatic",
                "symptomatic": "symptomatic", "mild": "mild", "moderate": "moderate", "severe": "severe",
                "at_rest": "symptoms at rest"}


def _band(value: float, bands: list[dict]) -> int | None:
    for b in bands:
        if ("gt" in b and value > b["gt"]) or ("ge" in b and value >= b["ge"]):
            return int(b["grade"])
    return None


def infer_grade(group: str, term: str, text: str, *, treated: str | None = None, hormone: str | None = None,
                prior: str = "") -> tuple[int | None, str]:
    """(grade, reason) by the CTCAE v5 criteria of ``rules/ctcae.yaml`` from what the event's notes
    state (``text``; ``prior``: the notes before the event, for baselines); (None, "") when nothing
    supports a grade. ``treated``/``hormone``: a treatment ConText tied to the event."""
    data = _criteria()
    tables = table_facts(text)
    if tables:
        text = text + "\n" + tables
    spec = data["groups"].get(group)
    if spec is None:
        return (2, f"treated with {treated}") if treated else (None, "")
    top = int(spec.get("max", 5))
    for tier in spec["tiers"]:
        met: list[tuple[int, str]] = []
        for crit in tier:
            if crit.get("terms") and term.lower() not in [t.lower() for t in crit["terms"]]:
                continue
            if "measure" in crit:
                got = _MEASURES[crit["measure"]](text, prior)
                if got:
                    grade = _band(got[0], data["measures"][crit["measure"]])
                    if grade:
                        met.append((grade, got[1] if crit["measure"] != "alt_ast_uln" else f"peak {got[1]}"))
                continue
            name = crit["fact"]
            m = fact(name, text)
            given = None
            if name == "treatment" and treated:
                given = treated
            elif name == "hormone" and hormone:
                given = hormone
            if m is None and given is None:
                continue
            what = given or m.group(0)  # type: ignore[union-attr]
            label = _FACT_REASON.get(name, name)
            if name == "treatment":
                reason = f"treated with {what}"
            elif name in ("hormone", "hospital", "life_threatening", "self_care", "instrumental_adl",
                          "cardiac_life_threatening", "ventilation", "oxygen"):
                reason = f"{label} ({what.strip()})"
            else:
                reason = label
            met.append((int(crit["grade"]), reason))
        met = [(g, r) for g, r in met if g <= top]
        if met:
            return max(met, key=lambda x: x[0])
    return None, ""
