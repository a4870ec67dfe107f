"""Questions answered from the permitted notes by the offline backend: extractive, cited.

How an answer is found (``answer(tools, question)``):

1. The question is parsed against the curated vocabulary (``vocab/topics.yaml``,
   ``vocab/synonyms.yaml``): its *topic* (allergies, medications, blood pressure, smoking ...)
   says which note sections answer it; the remaining content words become term groups,
   widened by synonyms and drug classes ("steroid" → prednisone, dexamethasone ...).
2. The notes are read once (``tools.read_notes()``), grouped per document and walked
   newest first (oldest first for "first"/"earliest"): the first note whose section of the
   topic holds an answering line answers. Lines that say "not recorded" do not answer
   ("None recorded at this visit" under Vital Signs sends the search to an older note).
3. Without a topic, lines anywhere that contain every term group answer (two thirds of them
   for long questions); the hybrid search (embedding model + BM25) is consulted once, only
   when that finds nothing, to rank lines that hold part of the terms. A term that occurs in
   no note at all ("BRCA1") means not found, whatever else the question shares with the notes.
4. Nothing found: ``answer_found`` False and a plain statement. Never a guess.

Every sentence quotes the note verbatim and cites one note: the newest one that has it.
``NoteSet`` (one chart's notes, newest first, lines with their section category) is shared
with the summary (``app.agent.clinical.summary``). Sections come from the chunker's headers,
mapped by ``vocab/sections.yaml``; a chunk whose header is unknown is sectioned by the
medspacy pipeline (``app.agent.clinical.pipeline.sections``) when that module is installed.
No note text is logged.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from app.agent.backends import BackendResult, Tools
from app.agent.citations import MIN_QUOTE_CHARS, ProposedSentence, normalise, split_sentences
from app.agent.guard import injection_spans
from app.retrieval.chunking import Chunk

VOCAB_DIR = Path(__file__).with_name("vocab")
NOT_FOUND = "The permitted record does not contain an answer to this question."
MAX_ANSWER_LINES = 12
PIPELINE_NOTE_BUDGET = 300  # notes (newest first) whose unknown sections may go through medspacy
_HEADER_PREFIX = re.compile(r"^[\s#*_=-]*")
_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)])\s+")


@functools.cache
def vocab(name: str) -> Any:
    """A vocabulary file of ``vocab/`` (parsed once)."""
    return yaml.safe_load((VOCAB_DIR / name).read_text(encoding="utf-8"))


def _phrase_pattern(phrases: Iterable[str]) -> re.Pattern[str] | None:
    alts = sorted({p.lower() for p in phrases if p}, key=len, reverse=True)
    if not alts:
        return None
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(re.escape(a) for a in alts) + r")(?![a-z0-9])")


def _regexes(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


# -- sections ---------------------------------------------------------------------------------


def _title_key(title: str) -> str:
    t = _HEADER_PREFIX.sub("", title.lower()).strip().rstrip(":").strip()
    return re.sub(r"\s+", " ", t)


@functools.cache
def _section_aliases() -> list[tuple[str, str]]:
    out = [(alias.lower(), cat) for cat, aliases in vocab("sections.yaml")["categories"].items()
           for alias in aliases]
    return sorted(out, key=lambda t: len(t[0]), reverse=True)


@functools.cache
def section_category(title: str | None) -> str | None:
    """Our category of a section title ("Current Outpatient Medications" → medications), or None."""
    if not title:
        return None
    key = _title_key(title)
    for alias, cat in _section_aliases():
        if key == alias or (key.startswith(alias) and _QUALIFIER.match(key[len(alias):])):
            return cat
    return None


# what may follow a known title: "(as of 3/2)", " - triage", ": ...", " as of today", " on admission"
# ("Medication reconciliation" is not a medication list)
_QUALIFIER = re.compile(r"^(?:\s*[(\[:/,-]|\s+(?:as of|at|on|for|from|in|prior to|upon|reviewed|today)\b)")


def pipeline_category(category: str | None) -> str | None:
    """Our category of a medspacy / pipeline section category."""
    if not category:
        return None
    name = category.lower()
    exact = vocab("sections.yaml")["pipeline_exact"]
    if name in exact:
        return exact[name]
    for needle, cat in vocab("sections.yaml")["pipeline_categories"].items():
        if needle in name:
            return cat
    return None


def _pipeline_sections(text: str) -> list[Any] | None:
    """Sections of ``text`` from the clinical pipeline, or None when it is not installed."""
    try:
        from app.agent.clinical import pipeline  # built by the clinical NLP pipeline task
    except ImportError:
        return None
    return list(pipeline.sections(text))


# -- notes and lines --------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One sentence or line of a note, verbatim, with where it sits."""

    chunk: Chunk
    rel_start: int  # offsets inside chunk.text
    rel_end: int
    category: str | None  # section category (sections.yaml), None when unknown
    title: str | None  # the section title as the note writes it
    header: bool = False  # the line is the section's own header

    @property
    def text(self) -> str:
        return self.chunk.text[self.rel_start:self.rel_end]

    @property
    def start(self) -> int:
        return self.chunk.start + self.rel_start

    @property
    def clean(self) -> str:
        """The line without a leading bullet, for the draft text."""
        return _BULLET.sub("", self.text).strip()

    def quote(self) -> str:
        """A verbatim quote of this line, long enough to be checked (widened inside the chunk)."""
        text = self.chunk.text
        start, end = self.rel_start, self.rel_end
        clean = self.clean
        if len(normalise(clean)) >= MIN_QUOTE_CHARS:
            return clean
        # too short to prove anything alone ("aspirin"): take the text before it in the chunk
        # (normally the section header), else after it
        if start > 0:
            start = max(0, text.rfind("\n", 0, max(0, start - 1)) + 1)
        if len(normalise(text[start:end])) < MIN_QUOTE_CHARS:
            end = len(text)
        return text[start:end].strip()


