"""Chunking: sections, token bounds, overlap, and offsets into the original text."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.retrieval.chunking import Chunk, approximate_tokens, chunk_text, split_sections

NOTE = """Patient seen in clinic today.
History of Present Illness: 62 year old with two weeks of cough and fever.
He reports night sweats.
Review of Systems:
Negative except as above.
Medications: lisinopril 10 mg daily
ASSESSMENT/PLAN
Community acquired pneumonia. Start amoxicillin.
Plan: chest x-ray in 6 weeks.
"""


def names(text: str) -> list[str | None]:
    return [name for name, _, _ in split_sections(text)]


def test_split_sections_headers() -> None:
    assert names(NOTE) == [None, "History of Present Illness", "Review of Systems", "Medications",
                           "ASSESSMENT/PLAN", "Plan"]
    spans = split_sections(NOTE)
    assert NOTE[spans[1][1]:].startswith("History of Present Illness:")
    assert NOTE[spans[4][1]:].startswith("ASSESSMENT/PLAN")


@pytest.mark.parametrize("header", ["HPI:", "Assessment and Plan:", "Impression:", "Findings:",
                                    "  Assessment:", "assessment & plan:", "IMPRESSION"])
def test_split_sections_variants(header: str) -> None:
    text = f"Intro line.\n{header} text here\nmore\n"
    spans = split_sections(text)
    assert len(spans) == 2
    assert spans[1][0] is not None
    assert text[spans[1][1]:].startswith(header.strip())


def test_not_headers() -> None:
    text = "Planned follow up. The assessment: fine.\nthe patient is well\nBP: 120/80\n"
    assert names(text) == [None]


def test_assessment_and_plan_wins_over_assessment() -> None:
    assert names("Assessment and Plan: rest")[0] == "Assessment and Plan"


def test_empty_and_whitespace_documents() -> None:
    assert chunk_text("d", "1", "") == []
    assert chunk_text("d", "1", " \n\t \u00a0\n") == []
    assert split_sections("   ") == []


def test_short_note_one_chunk_per_section() -> None:
    chunks = chunk_text("doc-1", "2", NOTE)
    assert [c.section for c in chunks] == names(NOTE)
    for c in chunks:
        assert NOTE[c.start:c.end] == c.text
        assert c.text == c.text.strip()
        assert c.document_id == "doc-1" and c.version == "2"
    assert len({c.id for c in chunks}) == len(chunks)
    assert chunks == chunk_text("doc-1", "2", NOTE)  # stable ids and spans


def test_long_section_is_split_with_overlap_on_sentences() -> None:
    body = " ".join(f"Sentence number {i} describes finding {i}." for i in range(60))
    text = "Findings: " + body
    chunks = chunk_text("d", None, text, max_tokens=40, overlap_tokens=10)
    assert len(chunks) > 3
    for c in chunks:
        assert approximate_tokens(c.text) <= 40
        assert c.section == "Findings"
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end  # overlap
        assert b.start > a.start
    # Cut on sentence ends where possible.
    assert sum(c.text.endswith(".") for c in chunks) >= len(chunks) - 1


def test_no_overlap() -> None:
    text = "Plan: " + " ".join(["word"] * 100)
    chunks = chunk_text("d", "1", text, max_tokens=10, overlap_tokens=0)
    assert all(b.start >= a.end for a, b in zip(chunks, chunks[1:], strict=False))


def test_word_longer_than_limit_is_cut() -> None:
    text = "Findings: " + "x" * 50
    chunks = chunk_text("d", "1", text, max_tokens=3, count_tokens=lambda s: -(-len(s) // 10))
    assert "".join(c.text for c in chunks if c.text.startswith("x")) == "x" * 50
    assert all(-(-len(c.text) // 10) <= 3 for c in chunks)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        chunk_text("d", "1", "text", max_tokens=0)
    with pytest.raises(ValueError):
        chunk_text("d", "1", "text", overlap_tokens=-1)


def test_chunk_is_frozen() -> None:
    c = Chunk(id="a", document_id="d", version=None, section=None, start=0, end=1, text="x")
    with pytest.raises(AttributeError):
        c.text = "y"  # type: ignore[misc]


# -- properties ---------------------------------------------------------------------------------

COUNTERS: dict[str, Callable[[str], int]] = {
    "approx": approximate_tokens,
    "chars": len,  # not additive over words: checks the real count is enforced
    "quarter": lambda s: -(-len(s.encode("utf-8")) // 4),
}

texts = st.lists(
    st.one_of(
        st.text(min_size=0, max_size=40),
        st.sampled_from(["\nAssessment: ", "\nPLAN\n", "\nHPI:", ". ", "\n\n", " ", "é漢字🙂 ",
                         "\u00a0", "\r\n", "Impression:", "\nMedications:\n"]),
    ),
    max_size=40,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=texts, max_tokens=st.integers(1, 40), overlap=st.integers(0, 20),
       counter=st.sampled_from(sorted(COUNTERS)))
def test_chunks_index_the_original_text(text: str, max_tokens: int, overlap: int,
                                        counter: str) -> None:
    count = COUNTERS[counter]
    chunks = chunk_text("doc", "1", text, max_tokens=max_tokens, overlap_tokens=overlap,
                        count_tokens=count)
    sections = split_sections(text)
    covered = [False] * len(text)
    for c in chunks:
        assert 0 <= c.start < c.end <= len(text)
        assert text[c.start:c.end] == c.text
        assert c.text.strip() == c.text
        # Within the limit, unless a single character is already over it.
        assert count(c.text) <= max_tokens or c.end - c.start == 1
        # Never spans two sections.
        assert any(s <= c.start and c.end <= e and name == c.section for name, s, e in sections)
        for i in range(c.start, c.end):
            covered[i] = True
    # Nothing is lost: every non-whitespace character is in some chunk.
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())
    assert len({c.id for c in chunks}) == len(chunks)
    starts = [c.start for c in chunks]
    assert starts == sorted(starts)
    if not text.strip():
        assert chunks == []
