"""The previous offline irAE screen (hand-written regex cues), kept ONLY so that ``python -m app eval
--engine legacy`` can report its figures next to the clinical NLP engine (``app.agent.clinical.irae``).
Not used by the app.

Offline immune-related adverse event (irAE) screen: rules, no model.

A screen reads every permitted note (``Tools.read_notes``), not only top-k search hits.
Each mention of an irAE term is judged in its clause and sentence:

- lexicon per organ system (diagnoses; a symptom counts only with explicit ICI attribution);
- NegEx-style negation ("no colitis", "negative for rash", "pneumonitis ruled out") and
  uncertainty / hypothetical cues ("suspected", "differential included", "risk of", "evaluate for");
- attribution: an explicit other cause (irinotecan, radiation, C. difficile, cirrhosis, "not
  immune-related") or a condition predating therapy ("pre-existing", "since 2012");
- a therapy timeline: the checkpoint inhibitor start date found in the notes; a mention in a
  note written before it (or with an onset before it) cannot be an irAE of that therapy;
- copied-forward text ("copied forward from ...") is not new evidence;
- CTCAE v5 grade: an explicit "grade N" in the clause, else organ rules (stools over baseline,
  ALT/AST x ULN, body surface area, creatinine x baseline, symptom severity).

Every event and every exclusion cites verbatim sentences that ``citations.verify`` checks.
CTCAE v5: https://ctep.cancer.gov/protocoldevelopment/electronic_applications/ctc.htm
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.agent.backends import BackendResult, Tools
from app.agent.citations import ProposedSentence, split_sentences
from app.agent.guard import injection_spans
from app.retrieval.chunking import Chunk

ICI_DRUGS = ("pembrolizumab", "nivolumab", "ipilimumab", "atezolizumab", "durvalumab", "cemiplimab",
             "avelumab", "dostarlimab", "tremelimumab", "relatlimab", "keytruda", "opdivo", "yervoy",
             "tecentriq", "imfinzi", "libtayo", "bavencio")
_DRUG = "(?:" + "|".join(ICI_DRUGS) + ")"

# (organ, group, canonical term, pattern). Groups keep distinct events apart within an organ.
_T = [
    ("gastrointestinal", "colitis", "colitis", r"(?:entero)?colitis"),
    ("gastrointestinal", "colitis", "diarrhea", r"diarrh(?:o)?ea"),
    ("hepatic", "hepatitis", "hepatitis", r"(?<!viral )(?<!autoimmune )hepatitis(?![ -][a-e]\b)"),
    ("hepatic", "hepatitis", "transaminitis", r"transaminitis|transaminase elevation|elevated transaminases"),
    ("pulmonary", "pneumonitis", "pneumonitis", r"pneumonitis"),
    ("endocrine", "thyroid", "hypothyroidism", r"hypothyroidism"),
    ("endocrine", "thyroid", "hyperthyroidism", r"hyperthyroidism|thyrotoxicosis"),
    ("endocrine", "thyroid", "thyroiditis", r"thyroiditis"),
    ("endocrine", "pituitary", "hypophysitis", r"hypophysitis"),
    ("endocrine", "adrenal", "adrenal insufficiency", r"(?:primary )?adrenal insufficiency"),
    ("endocrine", "diabetes", "type 1 diabetes", r"type 1 diabetes|autoimmune diabetes"),
    ("dermatologic", "dermatitis", "dermatitis", r"dermatitis"),
    ("dermatologic", "dermatitis", "rash", r"(?:maculopapular )?rash"),
    ("cardiac", "myocarditis", "myocarditis", r"myocarditis"),
    ("renal", "nephritis", "nephritis", r"(?:interstitial )?nephritis"),
    ("neurologic", "neuro", "myasthenia gravis", r"myasthenia(?: gravis)?"),
    ("neurologic", "neuro", "encephalitis", r"encephalitis"),
    ("neurologic", "neuro", "Guillain-Barre syndrome", r"guillain[- ]barr[eé]"),
    ("musculoskeletal", "arthritis", "inflammatory arthritis", r"inflammatory arthritis"),
    ("musculoskeletal", "myositis", "myositis", r"myositis"),
]
TERMS = [(o, g, t, re.compile(r"\b(?:" + p + r")\b", re.IGNORECASE)) for o, g, t, p in _T]
SYMPTOMS = frozenset({"diarrhea", "rash", "transaminitis"})  # need explicit ICI attribution

_I = re.IGNORECASE
NEG_PRE = re.compile(r"\b(?:no|not|denies|denied|without|negative for|free of|absence of|no evidence of|"
                     r"no signs? of|not consistent with|resolved without|never had)\b(?!.*\b(?:but|however|"
                     r"although|which|positive for)\b)[^.;:]{0,60}$", _I)
NEG_POST = re.compile(r"^[^.;]{0,50}?\b(?:(?:was|were|is|been|considered and)\s+)?(?:ruled out|excluded|"
                      r"unlikely|negative)\b", _I)
UNCERTAIN = re.compile(r"\b(?:suspected|possible|possibly|probable|concern for|rule out|r/o|"
                       r"differential(?: diagnosis)?(?: included| includes)?|versus|vs\.?|cannot exclude|"
                       r"query|questionable)\b[^.;]{0,60}$", _I)
UNCERTAIN_POST = re.compile(r"^[^.;]{0,30}\b(?:was|were|is) (?:considered|suspected|possible)\b|"
                            r"^[^.;]{0,30}\bworkup\b|^[^.;]{0,10}\?", _I)
HYPOTHETICAL = re.compile(r"\b(?:risk of|risks? (?:include|of)|warning signs|educat\w*|monitor(?:ing)? for|"
                          r"evaluate for|assess for|screen(?:ing)? for|such as|if|should|call for|"
                          r"reviewed \w+ symptoms|symptoms of)\b[^.;]{0,80}$", _I)
NOT_ICI = re.compile(r"\bnot (?:an? )?(?:immune[- ](?:related|mediated)|ici[- ]related|checkpoint|irae)|"
                     r"\bruled out as immune", _I)
OTHER_CAUSE = re.compile(
    r"\b(?:attributed to|due to|from|secondary to|caused by|related to|after)\s+(?:the\s+)?(?:prior\s+)?"
    r"(?:irinotecan|folfiri|folfox|capecitabine|fluorouracil|5-fu|oxaliplatin|chemotherapy|chemo|"
    r"radiation|radiotherapy|cirrhosis|alcohol|infection|clindamycin|antibiotics?|hepatitis [bc]|"
    r"c\.? ?diff\w*|clostridi\w+)"
    r"|\bradiation (?:dermatitis|pneumonitis|colitis|recall)|\b(?:chemotherapy|chemo)[- ](?:induced|related)"
    r"|\bclostridi\w* difficile infection|\bc\.? difficile (?:infection|colitis|toxin (?:is )?positive)"
    r"|\binfectious (?:colitis|diarrh\w+)|\bviral (?:hepatitis|gastroenteritis)", _I)
PREDATES = re.compile(r"\b(?:pre-?existing|predat\w+|long-?standing|since (?:childhood|19\d\d|20\d\d)|"
                      r"history of|prior to (?:starting|initiation|immunotherapy)|chronic|"
                      r"(?:at|stable|unchanged from) baseline)\b", _I)
ICI_CUE = re.compile(r"\b(?:immune[- ](?:related|mediated)|checkpoint inhibitor|irae|ici\b|" + _DRUG + ")", _I)
ATTRIBUTION_LINE = re.compile(r"\s*attribut\w*\b", _I)  # "Attribution: immune checkpoint inhibitor."
EXPLICIT_GRADE = re.compile(r"\bgrade\s*([1-5])\b", _I)
ONSET = re.compile(r"\bonset(?: on| date)?:?\s*(\d{4}-\d{2}-\d{2})", _I)
COPIED = re.compile(r"copied[- ]forward|carried forward|copied from", _I)
_HEADER_AFTER = re.compile(r"(?<=[a-z0-9.)])(?=[A-Z][A-Za-z ]{2,30}:)|\n")
START = re.compile(r"\b(started|start|initiated|began|commenced)\s+(" + _DRUG + r"(?:\s+(?:plus|and|\+)\s+"
                   + _DRUG + r")?)\s+on\s+(\d{4}-\d{2}-\d{2})", _I)
GIVEN = re.compile(r"\bcycle 1\b[^.]{0,40}\b" + _DRUG + r"\b[^.]{0,40}\badministered\b|\b" + _DRUG +
                   r"\b[^.]{0,30}\bcycle 1 day 1\b", _I)
NOT_STARTED = re.compile(r"\b(?:immunotherapy|" + _DRUG + r")\b[^.;]{0,20}\b(?:has|have) not (?:been )?started", _I)
EXCLUSION_KINDS = ("ruled_out", "not_ici", "other_cause", "predates", "before_ici")


@dataclass(frozen=True)
class Mention:
    organ: str
    group: str
    term: str
    verdict: str  # affirmed | negated | ruled_out | uncertain | hypothetical | not_ici | other_cause
    #               | predates | before_ici | copied | no_ici
    grade: int | None
    explicit_grade: bool
    onset: str | None  # explicit onset in the sentence
    date: str  # note date (YYYY-MM-DD)
    ici_cue: bool
    chunk: Chunk
    sentence: str


@dataclass
class Event:
    organ: str
    group: str
    mentions: list[Mention] = field(default_factory=list)


def _clauses(sentence: str) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for m in re.finditer(r";", sentence):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(sentence)))
    return spans


def classify(sentence: str, start: int, end: int) -> str:
    """The verdict for the term at ``sentence[start:end]`` (clause-scoped cues first)."""
    c0, c1 = next((a, b) for a, b in _clauses(sentence) if a <= start < b or b == len(sentence))
    before, after, clause = sentence[c0:start], sentence[end:c1], sentence[c0:c1]
    if re.search(r"\b(?:ruled out|excluded)\b", after, _I) or re.search(
            r"\bruled out\b[^.;]{0,40}$", before, _I):
        return "ruled_out"
    if NEG_PRE.search(before) or NEG_POST.search(after):
        return "negated"
    if NOT_ICI.search(clause) or NOT_ICI.search(sentence[end:]):
        return "not_ici"
    if UNCERTAIN.search(before):
        return "uncertain"  # a differential names other causes without settling on them
    if OTHER_CAUSE.search(clause):
        return "other_cause"
    if PREDATES.search(clause):
        return "predates"
    if HYPOTHETICAL.search(before):
        return "hypothetical"
    if UNCERTAIN_POST.search(after):
        return "uncertain"
    return "affirmed"


def _num(text: str) -> float:
    return float(text)


def rule_grade(organ: str, group: str, text: str) -> int | None:
    """CTCAE v5 grade from the measurements a sentence states, or None."""
    low = text.lower()
    if re.search(r"life[- ]threatening|intubat|icu admission|urgent intervention", low):
        return 4
    if group == "colitis":
        m = re.search(r"(?:increase of\s*)?(\d+)(?:\s*(?:-|to)\s*(\d+))?(?:\s+or more)?\s+(?:\w+\s+)?stools", low)
        if m:
            count = int(m.group(2) or m.group(1))
            base = re.search(r"baseline of (\d+)", low)
            if base and "increase of" not in low:
                count -= int(base.group(1))
            return 3 if count >= 7 else 2 if count >= 4 else 1
    if group == "hepatitis":
        mults = [_num(x) for x in re.findall(r"(\d+(?:\.\d+)?)\s*x\s*uln", low)]
        if mults:
            top = max(mults)
            return 4 if top > 20 else 3 if top > 5 else 2 if top > 3 else 1
    if group == "dermatitis":
        m = re.search(r"(\d+)%\s*(?:of\s+)?(?:body surface area|bsa)", low)
        if m:
            bsa = int(m.group(1))
            return 3 if bsa > 30 else 2 if bsa >= 10 else 1
    if group == "nephritis":
        m = re.search(r"(\d+(?:\.\d+)?)\s*x\s*baseline", low)
        if m:
            mult = _num(m.group(1))
            return 3 if mult > 3 else 2 if mult > 1.5 else 1
    if group in ("pneumonitis", "myocarditis"):
        if re.search(r"limiting self-care|oxygen (?:is )?indicated|at rest|minimal (?:exertion|activity)", low):
            return 3
        if re.search(r"limiting instrumental|moderate (?:activity|exertion)|\bsymptomatic", low):
            return 2
        if re.search(r"asymptomatic|radiographic (?:findings )?only", low):
            return 1
    if group in ("thyroid", "pituitary", "adrenal", "diabetes"):
        if re.search(r"hospitali[sz]|severe symptoms", low):
            return 3
        if re.search(r"replacement indicated|moderate symptoms|\bsymptomatic", low):
            return 2
        if re.search(r"asymptomatic|mild symptoms", low):
            return 1
    return None


def _copied_spans(text: str) -> list[tuple[int, int]]:
    """Spans of copied-forward text: from the cue to the end of its line or the next header."""
    spans = []
    for m in COPIED.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        colon = text.find(":", m.end())
        search_from = colon + 1 if colon >= 0 else m.end()
        nxt = _HEADER_AFTER.search(text, search_from)
        spans.append((line_start, nxt.start() if nxt else len(text)))
    return spans


def therapy_start(notes: list[tuple[str, Chunk, str]]) -> tuple[str | None, bool]:
    """(ICI start date, on_ici) from the notes: stated starts, else the first cycle given."""
    stated: list[str] = []
    planned: list[str] = []
    given: list[str] = []
    for date, _chunk, sentence in notes:
        for m in START.finditer(sentence):
            (stated if m.group(1).lower() != "start" else planned).append(m.group(3))
        if GIVEN.search(sentence) and not NOT_STARTED.search(sentence):
            given.append(date)
    for dates in (stated, given, planned):
        if dates:
            return min(dates), True
    return None, False


_GLUED = re.compile(r"(?<=[a-z0-9.)])(?=[A-Z][A-Za-z ]{2,30}:)")


def _pieces(text: str) -> list[tuple[int, int]]:
    """Sentence spans, also cut where a header is glued to the previous text
    ("ruled outPlan: ...", as HTML notes come out of tag stripping)."""
    out = []
    for s, e in split_sentences(text):
        cuts = [s] + [m.start() for m in _GLUED.finditer(text, s, e)] + [e]
        out.extend((a, b) for a, b in zip(cuts, cuts[1:], strict=False) if text[a:b].strip())
    return out


def _sentences(tools: Tools) -> list[tuple[str, Chunk, str, bool]]:
    """(note date, chunk, sentence, copied) for every permitted sentence, each once, oldest first."""
    seen: set[tuple[str, int]] = set()
    out = []
    copied_by_doc: dict[str, list[tuple[int, int]]] = {}
    for chunk in tools.read_notes():
        date = (tools.document_date(chunk.document_id) or "")[:10]
        spans = copied_by_doc.setdefault(chunk.document_id, [])
        spans.extend(s for s in ((chunk.start + a, chunk.start + b) for a, b in _copied_spans(chunk.text))
                     if s not in spans)
        bad = injection_spans(chunk.text)
        for s, e in _pieces(chunk.text):
            key = (chunk.document_id, chunk.start + s)
            if key in seen or any(a < e and s < b for a, b in bad):
                continue
            seen.add(key)
            absolute = chunk.start + s
            copied = any(a <= absolute < b for a, b in spans)
            out.append((date, chunk, chunk.text[s:e], copied))
    out.sort(key=lambda t: (t[0], t[1].document_id, t[1].start))
    return out


def find_mentions(tools: Tools) -> tuple[list[Mention], str | None, bool]:
    sentences = _sentences(tools)
    start, on_ici = therapy_start([(d, c, s) for d, c, s, copied in sentences if not copied])
    mentions: list[Mention] = []
    for i, (date, chunk, sentence, copied) in enumerate(sentences):
        nxt = sentences[i + 1] if i + 1 < len(sentences) else None
        attributed_next = bool(nxt and nxt[1].document_id == chunk.document_id
                               and ATTRIBUTION_LINE.match(nxt[2]) and ICI_CUE.search(nxt[2]))
        for organ, group, term, pattern in TERMS:
            for m in pattern.finditer(sentence):
                verdict = classify(sentence, m.start(), m.end())
                clause = next(sentence[a:b] for a, b in _clauses(sentence) if a <= m.start() <= b)
                cue = bool(ICI_CUE.search(clause)) or attributed_next
                if term in SYMPTOMS and verdict == "affirmed" and not cue:
                    continue  # a symptom alone is not an irAE diagnosis
                g = EXPLICIT_GRADE.search(clause)
                onset = ONSET.search(sentence)
                onset_date = onset.group(1) if onset else None
                if verdict == "affirmed":
                    if copied:
                        verdict = "copied"
                    elif not on_ici:
                        verdict = "no_ici"
                    elif start and (date < start or (onset_date and onset_date < start)):
                        verdict = "before_ici"
                mentions.append(Mention(
                    organ=organ, group=group, term=term, verdict=verdict,
                    grade=int(g.group(1)) if g else rule_grade(organ, group, sentence),
                    explicit_grade=bool(g), onset=onset_date, date=date, ici_cue=cue,
                    chunk=chunk, sentence=sentence))
    return mentions, start, on_ici


def _status(mentions: list[Mention], term: str, conditions: list[dict[str, str]]) -> str:
    """The coded Condition's clinical status when the problem list has the term, else the notes'."""
    for cond in conditions:
        display = cond.get("display", "").lower()
        if term.lower() in display and not OTHER_CAUSE.search(display) and cond.get("status") != "unknown":
            return cond["status"]
    last = max(mentions, key=lambda m: m.date).sentence.lower()
    if re.search(r"\bresolved\b", last):
        return "resolved"
    if re.search(r"\bimproving\b|\btaper\b", last):
        return "improving"
    return "active"


def _evidence(mentions: list[Mention], limit: int = 3) -> list[Mention]:
    """Best citations: explicit grade, attribution and measurements first, then earliest; one per note."""
    ranked = sorted(mentions, key=lambda m: (not m.explicit_grade, not m.ici_cue,
                                             rule_grade(m.organ, m.group, m.sentence) is None, m.date))
    out: list[Mention] = []
    for m in ranked:
        if all(m.chunk.document_id != o.chunk.document_id for o in out):
            out.append(m)
        if len(out) == limit:
            break
    return sorted(out, key=lambda m: m.date)


def screen(tools: Tools) -> BackendResult:
    mentions, start, on_ici = find_mentions(tools)
    conditions = tools.conditions()
    events: dict[tuple[str, str], Event] = {}
    for m in mentions:
        if m.verdict == "affirmed":
            events.setdefault((m.organ, m.group), Event(m.organ, m.group)).mentions.append(m)
    sentences: list[ProposedSentence] = []
    findings_events = []
    for key in sorted(events, key=lambda k: min(m.date for m in events[k].mentions)):
        ev = events[key]
        explicit = [m.grade for m in ev.mentions if m.explicit_grade and m.grade]
        ruled = [m.grade for m in ev.mentions if m.grade]
        grade = max(explicit) if explicit else (max(ruled) if ruled else None)
        onsets = [m.onset for m in ev.mentions if m.onset] or [min(m.date for m in ev.mentions)]
        onset = min(onsets)
        terms = [m.term for m in ev.mentions if m.term not in SYMPTOMS] or [ev.mentions[0].term]
        term = max(set(terms), key=lambda t: (terms.count(t), t))
        attribution = "ici" if any(m.ici_cue for m in ev.mentions) else "possible_ici"
        status = _status(ev.mentions, term, conditions)
        proof = _evidence(ev.mentions)
        first = len(sentences)
        grade_txt = f"CTCAE v5 grade {grade}" if grade else "grade not documented"
        who = "immune checkpoint inhibitor" if attribution == "ici" else "possibly the checkpoint inhibitor"
        sentences.append(ProposedSentence(
            text=f"Immune-related {term} ({ev.organ}), {grade_txt}, attributed to {who}; onset {onset}; "
                 f"status {status}.",
            evidence=tuple((m.chunk.id, m.sentence) for m in proof)))
        for m in proof:
            sentences.append(ProposedSentence(text=f"[{m.date}] {m.sentence}", evidence=((m.chunk.id, m.sentence),)))
        findings_events.append({"organ": ev.organ, "term": term, "ctcae_grade": grade,
                                "attribution": attribution, "onset": onset, "status": status,
                                "sentence_indexes": list(range(first, len(sentences)))})
    excluded = []
    for kind in EXCLUSION_KINDS:
        for m in mentions:
            if m.verdict != kind or (m.organ, m.group) in events or m.term in SYMPTOMS and kind == "ruled_out":
                continue
            if any(e["organ"] == m.organ and e["term"] == m.term for e in excluded):
                continue
            idx = len(sentences)
            sentences.append(ProposedSentence(
                text=f"Not counted as an irAE ({kind.replace('_', ' ')}): {m.term} ({m.organ}), "
                     f"[{m.date}] {m.sentence}", evidence=((m.chunk.id, m.sentence),)))
            excluded.append({"organ": m.organ, "term": m.term, "reason": kind, "sentence_indexes": [idx]})
    findings = {"irae_detected": bool(events), "events": findings_events, "excluded": excluded,
                "on_ici": on_ici, "ici_start": start}
    notes = []
    if not events:
        notes.append("No immune-related adverse event was found in the permitted notes." if on_ici
                     else "No immune checkpoint inhibitor therapy was found in the permitted notes.")
    return BackendResult(sentences=sentences, findings=findings, notes=notes, turns=1)