@dataclass
class Note:
    document_id: str
    date: str  # ISO date-time of the DocumentReference, "" when undated
    chunks: list[Chunk]
    use_pipeline: bool = True
    _lines: list[Line] | None = field(default=None, repr=False)

    @property
    def day(self) -> str:
        return self.date[:10]

    def lines(self) -> list[Line]:
        """Every line of the note once, in note order: where chunks overlap, the longest reading of
        a line is kept and lines inside another are dropped."""
        if self._lines is None:
            found: list[Line] = []
            previous: tuple[str, str | None] | None = None
            spoken = False  # the note is dictated with spoken headings
            for chunk in self.chunks:
                # the section in force where this chunk starts (chunks overlap)
                covering = [ln for ln in found if ln.start <= chunk.start and ln.category]
                at_start = (covering[-1].category, covering[-1].title) if covering else previous
                heads = len(_spoken_heading().findall(chunk.text)) if chunk.section is None else 0
                # two spoken headings make a dictated note ("the colon was normal" does not)
                spoken = chunk.section is None and (heads >= 2 or (spoken and (heads or at_start)))
                if spoken:
                    lines = _spoken_lines(chunk, at_start)  # type: ignore[arg-type]
                else:
                    inherit = previous if _continues(chunk, previous) else None
                    lines = _chunk_lines(chunk, self.use_pipeline, inherit=inherit)
                    cat = inherit[0] if inherit else section_category(chunk.section)
                    if cat is not None:
                        previous = inherit or (cat, chunk.section)
                found.extend(lines)
                found.sort(key=lambda ln: ln.start)
            found.sort(key=lambda ln: (ln.start, -(ln.rel_end - ln.rel_start)))
            out: list[Line] = []
            reach = -1
            for line in found:
                end = line.start + (line.rel_end - line.rel_start)
                if end <= reach:
                    continue  # inside a line already kept (an overlap's partial copy)
                out.append(line)
                reach = max(reach, end)
            self._lines = out
        return self._lines

    def section_lines(self, categories: Iterable[str]) -> list[Line]:
        wanted = set(categories)
        return [ln for ln in self.lines() if ln.category in wanted and not ln.header]


@functools.cache
def _banner() -> tuple[re.Pattern[str], ...]:
    return _regexes(vocab("topics.yaml")["banner"])


# Dictated notes say their headings: "allergies colon penicillin, period".
@functools.cache
def _spoken_heading() -> re.Pattern[str]:
    alts = sorted({a for a, _ in _section_aliases() if len(a) > 2}, key=len, reverse=True)
    return re.compile(r"(?<![a-z0-9])(" + "|".join(re.escape(a) for a in alts) + r")\s+colon\b[\s,]*",
                      re.IGNORECASE)


def _spoken_lines(chunk: Chunk, previous: tuple[str, str | None] | None) -> list[Line]:
    """Lines of a dictated chunk: each spoken heading starts a section; its body (up to the next
    heading, "period" left out) is one line. Text before the first heading continues ``previous``."""
    text = chunk.text
    blocked = injection_spans(text)
    heads = list(_spoken_heading().finditer(text))
    marks = [(0, previous[0] if previous else None, previous[1] if previous else None)]
    marks += [(m.end(), section_category(m.group(1)), m.group(1)) for m in heads]
    ends = [m.start() for m in heads] + [len(text)]
    out: list[Line] = []
    for (start, cat, title), end in zip(marks, ends, strict=True):
        body = text[start:end]
        trimmed = re.sub(r"[\s,.]*(?:\bperiod\b[\s,.]*)*$", "", body, flags=re.IGNORECASE)
        s, e = start + (len(trimmed) - len(trimmed.lstrip())), start + len(trimmed)
        if e - s < 2 or any(s < be and bs < e for bs, be in blocked):
            continue
        out.append(Line(chunk, s, e, cat, title))
    return out


def _continues(chunk: Chunk, previous: tuple[str, str | None] | None) -> bool:
    """An ALL-CAPS body line the chunker took for a header ("# ALLERGIES" then "PENICILLIN V" on
    its own line): a short chunk whose unknown capitalised "title" is its first line continues
    the section before it."""
    title = chunk.section
    if previous is None or not title or section_category(title) is not None or not title.isupper():
        return False
    lines = [ln for ln in chunk.text.splitlines() if ln.strip()]
    return 0 < len(lines) <= 2 and _title_key(lines[0]) == _title_key(title)


def _chunk_lines(chunk: Chunk, use_pipeline: bool, *,
                 inherit: tuple[str, str | None] | None = None) -> list[Line]:
    text = chunk.text
    spans = split_sentences(text)
    blocked = injection_spans(text)
    category = inherit[0] if inherit else section_category(chunk.section)
    section_title = inherit[1] if inherit else chunk.section
    piped: list[Any] | None = None
    if category is None and use_pipeline and len(text.strip()) > 40:
        piped = _pipeline_sections(text)
    banner = _banner()
    out: list[Line] = []
    for i, (s, e) in enumerate(spans):
        if any(s < be and bs < e for bs, be in blocked):
            continue  # text from a suspected injection is never quoted
        if any(p.search(text[s:e]) for p in banner):
            continue  # who wrote it, record numbers, a bare "1."
        cat, title, header = category, section_title, False
        if piped:
            sec = next((p for p in piped if p.start <= s < max(p.end, p.start + 1)), None)
            if sec is not None:
                cat, title = pipeline_category(sec.category), sec.title or chunk.section
        if i == 0 and not inherit and chunk.section and _title_key(text[s:e]).startswith(_title_key(chunk.section)):
            # the header line; "Allergies: NKDA" keeps "NKDA" as a line of its own
            head = _HEADER_PREFIX.sub("", text[s:e])
            rest = head[len(chunk.section):] if head.lower().startswith(chunk.section.lower()) else ""
            rest_stripped = rest.lstrip(" \t:-")
            if rest_stripped.strip():
                body_start = e - len(rest_stripped)
                out.append(Line(chunk, s, body_start, cat, title, header=True))
                out.append(Line(chunk, body_start, e, cat, title))
                continue
            header = True
        out.append(Line(chunk, s, e, cat, title, header))
    return out


