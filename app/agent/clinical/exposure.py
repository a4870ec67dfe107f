"""Checkpoint-inhibitor exposure from the notes: given vs named-but-not-given, remote prior courses,
and the first-dose date.

A mention counts as given when ConText (``rules/exposure.yaml``) marks it GIVEN and not NOT_GIVEN,
or when it has neither and its note documents an administration ("Cycle 1 given today", "C3D1",
"infusion"). A mention marked NOT_GIVEN (not recommended, contraindicated, omitted, planned,
delayed, declined, discussed as an option) is not exposure. A course named as long past (a year
before the note, "remote", "in 2017", "previously") is a remote prior course: it is reported, but
events are screened against the current course only. The first dose is the earliest date stated
with a start word ("started 2025-02-03", "C1D1 3/3/25"), else the date of the earliest note that
documents a dose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.agent.clinical.dates import parse_dates, years
from app.agent.clinical.grading import cue


@dataclass(frozen=True)
class IciMention:
    note_date: str
    document_id: str
    sentence: str
    start: int  # offsets in the sentence
    end: int
    agent: str
    klass: str  # ICI (a named agent) | ICI_CLASS (checkpoint inhibitor, immunotherapy)
    modifiers: frozenset[str]
    section: str | None
    note_text: str
    cue_spans: tuple[tuple[str, int, int], ...] = ()  # (category, start, end) in the sentence


@dataclass
class Exposure:
    on_ici: bool = False
    first_dose: str | None = None
    agents: set[str] = field(default_factory=set)
    remote_courses: list[str] = field(default_factory=list)  # document ids
    not_given: list[str] = field(default_factory=list)
    implied: bool = False  # no dose documented, but an event is attributed to a named agent


def is_remote(m: IciMention) -> bool:
    """A course named as long past: a year more than one before the note's, or "remote"/"years ago"."""
    note_year = int(m.note_date[:4]) if m.note_date[:4].isdigit() else None
    window = m.sentence
    if re.search(r"\bremote\b|\byears? ago\b|\bdecades? ago\b", window, re.IGNORECASE):
        return True
    if note_year and any(y < note_year - 1 for y in years(window)):
        return True
    return False


def _stated_start(m: IciMention) -> str | None:
    """A first-dose date written in the mention's sentence next to a start word."""
    starts = cue("start_words")
    for a, _b, iso in parse_dates(m.sentence):
        window = m.sentence[max(0, a - 40):a + 12]
        if starts.search(window) and iso <= m.note_date:
            return iso
    return None


def _nearest(m: IciMention) -> str | None:
    """The exposure cue nearest to the mention ("Plan: continue nivolumab" → GIVEN)."""
    best = None
    for cat, a, b in m.cue_spans:
        if cat not in ("GIVEN", "NOT_GIVEN"):
            continue
        dist = max(0, a - m.end, m.start - b)
        if best is None or dist < best[0]:
            best = (dist, cat)
    return best[1] if best else None


def find_exposure(mentions: list[IciMention]) -> Exposure:
    out = Exposure()
    admin = cue("administration")
    admin_note = cue("administration_note")
    admin_notes: dict[str, bool] = {}
    starts: list[str] = []
    given_dates: list[str] = []
    for m in mentions:
        mods = m.modifiers
        if m.document_id not in admin_notes:
            admin_notes[m.document_id] = bool(admin_note.search(m.note_text))
        if "NOT_GIVEN" in mods and "GIVEN" not in mods:
            out.not_given.append(m.document_id)
            continue
        if "NOT_GIVEN" in mods and "GIVEN" in mods and _nearest(m) == "NOT_GIVEN" and not admin.search(m.sentence):
            out.not_given.append(m.document_id)
            continue
        given = "GIVEN" in mods or admin_notes[m.document_id]
        if not given:
            continue
        if is_remote(m):
            out.remote_courses.append(m.document_id)
            continue
        out.on_ici = True
        if m.klass == "ICI":
            out.agents.add(m.agent.lower())
        stated = _stated_start(m)
        if stated:
            starts.append(stated)
        given_dates.append(m.note_date)
    if out.on_ici:
        out.first_dose = min(starts + given_dates) if (starts or given_dates) else None
    return out
