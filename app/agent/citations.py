"""Citation checks (pure): every sentence must quote text found in the chunk it cites.

A quote is searched in the cited chunk after normalisation (Unicode NFKC,
case folded, typographic quotes and dashes unified, whitespace collapsed).
Found quotes resolve to the DocumentReference id, version and character
offsets into the original note; a sentence with no verified quote is marked
unsupported, never silently kept as supported.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from app.retrieval.chunking import Chunk

_TRANSLATE = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                            "\u2013": "-", "\u2014": "-", "\u00a0": " "})
MIN_QUOTE_CHARS = 8


@dataclass(frozen=True)
class Citation:
    document: str
    version: str | None
    start: int
    end: int
    quote: str
    chunk_id: str

    def public(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("chunk_id")
        return d


@dataclass(frozen=True)
class ProposedSentence:
    """What a backend claims: a sentence and (chunk id, verbatim quote) pairs."""

    text: str
    evidence: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sentence:
    text: str
    supported: bool
    citations: tuple[Citation, ...] = field(default_factory=tuple)

    def public(self) -> dict[str, object]:
        return {"text": self.text, "supported": self.supported,
                "citations": [c.public() for c in self.citations]}


def _normalise_with_map(text: str) -> tuple[str, list[int]]:
    """Normalised text plus, for each of its characters, the index in the original."""
    out: list[str] = []
    index: list[int] = []
    prev_space = True
    for i, ch in enumerate(text):
        norm = unicodedata.normalize("NFKC", ch).translate(_TRANSLATE).casefold()
        for c in norm:
            if c.isspace():
                if prev_space:
                    continue
                c = " "
                prev_space = True
            else:
                prev_space = False
            out.append(c)
            index.append(i)
    while out and out[-1] == " ":
        out.pop()
        index.pop()
    return "".join(out), index


def normalise(text: str) -> str:
    return _normalise_with_map(text)[0].strip()


def locate(quote: str, chunk: Chunk) -> tuple[int, int] | None:
    """Offsets (into the original note) of ``quote`` inside ``chunk``, or None."""
    needle = normalise(quote)
    if len(needle) < MIN_QUOTE_CHARS:
        return None
    hay, mapping = _normalise_with_map(chunk.text)
    pos = hay.find(needle)
    if pos < 0:
        return None
    start = chunk.start + mapping[pos]
    end = chunk.start + mapping[pos + len(needle) - 1] + 1
    return start, end


def verify(proposed: Sequence[ProposedSentence], chunks: Mapping[str, Chunk]) -> list[Sentence]:
    """Resolve and check every citation; unknown chunk ids and missing quotes fail."""
    out: list[Sentence] = []
    for sentence in proposed:
        cites: list[Citation] = []
        for chunk_id, quote in sentence.evidence:
            chunk = chunks.get(chunk_id)
            if chunk is None:
                continue
            span = locate(quote, chunk)
            if span is None:
                continue
            cites.append(Citation(document=chunk.document_id, version=chunk.version,
                                  start=span[0], end=span[1], quote=quote, chunk_id=chunk_id))
        out.append(Sentence(text=sentence.text, supported=bool(cites), citations=tuple(cites)))
    return out


SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n+")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end) within ``text``; line breaks end a sentence too."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in SENTENCE_END.finditer(text):
        if text[pos:m.start()].strip():
            spans.append(_trim(text, pos, m.start()))
        pos = m.end()
    if text[pos:].strip():
        spans.append(_trim(text, pos, len(text)))
    return spans


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