def _parse_date(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("-inf")


class NoteSet:
    """One chart's permitted notes, newest first, read once through ``tools.read_notes()``."""

    def __init__(self, tools: Tools) -> None:
        by_doc: dict[str, list[Chunk]] = {}
        for chunk in tools.read_notes():
            by_doc.setdefault(chunk.document_id, []).append(chunk)
        notes = [Note(did, tools.document_date(did) or "", sorted(chs, key=lambda c: c.start))
                 for did, chs in by_doc.items()]
        notes.sort(key=lambda n: (_parse_date(n.date) if n.date else float("-inf"), n.document_id),
                   reverse=True)
        for i, note in enumerate(notes):
            note.use_pipeline = i < PIPELINE_NOTE_BUDGET
        self.notes = notes

    def __len__(self) -> int:
        return len(self.notes)

    def newest_first(self) -> Iterator[Note]:
        return iter(self.notes)

    def oldest_first(self) -> Iterator[Note]:
        return reversed(self.notes)


# -- question parsing -------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    name: str
    triggers: re.Pattern[str] | None
    sections: tuple[str, ...]
    lines: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...]
    anywhere: bool
    none_is_answer: bool
    fallback: tuple[re.Pattern[str], ...]
    modifiers: re.Pattern[str] | None = None
    terms_anywhere: bool = False
    not_in: tuple[str, ...] = ()
    fallback_drug_names: bool = False
    whole_section: bool = False  # every line of the topic's own section answers (`lines` only elsewhere)
    terms_first: bool = False  # an item asked about ("diagnosed with X?") is sought in every section first
    patterns: tuple[re.Pattern[str], ...] = ()  # trigger_patterns: wordings a phrase list cannot hold

    def spans(self, q: str) -> list[tuple[int, int]]:
        """Where the topic's triggers and trigger patterns occur in the (lower-case) question."""
        found = [m.span() for m in self.triggers.finditer(q)] if self.triggers is not None else []
        return found + [m.span() for p in self.patterns for m in p.finditer(q)]


@functools.cache
def topics() -> tuple[Topic, ...]:
    return tuple(Topic(name=t["name"], triggers=_phrase_pattern(t.get("triggers", [])),
                       sections=tuple(t.get("sections", [])), lines=_regexes(t.get("lines", [])),
                       exclude=_regexes(t.get("exclude", [])), anywhere=bool(t.get("anywhere")),
                       none_is_answer=bool(t.get("none_is_answer")),
                       fallback=_regexes(t.get("fallback", [])),
                       modifiers=_phrase_pattern(t.get("modifiers", [])),
                       terms_anywhere=bool(t.get("terms_anywhere")), not_in=tuple(t.get("not_in", [])),
                       fallback_drug_names=bool(t.get("fallback_drug_names")),
                       whole_section=bool(t.get("whole_section")), terms_first=bool(t.get("terms_first")),
                       patterns=_regexes(t.get("trigger_patterns", [])))
                 for t in vocab("topics.yaml")["topics"])


@functools.cache
def _empty_lines() -> tuple[re.Pattern[str], ...]:
    return _regexes(vocab("topics.yaml")["empty"])


@functools.cache
def _filler() -> frozenset[str]:
    """``topics.yaml`` filler and person words ("kid", "gentleman") plus spaCy's English stop words
    (less those ``stop_words_kept`` says carry meaning in a clinical question: "back" pain, "side"
    effects, "without" aura)."""
    words = {w.lower() for w in [*vocab("topics.yaml")["filler"], *vocab("topics.yaml").get("person_words", [])]}
    kept = {w.lower() for w in vocab("topics.yaml").get("stop_words_kept", [])}
    return frozenset(words | {w for w in _spacy_stop_words() if w.isalpha()} - kept)


def _spacy_stop_words() -> frozenset[str]:
    """spaCy's English stop-word list, read from its module file without importing spaCy (2 s)."""
    import importlib.util

    spec = importlib.util.find_spec("spacy")
    if spec is None or spec.origin is None:  # spaCy is a dependency (medspacy); else the curated list
        return frozenset()
    path = Path(spec.origin).parent / "lang" / "en" / "stop_words.py"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    block = re.search(r'"""(.*?)"""', text, re.DOTALL)  # STOP_WORDS = set(""" a about ... """.split())
    return frozenset(block.group(1).split()) if block else frozenset()


@functools.cache
def _synonym_index() -> dict[str, frozenset[str]]:
    index: dict[str, set[str]] = {}
    for group in [*vocab("synonyms.yaml")["groups"], *vocab("synonyms.yaml").get("vaccines", [])]:
        members = {m.lower() for m in group}
        for m in members:
            index.setdefault(m, set()).update(members)
    return {k: frozenset(v) for k, v in index.items()}


@functools.cache
def drug_classes() -> dict[str, frozenset[str]]:
    return {k.lower(): frozenset(m.lower() for m in v) for k, v in vocab("synonyms.yaml")["drug_classes"].items()}


@functools.cache
def _vaccine_members() -> re.Pattern[str] | None:
    return _phrase_pattern(m for group in vocab("synonyms.yaml").get("vaccines", []) for m in group)


@functools.cache
def _vaccine_names() -> re.Pattern[str] | None:
    return _phrase_pattern(vocab("synonyms.yaml").get("vaccine_names", []))


@functools.cache
def _vaccine_cues() -> re.Pattern[str] | None:
    return _phrase_pattern(vocab("synonyms.yaml").get("vaccine_cues", []))


def _asks_vaccine(q: str) -> bool:
    """A question with no topic is about immunizations when it names a vaccine product ("Tdap?"),
    or a vaccine-preventable disease with a cue ("up to date on tetanus?"), not the disease alone."""
    names, members, cues = _vaccine_names(), _vaccine_members(), _vaccine_cues()
    if names is not None and names.search(q):
        return True
    return bool(members is not None and cues is not None and members.search(q) and cues.search(q))


# "on anything for", "taking for her", "treatment of", "to control": a condition named as what a drug is for
_FOR_CONDITION = (r"(?:(?<![a-z])for|(?<![a-z])treat(?:s|ed|ing|ment)?(?:\s+(?:of|for))?|"
                  r"(?<![a-z])to\s+(?:treat|control|manage|help(?:\s+with)?)|(?<![a-z])control(?:ling)?|(?<![a-z])manag(?:e|es|ing|ement)(?:\s+of)?|"
                  r"(?<![a-z])help(?:s|ing)?\s+with)\s+(?:(?:his|her|their|the|this|that|its|my|your|any|a|an)\s+)?")
