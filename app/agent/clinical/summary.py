"""The offline pre-visit chart summary: extractive, every line cited, bounded on large charts.

``summarize(tools)`` makes exactly two tool calls (``conditions()`` and ``read_notes()``; never
the same call twice, so the runtime's loop guard, meant for model backends, cannot trip) and
walks the notes newest first, filling these slots and stopping each one when it is full:

- **Active problems**: coded Conditions with an active status (administrative and social
  context such as "medication review due" or employment left out, ``vocab/summary.yaml``),
  each cited with its newest verbatim mention in a note; one the notes never mention stays
  uncited, and the citation check marks it *unsupported*.
- **Recent assessments**: non-routine lines of Assessment sections of the last 12 months.
- **Current medications** and **allergies**: the newest note that lists them (no medication list
  anywhere: the newest lines naming a drug of ``vocab/synonyms.yaml``, said as such).
- **Latest vital signs** (the newest note that records them; "none recorded" does not count)
  and **labs** (a labs section, a lab list, or lab values named with a number): the newest
  note naming each distinct test, up to ``limits.labs`` tests.
- **Recent encounters**: the newest notes with their reason and assessment.
- **Hospitalisations and key events**: admissions, emergency visits, surgery, discharge
  within the 12 months before the newest note (the chart's own clock, not the wall clock).

Sections and lines come from ``app.agent.clinical.question.NoteSet``. Text from a suspected
injection is never quoted. No note text is logged.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.agent.backends import BackendResult, Tools
from app.agent.citations import MIN_QUOTE_CHARS, ProposedSentence, normalise
from app.agent.clinical.question import (
    Line,
    Note,
    NoteSet,
    _drug_name_regex,
    _list_block,
    _regexes,
    _title_key,
    vocab,
)

ACTIVE_STATUSES = frozenset({"active", "recurrence", "relapse", "unknown"})
# sections whose lines are never lab results ("potassium" in "penicillin v potassium 250 mg")
_NOT_LABS = frozenset({"family", "education", "medications", "allergies", "social", "ros"})
_NO_MEDS = frozenset({"family", "education", "allergies"})


@functools.cache
def _cfg() -> dict:
    return vocab("summary.yaml")


@functools.cache
def _patterns(key: str) -> tuple[re.Pattern[str], ...]:
    return _regexes(_cfg()[key])


def _limit(key: str) -> int:
    return int(_cfg()["limits"][key])


def condition_variants(name: str) -> list[str]:
    """The coded display, then shorter forms a note is likely to use, longest first.

    "Malignant melanoma, stage IV (disorder)" → ["Malignant melanoma, stage IV (disorder)",
    "Malignant melanoma, stage IV", "Malignant melanoma"]. Forms shorter than 8 characters are
    dropped: too short a quote proves nothing.
    """
    forms = [name]
    base = re.sub(r"\s*\([^)]*\)", "", name).strip()
    forms.append(base)
    forms.append(re.split(r"[,;:]", base)[0].strip())
    out: list[str] = []
    for form in forms:
        if len(form) >= 8 and form.lower() not in (f.lower() for f in out):
            out.append(form)
    return out


@dataclass
class _Pending:
    display: str
    status: str
    forms: list[tuple[str, re.Pattern[str]]]
    evidence: tuple[str, str] | None = None


def _day(note: Note) -> str:
    return f"[{note.day}] " if note.day else ""


def _clip(text: str) -> str:
    limit = _limit("max_line_chars")
    if len(text) <= limit:
        return text
    cut = max(text.rfind(";", 0, limit), text.rfind(",", 0, limit))
    return text[: cut if cut > limit // 2 else limit].rstrip(" ;,") + " …"


def _sentence(prefix: str, lines: list[Line], label: str) -> ProposedSentence:
    texts, evidence = [], []
    for ln in lines:
        texts.append(ln.clean.rstrip(".;:"))
        evidence.append((ln.chunk.id, ln.quote()))
    return ProposedSentence(text=f"{prefix}{label}: {_clip('; '.join(texts))}.", evidence=tuple(evidence))


def _problems(tools: Tools, notes: NoteSet) -> list[ProposedSentence]:
    skip = _patterns("not_problems")
    pending: list[_Pending] = []
    seen: set[str] = set()
    for cond in tools.conditions():
        name, status = cond.get("display", "").strip(), cond.get("status", "unknown")
        key = name.lower()
        if len(name) < 4 or status not in ACTIVE_STATUSES or key in seen or any(p.search(name) for p in skip):
            continue
        seen.add(key)
        variants = condition_variants(name)
        short = re.split(r"[,;:]", re.sub(r"\s*\([^)]*\)", "", name))[0].strip()
        if len(short) >= 4 and short.lower() not in (v.lower() for v in variants):
            variants.append(short)  # "Asthma": quoted with its line, since alone it is too short
        forms = [(f, re.compile(r"(?<![A-Za-z0-9])" + re.escape(f) + r"(?![A-Za-z0-9])", re.IGNORECASE))
                 for f in variants]
        pending.append(_Pending(name, status, forms))
        if len(pending) >= _limit("problems"):
            break
    todo = [p for p in pending if p.forms]
    for note in notes.newest_first():
        if not todo:
            break
        for chunk in note.chunks:
            low = chunk.text.lower()
            for p in list(todo):
                for form, pattern in p.forms:
                    if form.lower() in low:
                        m = pattern.search(chunk.text)
                        if m:
                            quote = chunk.text[m.start():m.end()]
                            if len(normalise(quote)) < MIN_QUOTE_CHARS:  # the line that names it
                                start = chunk.text.rfind("\n", 0, m.start()) + 1
                                end = chunk.text.find("\n", m.end())
                                quote = chunk.text[start:end if end >= 0 else len(chunk.text)].strip()
                            p.evidence = (chunk.id, quote)
                            todo.remove(p)
                            break
    return [ProposedSentence(text=f"Active problem (coded, {p.status}): {p.display}.",
                             evidence=(p.evidence,) if p.evidence else ()) for p in pending]


def _usable(ln: Line) -> bool:
    from app.agent.clinical.question import _is_empty

    return bool(ln.clean) and not _is_empty(ln) and len(normalise(ln.quote())) >= MIN_QUOTE_CHARS


def _labs(note: Note) -> list[Line]:
    """The lab tests a note names: its labs section, a list introduced as labs, or lab values."""
    lines = [ln for ln in note.section_lines(("labs",)) if _usable(ln)]
    if lines:
        return lines
    out: list[Line] = []
    for ln in note.lines():
        if ln.category in _NOT_LABS:
            continue
        if any(p.search(ln.text) for p in _patterns("labs_intro")):  # may be a header of its own
            out += _list_block(note, ln)[1:]
        elif any(p.search(ln.text) for p in _patterns("lab_value")) \
                and not any(p.search(ln.text) for p in _patterns("lab_not")):
            out.append(ln)
    return [ln for ln in out if _usable(ln)]


def _window_start(notes: NoteSet) -> datetime | None:
    for note in notes.newest_first():
        if note.date:
            try:
                newest = datetime.fromisoformat(note.date.replace("Z", "+00:00"))
            except ValueError:
                continue
            return newest - timedelta(days=_limit("window_days"))
    return None


def _in_window(note: Note, start: datetime | None) -> bool:
    if start is None or not note.date:
        return False
    try:
        when = datetime.fromisoformat(note.date.replace("Z", "+00:00"))
    except ValueError:
        return False
    if (when.tzinfo is None) != (start.tzinfo is None):
        when, start = when.replace(tzinfo=None), start.replace(tzinfo=None)
    return when >= start


def summarize(tools: Tools) -> BackendResult:
    """The chart summary (see the module docstring); never repeats a tool call."""
    notes = NoteSet(tools)
    problems = _problems(tools, notes)
    window = _window_start(notes)
    routine, hospital = _patterns("routine"), _patterns("hospital")
    meds: ProposedSentence | None = None
    allergies: ProposedSentence | None = None
    vitals: ProposedSentence | None = None
    labs: list[ProposedSentence] = []
    seen_labs: set[str] = set()
    assessments: list[ProposedSentence] = []
    encounters: list[ProposedSentence] = []
    events: list[ProposedSentence] = []
    seen_assess: set[str] = set()
    seen_events: set[str] = set()
    for note in notes.newest_first():
        recent = _in_window(note, window)
        done_lists = meds and allergies and vitals and len(seen_labs) >= _limit("labs")
        done_recent = (not recent or (len(assessments) >= _limit("assessments")
                                      and len(events) >= _limit("events")))
        if done_lists and done_recent and (len(encounters) >= _limit("encounters") or not recent):
            break
        prefix = _day(note)
        if meds is None:
            lines = [ln for ln in note.section_lines(("medications",)) if ln.clean]
            if lines:
                meds = _sentence(prefix, lines, "Current medications (newest list)")
        if allergies is None:
            lines = [ln for ln in note.section_lines(("allergies",)) if ln.clean]
            if lines:
                allergies = _sentence(prefix, lines, "Allergies (newest list)")
        if vitals is None:
            lines = [ln for ln in note.section_lines(("vitals",)) if _usable(ln)]
            if lines:
                vitals = _sentence(prefix, lines, "Latest vital signs")
        if len(seen_labs) < _limit("labs"):
            # the newest note naming each test ("lipid panel" may be older than the last CBC)
            fresh = []
            for ln in _labs(note):
                key = normalise(ln.clean)
                if key not in seen_labs and len(seen_labs) < _limit("labs"):
                    seen_labs.add(key)
                    fresh.append(ln)
            if fresh:
                labs.append(_sentence(prefix, fresh, "Labs"))
        assess = [ln for ln in note.section_lines(("assessment",)) if _usable(ln)]
        if len(encounters) < _limit("encounters") and (recent or not encounters):
            reason = [ln for ln in note.section_lines(("reason",)) if _usable(ln)][:4]
            parts = reason + assess[:1]
            routine_visit = all(any(p.search(ln.text) for p in routine) for ln in parts)
            # the last visit always; before it, only visits with something to say
            if parts and (not encounters or not routine_visit):
                texts = [ln.clean.rstrip(".;") for ln in reason]
                label = ("reason " + "; ".join(texts)) if texts else ""
                if assess:
                    label += ("; " if label else "") + "assessment " + assess[0].clean.rstrip(".;")
                encounters.append(ProposedSentence(
                    text=f"{prefix}Encounter: {_clip(label)}.",
                    evidence=tuple((ln.chunk.id, ln.quote()) for ln in parts)))
        if recent and len(assessments) < _limit("assessments"):
            for ln in assess:
                key = normalise(ln.clean)
                if key in seen_assess or any(p.search(ln.text) for p in routine):
                    continue
                seen_assess.add(key)
                assessments.append(_sentence(prefix, [ln], "Assessment"))
                if len(assessments) >= _limit("assessments"):
                    break
        if recent and len(events) < _limit("events"):
            for ln in note.lines():
                if ln.header or ln.category in ("family", "education", "ros", "allergies", "medications",
                                                "social", "problems"):
                    continue
                if not any(p.search(ln.text) for p in hospital) or not _usable(ln):
                    continue
                key = normalise(ln.clean)
                if key in seen_events:
                    continue
                seen_events.add(key)
                events.append(_sentence(prefix, [ln], "Event"))
                if len(events) >= _limit("events"):
                    break
    if meds is None:  # no medication list in any note: the newest lines that name a drug
        drug = _drug_name_regex()
        for note in notes.newest_first():
            lines = [ln for ln in note.lines() if not ln.header and ln.category not in _NO_MEDS
                     and drug.search(ln.text) and _usable(ln)]
            if lines:
                meds = _sentence(_day(note), lines[:4], "Medications mentioned (no medication list found)")
                break
    out = list(problems) + assessments
    out += [s for s in (meds, allergies, vitals) if s is not None] + labs
    out += encounters + events
    notes_out = [f"{len(notes)} permitted notes; newest first; last 12 months counted from the newest note."]
    if not out:
        notes_out.insert(0, "The permitted record holds no notes or coded problems to summarise.")
    return BackendResult(sentences=out, notes=notes_out)


__all__ = ["condition_variants", "summarize", "_title_key"]
