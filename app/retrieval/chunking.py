"""Split a clinical note into citable chunks (pure, no I/O).

Chunks never span two sections, hold at most ``max_tokens`` tokens of the
embedder's tokenizer, overlap inside long sections, and are cut on sentence
or whitespace boundaries (inside a word only when the word alone is too
long). ``start``/``end`` index the original text: ``text[start:end] == chunk.text``,
so citations point at the note exactly as the EHR holds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

TokenCounter = Callable[[str], int]

# Headers recognised at the start of a line, followed by ":" (text may follow on the line)
# or alone on their line. Longest alternatives first so "Assessment and Plan" wins over
# "Assessment".
KNOWN_HEADERS = (
    "History of Present Illness", "HPI", "Chief Complaint", "Reason for Visit",
    "Review of Systems", "ROS", "Past Medical History", "PMH", "Past Surgical History",
    "Social History", "Family History", "Allergies", "Current Medications", "Medications",
    "Physical Examination", "Physical Exam", "Vital Signs", "Vitals",
    "Assessment and Plan", "Assessment & Plan", "Assessment/Plan", "Assessment", "Plan",
    "Impression", "Findings", "Diagnoses", "Diagnosis", "Problem List", "Hospital Course",
    "Procedures", "Results", "Labs", "Immunizations", "Discharge Instructions",
    "Follow-up", "Follow up", "Recommendations", "Subjective", "Objective",
)
_KNOWN = "|".join(re.escape(h).replace(r"\ ", r"[ \t]+")
                  for h in sorted(KNOWN_HEADERS, key=len, reverse=True))
_HEADER = re.compile(
    rf"^[ \t]*(?:\#+[ \t]*)?(?:(?P<known>{_KNOWN})[ \t]*(?::|\r?$)"  # "Plan:" or "Plan" alone
    r"|(?P<upper>(?-i:[A-Z][A-Z0-9 /&,'()-]{2,60}?))[ \t]*:?[ \t]*\r?$"  # "ASSESSMENT/PLAN" alone
    rf"|(?P<caps>{_KNOWN})(?=[ \t]))",  # "IMPRESSION Mild ..." (upper case only, checked below)
    re.MULTILINE | re.IGNORECASE,
)
_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"[.!?;][\"')\]]*$")
_APPROX_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class Chunk:
    id: str
    document_id: str
    version: str | None
    section: str | None
    start: int
    end: int
    text: str  # == original[start:end]


def approximate_tokens(text: str) -> int:
    """Default token count: words and punctuation marks (close to WordPiece for English)."""
    return len(_APPROX_TOKEN.findall(text))


def chunk_id(document_id: str, version: str | None, start: int) -> str:
    """Stable id: the same note version always yields the same ids."""
    return f"{document_id}:{version or '-'}:{start}"


def split_sections(text: str) -> list[tuple[str | None, int, int]]:
    """Sections as (header name or None for a preamble, start, end); headers stay in their span.

    Spans are in order, do not overlap, and together hold every non-whitespace
    character. Whitespace-only spans are left out.
    """
    starts: list[tuple[int, str | None]] = [(0, None)]
    for m in _HEADER.finditer(text):
        name = m.group("known")
        if name is None:
            name = m.group("upper") or m.group("caps")
            # IGNORECASE lets lower case through: these two kinds must be written in capitals.
            if not name.isupper() or sum(ch.isalpha() for ch in name) < 2:
                continue
        start = m.start() + (len(m.group(0)) - len(m.group(0).lstrip()))
        if start == 0:
            starts[0] = (0, " ".join(name.split()))
        else:
            starts.append((start, " ".join(name.split())))
    spans: list[tuple[str | None, int, int]] = []
    for i, (start, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        if text[start:end].strip():
            spans.append((name, start, end))
    return spans


def _fits_prefix(text: str, start: int, end: int, max_tokens: int, count: TokenCounter) -> int:
    """Largest e in (start, end] with count(text[start:e]) <= max_tokens (at least start + 1)."""
    lo, hi = start + 1, end
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(text[start:mid]) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _pieces(text: str, start: int, end: int, max_tokens: int, count: TokenCounter,
            ) -> list[tuple[int, int]]:
    """Words of text[start:end]; a word longer than max_tokens is cut into fitting parts."""
    out: list[tuple[int, int]] = []
    for m in _WORD.finditer(text, start, end):
        a, b = m.start(), m.end()
        while a < b and count(text[a:b]) > max_tokens:
            cut = _fits_prefix(text, a, b, max_tokens, count)
            out.append((a, cut))
            a = cut
        if a < b:
            out.append((a, b))
    return out


def _is_sentence_end(text: str, piece: tuple[int, int], next_start: int | None) -> bool:
    if _SENTENCE_END.search(text[piece[0]:piece[1]]):
        return True
    return next_start is not None and "\n" in text[piece[1]:next_start]


def _windows(text: str, pieces: list[tuple[int, int]], max_tokens: int, overlap_tokens: int,
             count: TokenCounter) -> list[tuple[int, int]]:
    """Piece-index windows [i, j] (inclusive) covering all pieces, with overlap."""
    cache: dict[str, int] = {}

    def cost(p: tuple[int, int]) -> int:
        word = text[p[0]:p[1]]
        if word not in cache:
            cache[word] = count(word)
        return cache[word]

    costs = [cost(p) for p in pieces]
    n = len(pieces)
    ends = [_is_sentence_end(text, pieces[k], pieces[k + 1][0] if k + 1 < n else None)
            for k in range(n)]
    windows: list[tuple[int, int]] = []
    i = 0
    while i < n:
        j, total = i, costs[i]
        while j + 1 < n and total + costs[j + 1] <= max_tokens:
            j += 1
            total += costs[j]
        # The per-word sum is exact for WordPiece; check the real count and shrink if needed.
        while j > i and count(text[pieces[i][0]:pieces[j][1]]) > max_tokens:
            j -= 1
        if j + 1 < n:  # prefer to end on a sentence if that keeps at least half the window
            half = sum(costs[i:j + 1]) / 2
            running = 0
            best = None
            for k in range(i, j + 1):
                running += costs[k]
                if ends[k] and running >= half:
                    best = k
            if best is not None:
                j = best
        windows.append((i, j))
        if j + 1 >= n:
            break
        budget = min(overlap_tokens, sum(costs[i:j + 1]) // 2)
        k, used = j + 1, 0
        while k - 1 > i and used + costs[k - 1] <= budget:
            k -= 1
            used += costs[k]
        for s in range(k, j + 1):  # start the overlap on a sentence when one begins inside it
            if ends[s - 1]:
                k = s
                break
        i = k
    return windows


def chunk_text(
    document_id: str,
    version: str | None,
    text: str,
    *,
    max_tokens: int = 200,
    overlap_tokens: int = 32,
    count_tokens: TokenCounter | None = None,
) -> list[Chunk]:
    """Chunks of one note version, in text order. Empty or whitespace-only text gives []."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if overlap_tokens < 0:
        raise ValueError("overlap_tokens must not be negative")
    count = count_tokens or approximate_tokens
    chunks: list[Chunk] = []
    for section, s_start, s_end in split_sections(text):
        pieces = _pieces(text, s_start, s_end, max_tokens, count)
        if not pieces:
            continue
        first, last = pieces[0][0], pieces[-1][1]
        if count(text[first:last]) <= max_tokens:
            windows = [(0, len(pieces) - 1)]
        else:
            windows = _windows(text, pieces, max_tokens, overlap_tokens, count)
        for i, j in windows:
            start, end = pieces[i][0], pieces[j][1]
            chunks.append(Chunk(id=chunk_id(document_id, version, start), document_id=document_id,
                                version=version, section=section, start=start, end=end,
                                text=text[start:end]))
    return chunks