_CONDITION_MEDS = (r"(?=\s+(?:med|meds|medication|medications|medicine|medicines|drugs?|pills?|treatment|therapy|rx|"
                   r"regimen)(?![a-z]))")
_MED_CUE = re.compile(r"(?<![a-z])(?:on|take|takes|taking|took|using|uses|use|prescribed|meds?|medications?|"
                      r"medicines?|drugs?|pills?|treatment|treated|treating|therapy|rx|anything|something|given)"
                      r"(?![a-z])")


@functools.cache
def _condition_drugs() -> tuple[tuple[re.Pattern[str], frozenset[str]], ...]:
    """(pattern of "for <condition>", the drugs that treat it) per entry of synonyms.yaml condition_drugs."""
    classes = drug_classes()
    out = []
    for entry in vocab("synonyms.yaml").get("condition_drugs", []):
        forms: set[str] = set()
        for name in entry["drugs"]:
            name = name.lower()
            forms |= classes.get(name, frozenset()) | {name}
        alts = "|".join(re.escape(a) for a in sorted({c.lower() for c in entry["conditions"]}, key=len, reverse=True))
        # "for reflux", "to control her BP" | "HTN meds", "pain medication", "BP pills"
        pattern = re.compile(_FOR_CONDITION + "(" + alts + r")(?![a-z0-9])|(?<![a-z0-9])(" + alts + r")"
                             + _CONDITION_MEDS)
        out.append((pattern, frozenset(forms)))
    return tuple(out)


def _condition_request(q: str) -> tuple[tuple[int, int], str, frozenset[str]] | None:
    """("on anything for reflux?") → (span of "for reflux", the condition, the drugs that treat it), when
    the question also speaks of taking something; None otherwise ("plan for his hypertension")."""
    if not _MED_CUE.search(q):
        return None
    best = None
    for pattern, forms in _condition_drugs():
        for m in pattern.finditer(q):
            g = 1 if m.group(1) is not None else 2
            if best is None or (m.end(g) - m.start(g)) > len(best[1]):
                best = (m.span(), m.group(g), forms)  # the whole "treated for <condition>" leaves the terms
    return best


@functools.cache
def _vocab_phrases() -> re.Pattern[str] | None:
    """Multi-word keys of the vocabulary (synonyms, vaccines, drug classes) holding a short or
    filler word ("hepatitis a", "calcium channel blocker"), matched in the question as a whole."""
    keys = [k for k in [*_synonym_index(), *drug_classes()] if " " in k
            and (len(k.split()) > 2 or any(_is_filler(w) or len(w) < 3 for w in k.split()))]
    return _phrase_pattern(keys)


@functools.cache
def _named_phrases() -> re.Pattern[str] | None:
    """Every multi-word key of the vocabulary (synonym groups, vaccines, drug classes)."""
    return _phrase_pattern(k for k in [*_synonym_index(), *drug_classes()] if " " in k)


@functools.cache
def _drug_names() -> frozenset[str]:
    return frozenset(m for members in drug_classes().values() for m in members)


def _is_filler(word: str) -> bool:
    """A filler word or an inflection of one ("getting" ← get, "taking" ← take, "shows" ← show)."""
    filler = _filler()
    if word in filler:
        return True
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 2:
            base = word[: -len(suffix)]
            variants = {base, base + "e"}
            if len(base) >= 3 and base[-1] == base[-2]:
                variants.add(base[:-1])  # getting → get
            if variants & filler:
                return True
    return False


@functools.cache
def _drug_name_regex() -> re.Pattern[str]:
    return _term_regex(_drug_names())


