"""The offline immune-related adverse event (irAE) screen on the clinical NLP pipeline.

Every permitted note (``Tools.read_notes``) is read, oldest first:

1. **Notes.** Each note's text is put back together from its chunks; a note whose text matches the
   injection patterns (``app.agent.guard``) is never evidence and never quoted.
2. **Pipeline** (``pipeline.py``): sentences, sections and targets of the whole note; ConText (irAE
   modifiers, then exposure modifiers) on the sentences that hold a target.
3. **Exposure** (``exposure.py``): checkpoint-inhibitor mentions given vs named-but-not-given, remote
   prior courses, the first-dose date.
4. **Mentions.** Each irAE term gets a verdict: ignored by section (review of systems, family
   history, consent/education, allergies), by ConText (negated, ruled out, uncertain, hypothetical,
   historical, family), by attribution (not immune-related; a confirmed alternative cause), by the
   timeline (before the first dose; no exposure), or copied forward / problem list (support only).
   A symptom or lab abnormality (diarrhoea, rash, raised transaminases) counts only with immune /
   checkpoint-inhibitor attribution or immunosuppressive treatment for it.
5. **Events** per organ and event group: an affirmed mention after the first dose makes an event
   unless a later assessment settles on another cause or rules it out (a differential is decided by
   the later assessment). CTCAE v5 grade: an explicit grade tied to the event, else inferred
   (``grading.py``) and the draft says from what.

Every event and every exclusion cites verbatim sentences that ``citations.verify`` checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.agent.backends import BackendResult, Tools
from app.agent.citations import ProposedSentence
from app.agent.clinical import grading, pipeline
from app.agent.clinical.dates import years
from app.agent.clinical.exposure import Exposure, IciMention, find_exposure
from app.agent.guard import injection_spans, looks_injected
from app.retrieval.chunking import Chunk

CUES = "context"  # "regex" swaps ConText for the old regex cues, to measure one against the other
EXCLUSION_KINDS = ("ruled_out", "not_ici", "other_cause", "predates", "before_ici")
SUPPORT_ONLY = ("copied", "problem_list", "history_section", "symptom_only")
_IGNORED_SECTIONS = {"ros": "ros", "family_history": "family", "consent_education": "hypothetical",
                     "allergies": "allergy", "social_history": "family"}
_SUPPORT_SECTIONS = {"problem_list": "problem_list", "history": "history_section", "medications": "history_section"}
_I = re.IGNORECASE


@dataclass
class Note:
    document_id: str
    date: str
    text: str
    chunks: list[Chunk]
    injected: bool = False
    sections: list[pipeline.Section] = field(default_factory=list)
    copied: list[tuple[int, int]] = field(default_factory=list)

    def chunk_for(self, start: int, end: int) -> tuple[Chunk, int, int] | None:
        """The chunk holding [start, end) (else the one holding most of it) and the clipped span."""
        best = None
        for c in self.chunks:
            lo, hi = max(start, c.start), min(end, c.end)
            if hi - lo > 0 and (best is None or hi - lo > best[2] - best[1]):
                best = (c, lo, hi)
                if lo == start and hi == end:
                    break
        return best


@dataclass
class Mention:
    organ: str
    group: str
    term: str
    kind: str
    verdict: str
    note: Note
    start: int  # sentence span (absolute offsets into the note)
    end: int
    sentence: str
    section: str | None
    modifiers: frozenset[str]
    attribution: str | None  # "ici" | "treated" | None
    treated: str | None
    hormone: str | None
    explicit_grade: int | None

    @property
    def date(self) -> str:
        return self.note.date


@dataclass
class Event:
    organ: str
    group: str
    mentions: list[Mention] = field(default_factory=list)
    support: list[Mention] = field(default_factory=list)


def assemble_notes(tools: Tools) -> list[Note]:
    """Whole-note texts from the permitted chunks (offsets are the note's own), oldest note first."""
    by_doc: dict[str, list[Chunk]] = {}
    for chunk in tools.read_notes():
        by_doc.setdefault(chunk.document_id, []).append(chunk)
    # notes whose markup hides instructions for an AI (an HTML comment, a hidden element): the
    # extracted text no longer shows them, but the note is flagged and never evidence either
    hidden = getattr(getattr(tools, "chart", None), "hidden_injection", None) or frozenset()
    notes = []
    for doc_id, chunks in by_doc.items():
        chunks.sort(key=lambda c: c.start)
        size = max(c.end for c in chunks)
        buf = ["\n"] * size  # gaps between chunks are the whitespace the chunker trimmed
        for c in chunks:
            buf[c.start:c.end] = list(c.text)
        text = "".join(buf)
        notes.append(Note(document_id=doc_id, date=(tools.document_date(doc_id) or "")[:10], text=text,
                          chunks=chunks, injected=doc_id in hidden or looks_injected(text)
                          or bool(injection_spans(text))))
    notes.sort(key=lambda n: (n.date, n.document_id))
    return notes


def _copied_spans(note: Note) -> list[tuple[int, int]]:
    """From a copy-forward cue to the end of its section (or of its paragraph)."""
    spans = []
    for m in grading.cue("copy_forward").finditer(note.text):
        sec = pipeline.section_at(note.sections, m.start())
        para = note.text.find("\n\n", m.end())
        end = sec.end if sec and sec.category else (para if para >= 0 else len(note.text))
        line_start = note.text.rfind("\n", 0, m.start()) + 1
        start = sec.start if sec and sec.category else line_start
        spans.append((start, max(end, m.end())))
    return spans


def _cause_confirmed(sentence: str, spans: list[tuple[int, int]]) -> bool:
    """An OTHER_CAUSE mention is a confirmed alternative unless its window negates or questions it."""
    neg = grading.cue("cause_negated")
    for a, b in spans:
        lo = max(0, a - 15)
        hi = min(len(sentence), b + 25)
        before = re.split(r"[,;:.()]", sentence[lo:a])[-1]
        after = re.split(r"[,;:.()]", sentence[b:hi])[0]
        if not neg.search(before + " " + sentence[a:b] + " " + after):
            return True
    return False


def _names_old_year(sentence: str, note_date: str) -> bool:
    """The sentence dates what it says to a year before the note's previous year."""
    if not note_date[:4].isdigit():
        return False
    return any(y < int(note_date[:4]) - 1 for y in years(sentence))


def _drug_names_it(mods: dict[str, list[tuple[int, int, str]]], start: int) -> bool:
    """"checkpoint inhibitor pneumonitis", "pembrolizumab colitis": the agent names the event."""
    return any(0 <= start - b <= 2 for _a, b, _t in mods.get("ICI_MENTION", []))


def _verdict(kind: str, mods: dict[str, list[tuple[int, int, str]]], section: str | None, sentence: str,
             span: tuple[int, int] = (0, 0)) -> str:
    if section in _IGNORED_SECTIONS:
        return _IGNORED_SECTIONS[section]
    if CUES == "regex":  # measurement only (benchmarks/bench_irae.py --compare-cues): the old hand-written cues
        from app.agent.irae_legacy import classify

        return classify(sentence, *span)
    if "FAMILY" in mods:
        return "family"
    if "NOT_IMMUNE" in mods:
        return "not_ici"
    if "NEGATED_EXISTENCE" in mods:
        words = " ".join(t for _a, _b, t in mods["NEGATED_EXISTENCE"]).lower()
        if grading.cue("ruled_out_negations").search(words):
            return "ruled_out"
        return "negated"
    if "HYPOTHETICAL" in mods:
        return "hypothetical"
    immune = ("IMMUNE_ATTRIBUTION" in mods or ("CAUSAL" in mods and "ICI_MENTION" in mods)
              or _drug_names_it(mods, span[0]))
    if "POSSIBLE_EXISTENCE" in mods and "PROBABLE_EXISTENCE" not in mods:
        return "uncertain"
    if "OTHER_CAUSE" in mods and not immune:
        if _cause_confirmed(sentence, [(a, b) for a, b, _t in mods["OTHER_CAUSE"]]):
            return "other_cause"
    if "OTHER_DRUG" in mods and not immune:
        drugs = mods["OTHER_DRUG"]
        term_text = sentence[span[0]:span[1]]
        named = ("CAUSAL" in mods
                 or any(re.search(r"induced|related|associated|toxicit", t, _I) for _a, _b, t in drugs)
                 # "paclitaxel neuropathy", "amoxicillin-clavulanate hepatitis": the drug names the event
                 or any(0 <= span[0] - b <= 25 and re.fullmatch(r"(?:[-/][\w-]+)?\s*", sentence[b:span[0]])
                        for _a, b, _t in drugs)
                 # "drug-induced liver injury" / "DILI" with another drug named in the sentence
                 or bool(re.search(r"drug[- ]induced|\bdili\b", term_text, _I)))
        if named and _cause_confirmed(sentence, [(a, b) for a, b, _t in drugs]):
            return "other_cause"
    if "HISTORICAL" in mods:
        return "predates"
    return "affirmed"


def _mention_rows(note: Note, doc, ctx_docs, spans) -> tuple[list[dict], list[IciMention]]:
    """Per target in the candidate sentences: its modifiers (with offsets in the sentence)."""
    rows: list[dict] = []
    ici: list[IciMention] = []
    for (s0, s1), cdoc in zip(spans, ctx_docs, strict=True):
        sentence = note.text[s0:s1]
        irae_ents = [e for e in cdoc.ents if e.label_ == "IRAE"]
        for ent in cdoc.ents:
            mods: dict[str, list[tuple[int, int, str]]] = {}
            for m in ent._.modifiers:
                a, b = m.modifier_span
                span = cdoc[a:b]
                mods.setdefault(m.category, []).append((span.start_char, span.end_char, span.text))
            sec = pipeline.section_at(note.sections, s0 + ent.start_char)
            if ent.label_ in ("ICI", "ICI_CLASS"):
                ici.append(IciMention(note_date=note.date, document_id=note.document_id, sentence=sentence,
                                      start=ent.start_char, end=ent.end_char, agent=ent._.literal if
                                      hasattr(ent._, "literal") else ent.text, klass=ent.label_,
                                      modifiers=frozenset(mods), section=sec.category if sec else None,
                                      note_text=note.text,
                                      cue_spans=tuple((c, a, b) for c, v in mods.items() for a, b, _t in v)))
                continue
            if ent.label_ not in ("IRAE", "OTHER_DX"):
                continue
            rule = ent._.target_rule
            meta = dict(rule.metadata or {})
            if ent.label_ == "OTHER_DX":  # a named other disease: an alternative cause for its group
                if "organ" not in meta:
                    continue
                meta["other_dx"] = True
            rows.append({"ent": ent, "meta": meta, "mods": mods, "s0": s0, "s1": s1, "sentence": sentence,
                         "section": sec.category if sec else None,
                         "others": [(o.start_char, o.end_char) for o in irae_ents if o is not ent
                                    and (o._.target_rule.metadata or {}).get("group") != meta.get("group")]})
    return rows, ici


def _first_text(mods: dict, key: str, sentence: str | None = None) -> str | None:
    """The first modifier text of ``key``; with ``sentence``, the first one stated as a fact there
    (not "no steroids needed", "without steroids", "consider infliximab")."""
    for a, b, text in mods.get(key, []):
        if sentence is None or grading.stated(sentence, a, b):
            return text
    return None


def read_mentions(notes: list[Note]) -> tuple[list[Mention], Exposure]:
    all_rows: list[tuple[Note, dict]] = []
    ici_mentions: list[IciMention] = []
    for note in notes:
        if note.injected or not note.text.strip():
            continue
        doc = pipeline.note_doc(note.text)
        note.sections = pipeline.doc_sections(doc, note.text)
        note.copied = _copied_spans(note)
        sents = pipeline.doc_sentences(doc, note.text)
        hit = [(a, b) for a, b in sents if any(e.start_char < b and a < e.end_char for e in doc.ents)]
        if not hit:
            continue
        ctx = pipeline.context_docs([note.text[a:b] for a, b in hit])
        rows, ici = _mention_rows(note, doc, ctx, hit)
        ici_mentions.extend(ici)
        all_rows.extend((note, r) for r in rows)
    exposure = find_exposure(ici_mentions)
    if not exposure.on_ici:
        # an event the notes attribute to a named agent implies the agent was given, unless every
        # mention of an agent in that note says it was not
        not_given = set(exposure.not_given)
        for note, r in all_rows:
            mods = r["mods"]
            named = "ICI_MENTION" in mods and ("CAUSAL" in mods or _drug_names_it(mods, r["ent"].start_char))
            if (named and note.document_id not in not_given and r["meta"].get("kind") == "diagnosis"
                    and _verdict("diagnosis", mods, r["section"], r["sentence"],
                                 (r["ent"].start_char, r["ent"].end_char)) == "affirmed"):
                exposure.on_ici, exposure.implied = True, True
                break
    elif exposure.first_dose:
        # an event a note attributes to a named agent ("ipilimumab-related hypophysitis") was caused
        # by doses given before that note: the first dose is no later than the earliest note that
        # names the agent without saying it was not given or long past
        skip = set(exposure.not_given) | set(exposure.remote_courses)
        for note, r in all_rows:
            mods = r["mods"]
            if note.date >= exposure.first_dose or note.document_id in skip:
                continue
            named = "ICI_MENTION" in mods and ("CAUSAL" in mods or _drug_names_it(mods, r["ent"].start_char))
            if (named and r["meta"].get("kind") == "diagnosis" and not _names_old_year(r["sentence"], note.date)
                    and _verdict("diagnosis", mods, r["section"], r["sentence"],
                                 (r["ent"].start_char, r["ent"].end_char)) == "affirmed"):
                named_dates = [m.note_date for m in ici_mentions if m.document_id not in skip
                               and m.note_date <= note.date]
                exposure.first_dose = min([note.date, *named_dates])
    pre_existing = {(r["meta"]["organ"], r["meta"]["group"]) for note, r in all_rows
                    if exposure.first_dose and note.date < exposure.first_dose
                    and not ({"NEGATED_EXISTENCE", "HYPOTHETICAL", "FAMILY", "POSSIBLE_EXISTENCE"} & set(r["mods"]))
                    and r["section"] not in _IGNORED_SECTIONS}
    mentions = []
    for note, r in all_rows:
        meta, mods = r["meta"], r["mods"]
        ent = r["ent"]
        verdict = _verdict(meta.get("kind", "diagnosis"), mods, r["section"], r["sentence"],
                           (ent.start_char, ent.end_char))
        immune = ("IMMUNE_ATTRIBUTION" in mods or ("CAUSAL" in mods and "ICI_MENTION" in mods)
                  or _drug_names_it(mods, ent.start_char))
        treated = _first_text(mods, "IMMUNOSUPPRESSION", r["sentence"])
        hormone = _first_text(mods, "HORMONE", r["sentence"])
        attribution = "ici" if immune else ("treated" if treated or hormone else None)
        abs_start = r["s0"] + ent.start_char
        if meta.get("other_dx"):
            copied = any(a <= abs_start < b for a, b in note.copied)
            if verdict == "affirmed" and not copied and r["section"] not in _SUPPORT_SECTIONS:
                verdict = "other_cause"
            elif verdict == "affirmed":
                verdict = "other_history"  # a problem list naming it: neither evidence nor a decision
            attribution = None
        if verdict == "affirmed" and attribution != "ici" and _names_old_year(r["sentence"], note.date):
            verdict = "predates"  # "adjuvant ipilimumab 2018 complicated by hypophysitis"
        if verdict == "affirmed":
            if any(a <= abs_start < b for a, b in note.copied):
                verdict = "copied"
            elif r["section"] in _SUPPORT_SECTIONS:
                verdict = _SUPPORT_SECTIONS[r["section"]]
            elif meta.get("kind") in ("symptom", "lab") and attribution is None:
                verdict = "symptom_only"
        if verdict in ("affirmed", *SUPPORT_ONLY):
            if not exposure.on_ici:
                verdict = "no_ici" if verdict == "affirmed" else verdict
            elif exposure.first_dose and note.date < exposure.first_dose:
                verdict = "before_ici"
            elif (meta["organ"], meta["group"]) in pre_existing and attribution != "ici":
                verdict = "predates"  # documented before the first dose and not attributed to it since
        grade = grading.tied_grade(r["sentence"], ent.start_char, ent.end_char, r["others"])
        mentions.append(Mention(
            organ=meta["organ"], group=meta["group"], term=meta["term"], kind=meta.get("kind", "diagnosis"),
            verdict=verdict, note=note, start=r["s0"], end=r["s1"], sentence=r["sentence"], section=r["section"],
            modifiers=frozenset(mods), attribution=attribution, treated=treated, hormone=hormone,
            explicit_grade=grade))
    return mentions, exposure


def build_events(mentions: list[Mention]) -> tuple[dict[tuple[str, str], Event], list[Mention]]:
    """Events per (organ, group); the later assessment decides a differential. Returns the events and
    the decisive exclusions (for groups without an event)."""
    by_group: dict[tuple[str, str], list[Mention]] = {}
    for m in mentions:
        by_group.setdefault((m.organ, m.group), []).append(m)
    events: dict[tuple[str, str], Event] = {}
    for key, ms in by_group.items():
        affirmed = [m for m in ms if m.verdict == "affirmed"]
        if not affirmed:
            continue
        last_affirmed = max(m.date for m in affirmed)
        against = [m for m in ms if m.verdict in ("other_cause", "not_ici", "ruled_out") and m.date > last_affirmed]
        if against:
            continue
        last_note = {m.note.document_id for m in affirmed if m.date == last_affirmed}
        same_note_against = [m for m in ms if m.verdict in ("other_cause", "not_ici", "ruled_out")
                             and m.note.document_id in last_note]
        if same_note_against and not any(m.attribution == "ici" for m in affirmed
                                         if m.note.document_id in last_note and m.verdict == "affirmed"):
            continue  # the note that mentions it last settles on another cause or rules it out
        ev = Event(key[0], key[1], mentions=affirmed)
        first = min(m.date for m in affirmed)
        ev.support = [m for m in ms if m.verdict in SUPPORT_ONLY or (m.verdict == "affirmed" and m not in affirmed)]
        ev.support = [m for m in ev.support if m.date >= first or m.verdict == "symptom_only"]
        events[key] = ev
    return events, [m for m in mentions if (m.organ, m.group) not in events]


def _status(ev: Event, term: str, conditions: list[dict[str, str]]) -> str:
    for cond in conditions:
        display = cond.get("display", "").lower()
        if term.lower() in display and cond.get("status") not in (None, "unknown"):
            return cond["status"]
    last = max(ev.mentions + ev.support, key=lambda m: m.date)
    low = last.sentence.lower()
    if re.search(r"\bresolved\b|\bresolution\b|\bnormali[sz]ed\b", low):
        return "resolved"
    if re.search(r"\bimprov\w*|\btaper\w*|\bresolving\b", low):
        return "improving"
    return "active"


_DURATION = re.compile(r"\b(?:x|for|over the (?:last|past)|past|last)\s*(\d{1,2}|a|one|two|three|four|few)\s*"
                       r"(days?|d|wks?|weeks?|w|months?|mo)\b|\b(\d{1,2}|a|one|two|three|four|few)\s*"
                       r"(days?|wks?|weeks?|months?)\s+ago\b", _I)
_WORDS = {"a": 1, "one": 1, "two": 2, "three": 3, "four": 4, "few": 3}
_UNIT_DAYS = {"d": 1, "w": 7, "m": 30}


def _stated_start(m: Mention) -> str | None:
    """Symptom onset stated in the sentence: "x3 weeks", "for 10 days", "2 weeks ago", "since 3/2/26"."""
    from datetime import date, timedelta

    from app.agent.clinical.dates import parse_dates

    for a, _b, iso in parse_dates(m.sentence):
        if re.search(r"\b(?:since|onset|began|started)\b[^.;]{0,15}$", m.sentence[max(0, a - 25):a], _I):
            if iso <= m.date:
                return iso
    d = _DURATION.search(m.sentence)
    if not d or not m.date[:10].count("-") == 2:
        return None
    num, unit = (d.group(1), d.group(2)) if d.group(1) else (d.group(3), d.group(4))
    n = int(num) if num.isdigit() else _WORDS.get(num.lower(), 1)
    days = n * _UNIT_DAYS.get(unit.lower()[0], 1)
    if days > 120:
        return None
    return (date.fromisoformat(m.date[:10]) - timedelta(days=days)).isoformat()


def _onset(ev: Event, first_dose: str | None) -> str:
    first = min(m.date for m in ev.mentions)
    early = [m.date for m in ev.support if m.verdict == "symptom_only" and m.date <= first
             and (first_dose is None or m.date >= first_dose)]
    stated = [d for m in ev.mentions + ev.support if m.date <= first or m in ev.mentions
              for d in [_stated_start(m)] if d and (first_dose is None or d >= first_dose) and d <= first]
    return min([first, *early, *stated])


_NOT_ABOUT = ("ros", "family", "hypothetical", "allergy", "negated")
GRADE_WINDOW_DAYS = 14  # notes written up to this many days after the event's last mention


def _days(a: str, b: str) -> int:
    from datetime import date

    try:
        return (date.fromisoformat(b[:10]) - date.fromisoformat(a[:10])).days
    except ValueError:
        return 10 ** 6


def grading_notes(ev: Event, notes: list[Note], mentions: list[Mention],
                  first_dose: str | None) -> tuple[list[Note], list[Note]]:
    """(the notes of the event, the notes before it). The event's notes are those that mention it
    (also as a differential later confirmed: a work-up note, dated after the first dose and at most
    30 days before it was confirmed), and the notes written during it, up to
    ``GRADE_WINDOW_DAYS`` after its last mention, that are about no other irAE (an inpatient
    progress note that says "needs help with dressing" without naming the event)."""
    key = (ev.organ, ev.group)
    # a symptom note that names another drug or cause ("grade 1 neuropathy from cisplatin") dates the
    # onset at most; its facts are not the event's
    own = {m.note.document_id for m in ev.mentions + ev.support
           if m.verdict != "symptom_only" or not ({"OTHER_DRUG", "OTHER_CAUSE"} & m.modifiers)}
    first = min(m.date for m in ev.mentions)
    for m in mentions:
        if ((m.organ, m.group) == key and m.verdict in ("uncertain", "affirmed", *SUPPORT_ONLY)
                and 0 <= _days(m.date, first) <= 30 and (first_dose is None or m.date >= first_dose)):
            own.add(m.note.document_id)
    dated = [n for n in notes if n.document_id in own]
    start = min(n.date for n in dated)
    last = max(n.date for n in dated)
    about_other = {m.note.document_id for m in mentions if (m.organ, m.group) != key and m.verdict not in _NOT_ABOUT}
    # after its last mention, a silent note belongs to the event only during an admission for it
    admitted = grading.fact("hospital", "\n".join(n.text for n in dated)) is not None
    event_notes, prior = [], []
    for n in notes:
        if n.injected:
            continue
        if n.document_id in own:
            event_notes.append(n)
        elif (start <= n.date and n.document_id not in about_other
              and (n.date <= last or (admitted and _days(last, n.date) <= GRADE_WINDOW_DAYS))):
            event_notes.append(n)
        elif n.date < start:
            prior.append(n)
    return event_notes, prior


def _grade(ev: Event, term: str, notes: list[Note] | None = None, mentions: list[Mention] | None = None,
           first_dose: str | None = None) -> tuple[int | None, str, str]:
    """(grade, basis, reason): an explicit grade written for the event wins (the peak one when it
    changes), else inferred by the CTCAE v5 criteria from the event's notes."""
    explicit = [m.explicit_grade for m in ev.mentions + ev.support
                if m.explicit_grade and m.verdict not in ("symptom_only",)]
    explicit += [m.explicit_grade for m in ev.support if m.verdict == "symptom_only" and m.explicit_grade
                 and m.attribution]
    if notes is None or mentions is None:
        own = {m.note.document_id: m.note for m in ev.mentions + ev.support}
        event_notes, prior = list(own.values()), []
    else:
        event_notes, prior = grading_notes(ev, notes, mentions, first_dose)
    prior_text = "\n".join(n.text for n in prior)
    if explicit:
        # the peak: a later note that documents worse (admitted, 9 stools/day) without writing a
        # grade outranks an earlier written grade
        last = max(m.date for m in ev.mentions + ev.support if m.explicit_grade)
        later = [n for n in event_notes if n.date > last]
        if later:
            g, why = grading.infer_grade(ev.group, term, "\n".join(n.text for n in later), prior=prior_text)
            if g and g > max(explicit):
                return g, "inferred", f"{why}, after grade {max(explicit)} was written"
        return max(explicit), "explicit", "as written in the notes"
    text = "\n".join(n.text for n in event_notes)
    treated = next((m.treated for m in ev.mentions + ev.support if m.treated), None)
    hormone = next((m.hormone for m in ev.mentions + ev.support if m.hormone), None)
    grade, reason = grading.infer_grade(ev.group, term, text, treated=treated, hormone=hormone, prior=prior_text)
    return grade, "inferred", reason


def _quote(m: Mention) -> tuple[str, str] | None:
    """(chunk id, verbatim quote) for the mention's sentence, inside one chunk."""
    got = m.note.chunk_for(m.start, m.end)
    if got is None:
        return None
    chunk, lo, hi = got
    quote = m.note.text[lo:hi].strip()
    if len(quote) < 8:
        return None
    return chunk.id, quote


def _evidence(ev: Event, limit: int = 3) -> list[Mention]:
    """The note that first documents the event, then the best stated ones (grade, attribution)."""
    ranked = sorted(ev.mentions, key=lambda m: (m.explicit_grade is None, m.attribution != "ici",
                                                m.attribution is None, m.date))
    first = [m for m in sorted(ev.mentions, key=lambda m: (m.date, m.attribution != "ici")) if _quote(m)][:1]
    out: list[Mention] = list(first)
    for m in ranked:
        if all(m.note.document_id != o.note.document_id for o in out) and _quote(m):
            out.append(m)
        if len(out) == limit:
            break
    return sorted(out, key=lambda m: m.date)


def screen(tools: Tools) -> BackendResult:
    notes = assemble_notes(tools)
    mentions, exposure = read_mentions(notes)
    events, rest = build_events(mentions)
    conditions = tools.conditions()
    sentences: list[ProposedSentence] = []
    findings_events = []
    for key in sorted(events, key=lambda k: min(m.date for m in events[k].mentions)):
        ev = events[key]
        terms = [m.term for m in ev.mentions if m.kind == "diagnosis"] or [m.term for m in ev.mentions]
        term = max(set(terms), key=lambda t: (terms.count(t), t))
        grade, basis, reason = _grade(ev, term, notes, mentions, exposure.first_dose)
        onset = _onset(ev, exposure.first_dose)
        status = _status(ev, term, conditions)
        attribution = "ici" if any(m.attribution == "ici" for m in ev.mentions) else "possible_ici"
        proof = _evidence(ev)
        if not proof:
            continue
        if grade and basis == "explicit":
            grade_txt = f"CTCAE v5 grade {grade} (as documented)"
        elif grade and reason.endswith("was written"):  # the peak after a lower written grade
            grade_txt = f"CTCAE v5 grade {grade} (inferred from {reason} earlier)"
        elif grade:
            grade_txt = f"CTCAE v5 grade {grade} (inferred from {reason}; no grade written for it)"
        else:
            grade_txt = "grade not documented and not inferable"
        who = ("attributed to the immune checkpoint inhibitor" if attribution == "ici"
               else "in a patient on an immune checkpoint inhibitor, no other cause documented")
        first = len(sentences)
        quotes = tuple(q for q in (_quote(m) for m in proof) if q)
        sentences.append(ProposedSentence(
            text=f"Immune-related {term} ({ev.organ}), {grade_txt}, {who}; onset {onset}; status {status}.",
            evidence=quotes))
        for m in proof:
            q = _quote(m)
            if q:
                sentences.append(ProposedSentence(text=f"[{m.date}] {q[1]}", evidence=(q,)))
        findings_events.append({
            "organ": ev.organ, "term": term, "ctcae_grade": grade, "grade_basis": basis if grade else None,
            "grade_reason": reason if grade else None, "attribution": attribution, "onset": onset,
            "status": status, "sentence_indexes": list(range(first, len(sentences))),
            "evidence": [{"document": m.note.document_id, "date": m.date} for m in proof]})
    excluded = []
    reasons = {"no_ici": "not_ici", "historical": "predates"}
    for m in rest:
        kind = reasons.get(m.verdict, m.verdict)
        if kind not in EXCLUSION_KINDS:
            continue
        if any(e["organ"] == m.organ and e["term"] == m.term and e["reason"] == kind for e in excluded):
            continue
        q = _quote(m)
        if not q:
            continue
        idx = len(sentences)
        sentences.append(ProposedSentence(
            text=f"Not counted as an irAE ({kind.replace('_', ' ')}): {m.term} ({m.organ}), [{m.date}] {q[1]}",
            evidence=(q,)))
        excluded.append({"organ": m.organ, "term": m.term, "reason": kind, "sentence_indexes": [idx]})
    findings = {"irae_detected": bool(findings_events), "events": findings_events, "excluded": excluded,
                "on_ici": exposure.on_ici, "ici_start": exposure.first_dose, "agents": sorted(exposure.agents)}
    out_notes = []
    if not findings_events:
        out_notes.append("No immune-related adverse event was found in the permitted notes." if exposure.on_ici
                         else "No immune checkpoint inhibitor therapy was found in the permitted notes.")
    return BackendResult(sentences=sentences, findings=findings, notes=out_notes, turns=1)