def _stem(word: str) -> str:
    for suffix in ("ations", "ation", "ing", "ies", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    # an adjective asks about its noun: "prediabetic" → prediabetes, "hypertensive" → hypertension
    for suffix in ("ic", "ive"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 5:
            return word[: -len(suffix)]
    return word


_CODE_JOINT = re.compile(r"(?<=[a-z])-?(?=\d)|(?<=\d)-?(?=[a-z])|-")


def _is_code(form: str) -> bool:
    """A code of letters with digits or hyphens ("gad-7", "a1c", "audit-c")."""
    return bool(re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", form) and (re.search(r"\d", form) or "-" in form)
                and re.search(r"[a-z]", form))


def _form_alt(form: str) -> str:
    """A form's regex: phrases and short words as written, longer words with their inflections;
    a code of letters and digits in any of its spellings ("gad-7", "gad7", "gad 7"; "audit-c")."""
    if _is_code(form):
        return "[- ]?".join(re.escape(p) for p in _CODE_JOINT.split(form) if p)
    if " " in form or len(form) < 5:
        return re.escape(form)
    return re.escape(_stem(form)) + r"[a-z]{0,6}"


def _term_regex(forms: Iterable[str]) -> re.Pattern[str]:
    alts = [_form_alt(form) for form in sorted(set(forms), key=len, reverse=True)]
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(alts) + r")(?![a-z0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class TermGroup:
    word: str  # as asked
    pattern: re.Pattern[str]
    drug: bool  # a drug or a drug class
    soft: bool = False  # how it was found ("screened"): dropped when nothing answers with it
    forms: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ParsedQuestion:
    topic: Topic | None
    groups: tuple[TermGroup, ...]
    earliest: bool
    trend: bool = False  # "BP trend": the newest notes that answer, one sentence each
    also: tuple[Topic, ...] = ()  # more topics of the same sections ("height and weight"), each answered
    safety: bool = False  # "ok to give her aspirin?": the allergy list answers for the drug

    def coverage(self, text: str) -> int:
        return sum(1 for g in self.groups if g.pattern.search(text))

    def needed(self) -> int:
        n = len(self.groups)
        return n if n < 3 else math.ceil(2 * n / 3)


_Q_WORD = re.compile(r"[a-z0-9][a-z0-9+/-]*[a-z0-9+]|[a-z0-9]")


@functools.cache
def _context_lead() -> tuple[re.Pattern[str], ...]:
    return _regexes(vocab("topics.yaml").get("context_lead", []))


def _without_context(q: str) -> str:
    """The question without a statement before it ("he's penicillin-allergic - is amoxicillin on his
    list?" → "is amoxicillin on his list?"), when what follows still asks something and does not
    point back to the statement ("... - is she on anything for it?" keeps it)."""
    anaphora = {w.lower() for w in vocab("topics.yaml").get("context_anaphora", [])}
    for pattern in _context_lead():
        m = pattern.search(q)
        if m is None:
            continue
        rest = q[m.end():]
        words = _Q_WORD.findall(rest)
        tags = {w.lower() for w in vocab("topics.yaml").get("context_tags", [])}
        if words and set(words) <= tags:
            return q[:m.end()]  # "He is on lisinopril, right?": the statement is the question
        if set(words) & anaphora:
            return q  # "... - is she on anything for it?"
        if any(not _is_filler(w) and not w.isdigit() for w in words) or any(t.spans(rest) for t in topics()):
            return rest
    return q


@functools.cache
def _also_finds() -> dict[str, frozenset[str]]:
    return {k.lower(): frozenset(m.lower() for m in v)
            for k, v in (vocab("synonyms.yaml").get("also_finds") or {}).items()}


def _widen(forms: set[str]) -> set[str]:
    """The forms of a term and, one way, the milder or earlier forms of a condition it names
    ("diabetes" also finds "prediabetes"; asking about prediabetes does not find diabetes)."""
    also = _also_finds()
    return forms | {x for f in forms for x in also.get(f, frozenset())}


@functools.cache
def _soft_terms() -> frozenset[str]:
    return frozenset(w.lower() for w in vocab("topics.yaml").get("soft_terms", []))


_APPOSITION = re.compile(r"\(([^()]{1,40})\)")


def _merge_apposition(q: str, groups: list[TermGroup]) -> list[TermGroup]:
    """"screened for depression (PHQ-9)": the words in brackets name the term just before them
    (only filler between), so either one answers: the two groups become one."""
    for m in _APPOSITION.finditer(q):
        inside = [g for g in groups if re.search(r"(?<![a-z0-9])" + re.escape(g.word) + r"(?![a-z0-9])", m.group(1))]
        before = []
        for g in groups:
            if g in inside:
                continue
            at = q.rfind(g.word, 0, m.start())
            between = _Q_WORD.findall(q[at + len(g.word):m.start()]) if at >= 0 else ["x"]
            if at >= 0 and all(_is_filler(w) for w in between):
                before.append(g)
        if len(inside) != 1 or len(before) != 1:
            continue
        a, b = before[0], inside[0]
        forms = a.forms | b.forms
        merged = TermGroup(a.word, _term_regex(forms), a.drug or b.drug, soft=a.soft and b.soft, forms=forms)
        groups = [merged if g is a else g for g in groups if g is not b]
    return groups


def parse_question(question: str) -> ParsedQuestion:
    q = _without_context(question.lower().replace("\u2019", "'"))
    spans = {t.name: t.spans(q) for t in topics()}
    matched = [t for t in topics() if spans.get(t.name)]
    # a trigger inside a longer phrase of the vocabulary is that phrase's word ("blood pressure" in
    # "high blood pressure" → hypertension, "shot" in "flu shot")
    named = [m.span() for m in _named_phrases().finditer(q)] if _named_phrases() is not None else []
    matched = [t for t in matched if not all(any(a <= s and e <= b and (b - a) > (e - s) for a, b in named)
                                             for s, e in spans[t.name])]

    def inside_other(t: Topic) -> bool:  # every hit of t lies inside a longer hit of another topic
        return all(any(o.name != t.name and a <= s and e <= b and (b - a) > (e - s)
                       for o in matched for a, b in spans[o.name]) for s, e in spans[t.name])

    primary = [t for t in matched if not inside_other(t)] or matched
    rest = q
    condition = _condition_request(q)  # "on anything for reflux?": the drugs that treat it
    safety_pat = _phrase_pattern(vocab("topics.yaml").get("safety", []))
    safety = [m.span() for m in safety_pat.finditer(q)] if safety_pat is not None else []
    blanks = [sp for t in matched for sp in spans[t.name]] + ([condition[0]] if condition else []) + safety
    # every matched trigger leaves the search terms, longest first ("pulse oximetry" before "pulse")
    for start, end in sorted(blanks, key=lambda sp: sp[0] - sp[1]):
        if rest[start:end].strip():
            rest = rest[:start] + " " * (end - start) + rest[end:]
    earliest_pat = _phrase_pattern(vocab("topics.yaml")["earliest"])
    earliest = bool(earliest_pat and earliest_pat.search(q))
    recency_pat = _phrase_pattern(vocab("topics.yaml")["recency"])
    if recency_pat:
        rest = recency_pat.sub(" ", rest)
    trend_pat = _phrase_pattern(vocab("topics.yaml").get("trend", []))
    trend = bool(trend_pat and trend_pat.search(q))
    if trend_pat:
        rest = trend_pat.sub(" ", rest)
    rest = re.sub(r"'s\b", " ", rest)
    # "any GI issues like reflux?": the example after "like" / "such as" is what is asked about
    example = list(re.finditer(r"(?<![a-z])(?:like|such as|e\.g\.|eg|including)(?![a-z])", rest))
    if example and _Q_WORD.search(rest[example[-1].end():]):
        rest = " " * example[-1].end() + rest[example[-1].end():]
    topic = primary[0] if primary else None
    # "height and weight?": the other topics answered by the same sections are answered too
    also = tuple(t for t in primary[1:] if topic is not None and topic.lines and t.lines
                 and t.sections == topic.sections)
    if topic is not None and topic.modifiers is not None:
        rest = topic.modifiers.sub(" ", rest)
    classes, synonyms, drugs = drug_classes(), _synonym_index(), _drug_names()
    groups: list[TermGroup] = []
    if condition is not None:
        groups.append(TermGroup(condition[1], _term_regex(condition[2]), True, forms=condition[2]))
        topic = next((t for t in topics() if t.name == "medications"), topic)
    # phrases of the vocabulary first, before filler words go ("hepatitis a", "calcium channel blocker")
    phrases = _vocab_phrases()
    for m in list(phrases.finditer(rest)) if phrases is not None else []:
        key = m.group(0)
        forms = _widen(set(classes.get(key, frozenset())) | set(synonyms.get(key, frozenset())) | {key})
        groups.append(TermGroup(key, _term_regex(forms), key in classes or key in drugs, forms=frozenset(forms)))
        rest = rest[:m.start()] + " " * (m.end() - m.start()) + rest[m.end():]
    words = [w for w in _Q_WORD.findall(rest) if not _is_filler(w) and not w.isdigit()]
    i = 0
    while i < len(words):
        # two-word keys first ("beta blocker", "dust mite")
        pair = " ".join(words[i:i + 2]) if i + 1 < len(words) else ""
        for key, width in ((pair, 2), (words[i], 1)):
            if not key:
                continue
            forms: set[str] = set()
            drug = False
            singular = key[:-1] if key.endswith("s") and (key[:-1] in classes or key[:-1] in synonyms) else key
            if singular in classes:
                forms |= classes[singular] | {singular}
                drug = True
            if singular in synonyms:
                forms |= synonyms[singular]
            if width == 2 and not forms:
                continue
            forms = _widen(forms | {key})
            drug = drug or key in drugs or singular in drugs
            groups.append(TermGroup(key, _term_regex(forms), drug, soft=key in _soft_terms(),
                                    forms=frozenset(forms)))
            i += width
            break
    if topic is None and _asks_vaccine(q):
        topic = next((t for t in topics() if t.name == "immunizations"), None)
    if topic is None and any(g.drug for g in groups):
        topic = next((t for t in topics() if t.name == "medications"), None)
    groups = _merge_apposition(q, groups)
    return ParsedQuestion(topic=topic, groups=tuple(groups), earliest=earliest, trend=trend,
                          also=also if topic is not None and topic.name != "medications" else (),
                          safety=bool(safety) and any(g.drug for g in groups))


# -- answering --------------------------------------------------------------------------------


def _is_empty(line: Line) -> bool:
    return any(p.search(line.clean) for p in _empty_lines())


def _items(line: Line, parsed: ParsedQuestion) -> list[tuple[str, str]]:
    """(text, quote) of the parts of a long list line that hold the asked terms."""
    text = line.clean
    if not parsed.groups:
        return [(text, line.quote())]
    listing = line.category in ("allergies", "medications", "immunizations")
    if ";" in text and (listing or len(text) > 160):
        parts = [p.strip() for p in text.split(";")]
    elif "," in text and (listing or len(text) > 160):  # a long run-on list ("history of A, B, ... and C")
        parts = [p.strip() for p in text.split(",")]
    else:
        parts = [text]
    hits = [p for p in parts if parsed.coverage(p) > 0] if len(parts) > 1 else parts
    if not hits:
        return [(text, line.quote())]
    out = []
    for part in hits:
        quote = part if len(normalise(part)) >= MIN_QUOTE_CHARS else line.quote()
        out.append((part, quote))
    return out


_LIST_SPLIT = re.compile(r"\s*(?:[;,]|\band\b)\s*")


def _topic_items(line: Line, topic: Topic | None) -> list[tuple[str, str]]:
    """(text, quote) of the items of a long list line ("history of A, B, employment (finding) and
    C") that the topic's line patterns pick; the whole line when it is short or none is picked."""
    text = line.clean
    whole = [(text, line.quote())]
    if topic is None or not topic.lines or len(text) <= 160:
        return whole
    parts = [p for p in _LIST_SPLIT.split(text) if p.strip()]
    hits = [p.strip().rstrip(".") for p in parts if any(pat.search(p) for pat in topic.lines)]
    if not hits or len(parts) < 3 or any(len(normalise(h)) < MIN_QUOTE_CHARS for h in hits):
        return whole
    return [(h, h) for h in hits]


def _list_block(note: Note, anchor: Line) -> list[Line]:
    """An intro line ending with ':' and the bullet lines that follow it."""
    lines = note.lines()
    idx = next((i for i, ln in enumerate(lines) if ln.start == anchor.start), None)
    out = [anchor]
    if idx is None or not anchor.text.rstrip().endswith(":"):
        return out
    for ln in lines[idx + 1:]:
        if not _BULLET.match(ln.text):
            break
        out.append(ln)
    return out


def _may_hold(note: Note, parsed: ParsedQuestion, patterns: tuple[re.Pattern[str], ...] = ()) -> bool:
    """A cheap test on whole chunks before a note is split into lines (large charts)."""
    need = parsed.needed()
    for chunk in note.chunks:
        if parsed.groups and parsed.coverage(chunk.text) < need:
            continue
        if patterns and not any(p.search(chunk.text) for p in patterns):
            continue
        return True
    return False


def _topic_lines(note: Note, topic: Topic, parsed: ParsedQuestion, where: str) -> list[Line]:
    if where == "anywhere" and not _may_hold(note, parsed, topic.lines):
        return []
    if where == "fallback" and not _may_hold(
            note, parsed, topic.fallback + ((_drug_name_regex(),) if topic.fallback_drug_names else ())):
        return []
    if where == "terms" and not _may_hold(note, parsed):
        return []
    if where == "section" and parsed.groups and not _may_hold(note, parsed):
        return []
    if where == "section":
        lines = note.section_lines(topic.sections)
        if topic.lines and not topic.whole_section:
            lines = [ln for ln in lines if any(p.search(ln.text) for p in topic.lines)]
    elif where == "anywhere":
        lines = [ln for ln in note.lines() if ln.category not in ("family", "education")
                 and any(p.search(ln.text) for p in topic.lines)]
        lines = [x for ln in lines for x in _list_block(note, ln)]
    elif where == "terms":  # the asked item anywhere but the excluded sections
        lines = [ln for ln in note.lines() if not ln.header and ln.category not in topic.not_in]
    else:  # fallback patterns (and, for medications, any drug of the vocabulary) anywhere
        patterns = topic.fallback + ((_drug_name_regex(),) if topic.fallback_drug_names else ())
        lines = [ln for ln in note.lines() if ln.category not in ("family", "education", *topic.not_in)
                 and any(p.search(ln.text) for p in patterns)]
    lines = [ln for ln in lines if not any(p.search(ln.text) for p in topic.exclude)]
    if not topic.none_is_answer:
        lines = [ln for ln in lines if not _is_empty(ln)]
    if parsed.groups:
        lines = [ln for ln in lines if parsed.coverage(ln.text) >= parsed.needed()]
    return [ln for ln in lines if ln.clean]


def _result(note: Note, lines: list[Line], parsed: ParsedQuestion, label: str | None) -> BackendResult:
    seen: set[str] = set()
    texts: list[str] = []
    evidence: list[tuple[str, str]] = []
    for ln in lines[:MAX_ANSWER_LINES]:
        items = _items(ln, parsed) if parsed.groups else _topic_items(ln, parsed.topic)
        for text, quote in items:
            if text.lower() in seen:
                continue
            seen.add(text.lower())
            texts.append(text.rstrip(".;"))
            evidence.append((ln.chunk.id, quote))
    title = label or (lines[0].title if lines[0].title else None)
    prefix = f"[{note.day}] " if note.day else ""
    body = "; ".join(texts)
    text = prefix + (f"{_display_title(title)}: {body}" if title else body)
    return BackendResult(sentences=[ProposedSentence(text=text + ".", evidence=tuple(evidence))],
                         notes=[f"Answered from the {'oldest' if parsed.earliest else 'newest'} note that has it."])


def _trend_notes() -> int:
    return max(1, int(vocab("topics.yaml").get("trend_notes", 3)))


def _merge(results: list[BackendResult]) -> BackendResult:
    """One answer of several notes' results (a trend), newest first, each sentence citing its note."""
    if len(results) == 1:
        return results[0]
    return BackendResult(sentences=[s for r in results for s in r.sentences],
                         notes=[f"Answered from the {len(results)} newest notes that have it."])


def _display_title(title: str) -> str:
    """A section title for the answer: "HPI" stays, "VITAL SIGNS" and "vital signs" → "Vital signs"."""
    t = _HEADER_PREFIX.sub("", title).strip().rstrip(":").strip()
    if len(t) <= 4:
        return t.upper() if t.isupper() else t
    return t[:1].upper() + t[1:].lower()


def _not_found() -> BackendResult:
    return BackendResult(sentences=[], answer_found=False, notes=[NOT_FOUND])


def answer(tools: Tools, question: str) -> BackendResult:
    """Answer ``question`` from the permitted notes (one ``read_notes``, at most one ``search``)."""
    notes = NoteSet(tools)
    parsed = parse_question(_typos_fixed(question, notes))
    searched: list[bool] = []  # the hybrid search runs at most once, whatever the passes
    result = _answer_parsed(tools, notes, parsed, question, searched)
    relaxed = _relaxed(parsed)
    if not result.answer_found and relaxed is not None:
        again = _answer_parsed(tools, notes, relaxed, question, searched)
        if again.answer_found:
            return again
    return result


TYPO_MIN_LENGTH = 6  # shorter words are too often another real word one edit away ("fever", "never")


@functools.cache
def _vocab_words() -> tuple[str, ...]:
    """Every single word of the vocabulary (topic triggers, synonyms, vaccines, drug classes and
    agents, conditions, section titles) long enough to be corrected to."""
    phrases: set[str] = set()
    for t in vocab("topics.yaml")["topics"]:
        phrases |= set(t.get("triggers", [])) | set(t.get("modifiers", []))
    syn = vocab("synonyms.yaml")
    for group in [*syn["groups"], *syn.get("vaccines", [])]:
        phrases |= set(group)
    for name, members in syn["drug_classes"].items():
        phrases |= {name, *members}
    for entry in syn.get("condition_drugs", []):
        phrases |= set(entry["conditions"])
    for name, members in (syn.get("also_finds") or {}).items():
        phrases |= {name, *members}
    phrases |= {a for a, _ in _section_aliases()}
    words = {w for p in phrases for w in re.findall(r"[a-z]+", p.lower())}
    return tuple(sorted(w for w in words if len(w) >= TYPO_MIN_LENGTH))


@functools.cache
def _trigger_words() -> frozenset[str]:
    return frozenset(w.lower() for t in vocab("topics.yaml")["topics"] for w in t.get("triggers", []) if " " not in w)


@functools.cache
def _question_words() -> frozenset[str]:
    """Words of the question-side vocabulary (safety cues, recency, person words ...): never typos."""
    t = vocab("topics.yaml")
    phrases = [*t.get("safety", []), *t.get("recency", []), *t.get("earliest", []), *t.get("trend", []),
               *t.get("person_words", []), *t.get("soft_terms", []), *t.get("context_anaphora", []),
               *vocab("synonyms.yaml").get("vaccine_cues", [])]
    return frozenset(w for p in phrases for w in re.findall(r"[a-z]+", p.lower()))


def _typos_fixed(question: str, notes: NoteSet) -> str:
    """The question with its misspelt words corrected ("alergies", "medicaitons", "presure"): a word
    of at least ``TYPO_MIN_LENGTH`` letters that is no vocabulary or filler word, occurs in no note
    of the chart, and is one edit (or one swap of neighbours) from a vocabulary word that is a
    topic's one-word trigger or occurs in the chart becomes that word. A word the chart has is
    never changed, nor one far from every vocabulary word."""
    from rapidfuzz import process
    from rapidfuzz.distance import OSA

    known = _vocab_words()
    known_set = frozenset(known)
    fixed = question
    for m in reversed(list(re.finditer(r"[A-Za-z]+", question))):
        word = m.group(0).lower()
        if len(word) < TYPO_MIN_LENGTH or word in known_set or _is_filler(word):
            continue
        hit = process.extractOne(word, known, scorer=OSA.distance, score_cutoff=1)
        if hit is None or word in _question_words() or _in_chart(notes, word):
            continue
        if hit[0] not in _trigger_words() and not _in_chart(notes, hit[0]):
            continue  # a correction must name a topic or a word the chart has ("season" is no "reason")
        fixed = fixed[:m.start()] + hit[0] + fixed[m.end():]
    return fixed


def _in_chart(notes: NoteSet, word: str) -> bool:
    pattern = re.compile(r"(?<![a-z])" + re.escape(word) + r"(?![a-z])", re.IGNORECASE)
    return any(pattern.search(c.text) for n in notes.notes for c in n.chunks)


def _relaxed(parsed: ParsedQuestion) -> ParsedQuestion | None:
    """The question without its soft terms ("screened", "tested"), when it still has a topic, two
    other terms or a code ("PHQ-9"); None when there is nothing to drop ("was her foot examined?"
    is not every line naming a foot)."""
    kept = tuple(g for g in parsed.groups if not g.soft)
    if len(kept) == len(parsed.groups) or not kept and parsed.topic is None:
        return None
    if parsed.topic is None and len(kept) < 2 and not any(_is_code(f) for g in kept for f in g.forms):
        return None
    return dataclasses.replace(parsed, groups=kept)


def _safety(parsed: ParsedQuestion, order: list[Note]) -> BackendResult | None:
    """"Ok to give her aspirin?": the newest allergy line naming the drug or a class it belongs to,
    else the newest allergy list; None when no note has one."""
    allergies = next((t for t in topics() if t.name == "allergies"), None)
    if allergies is None:
        return None
    classes = drug_classes()
    drugs = []
    for g in parsed.groups:
        if not g.drug:
            continue
        forms = set(g.forms) | {k for k, members in classes.items() if members & g.forms}
        drugs.append(TermGroup(g.word, _term_regex(forms), True, forms=frozenset(forms)))
    asked = dataclasses.replace(parsed, topic=allergies, groups=tuple(drugs), also=(), safety=False)
    for attempt in (asked, dataclasses.replace(asked, groups=())):
        result, _has = _answer_topic(attempt, order)
        if result is not None:
            return result
    return None


def _answer_parsed(tools: Tools, notes: NoteSet, parsed: ParsedQuestion, question: str,
                   searched: list[bool]) -> BackendResult:
    order = list(notes.oldest_first() if parsed.earliest else notes.newest_first())
    if parsed.safety:
        result = _safety(parsed, order)
        if result is not None:
            return result
    topic = parsed.topic
    if topic is not None and parsed.also:
        found = [r for r in (_answer_topic(dataclasses.replace(parsed, topic=t), order)[0]
                             for t in (topic, *parsed.also)) if r is not None]
        return _merge(found) if found else _not_found()
    if topic is not None:
        result, has_section = _answer_topic(parsed, order)
        if result is not None:
            return result
        if not parsed.groups or has_section:
            return _not_found()
    if not parsed.groups:
        return _not_found()
    return _free_text(tools, notes, order, parsed, question, searched)


def _answer_topic(parsed: ParsedQuestion, order: list[Note]) -> tuple[BackendResult | None, bool]:
    """The answer of the question's topic (None when no note has it) and whether some note has
    the topic's section."""
    topic = parsed.topic
    assert topic is not None
    label = None
    has_section = False
    passes = ("terms", "section", "anywhere", "fallback") if topic.terms_first and parsed.groups \
        else ("section", "anywhere", "terms", "fallback")
    for where in passes:
        if where == "anywhere" and not (topic.anywhere and topic.lines):
            continue
        if where == "terms" and not ((topic.terms_anywhere or topic.terms_first) and parsed.groups):
            continue
        if where == "fallback" and (not topic.fallback or has_section):
            continue
        series: list[BackendResult] = []
        for note in order:
            if where == "section" and not has_section:
                has_section = any(section_category(c.section) in topic.sections for c in note.chunks) \
                    or bool(note.section_lines(topic.sections))
            lines = _topic_lines(note, topic, parsed, where)
            if lines:
                series.append(_result(note, lines, parsed, label))
                if not parsed.trend or len(series) >= _trend_notes():
                    break
        if series:
            return _merge(series), has_section
    return None, has_section


def _absent_terms(notes: NoteSet, parsed: ParsedQuestion) -> bool:
    """True when some asked term occurs in no note at all (BRCA1, a health care proxy):
    the record cannot answer, however many other words of the question it holds."""
    missing = list(parsed.groups)
    for note in notes.newest_first():
        for chunk in note.chunks:
            missing = [g for g in missing if not g.pattern.search(chunk.text)]
            if not missing:
                return False
    return bool(missing)


def _free_text(tools: Tools, notes: NoteSet, order: list[Note], parsed: ParsedQuestion,
               question: str, searched: list[bool]) -> BackendResult:
    if _absent_terms(notes, parsed):
        return _not_found()
    need = parsed.needed()
    for note in order:
        if not _may_hold(note, parsed):
            continue
        lines = [ln for ln in note.lines() if not ln.header and ln.category not in ("family", "education")
                 and parsed.coverage(ln.text) >= need]
        if lines:
            best = max(parsed.coverage(ln.text) for ln in lines)
            return _result(note, [ln for ln in lines if parsed.coverage(ln.text) == best], parsed, None)
    if len(parsed.groups) < 2 or searched:
        return _not_found()
    searched.append(True)
    # paraphrase: the hybrid search ranks lines that hold at least half of the asked terms
    half = math.ceil(len(parsed.groups) / 2)
    by_chunk = {c.id: c for n in notes.notes for c in n.chunks}
    for res in tools.search(question, k=8):
        chunk = by_chunk.get(res.chunk.id)
        if chunk is None:
            continue
        for ln in _chunk_lines(chunk, use_pipeline=False):
            if not ln.header and parsed.coverage(ln.text) >= half:
                key = normalise(ln.clean)
                # the newest note with the same statement answers
                for note in order:
                    same = [x for x in note.lines() if normalise(x.clean) == key]
                    if same:
                        return _result(note, same[:1], parsed, None)
    return _not_found()
