from hypothesis import given
from hypothesis import strategies as st

from app.agent.citations import ProposedSentence, locate, split_sentences, verify
from app.retrieval.chunking import Chunk


def _chunk(text, start=100, cid="c1"):
    return Chunk(id=cid, document_id="doc-1", version="2", section="Assessment", start=start,
                 end=start + len(text), text=text)


def test_quote_found_after_normalisation_resolves_offsets():
    note = "x" * 100 + "Assessment:  Grade 2\u00a0immune-related   colitis, started prednisone."
    chunk = _chunk(note[100:])
    span = locate("grade 2 immune-related colitis", chunk)
    assert span is not None
    assert note[span[0]:span[1]] == "Grade 2\u00a0immune-related   colitis"


def test_fabricated_quote_is_unsupported():
    chunk = _chunk("Patient denies diarrhea. No colitis.")
    out = verify([ProposedSentence("Patient has colitis.", (("c1", "patient has severe colitis"),))],
                 {"c1": chunk})
    assert out[0].supported is False and out[0].citations == ()


def test_unknown_chunk_and_too_short_quote_fail():
    chunk = _chunk("Patient denies diarrhea.")
    out = verify([ProposedSentence("a", (("nope", "Patient denies diarrhea"),)),
                  ProposedSentence("b", (("c1", "denies"),))], {"c1": chunk})
    assert [s.supported for s in out] == [False, False]


@given(st.text(min_size=20, max_size=200), st.integers(0, 10), st.integers(10, 19))
def test_any_verbatim_substring_is_located(text, a, length):
    chunk = _chunk(text, start=0)
    quote = text[a:a + length]
    span = locate(quote, chunk)
    if len(quote.split()) and len(" ".join(quote.split())) >= 8:
        assert span is not None


def test_split_sentences():
    text = "HPI: Doing well. Denies cough.\nPlan: Continue therapy."
    spans = split_sentences(text)
    assert [text[a:b] for a, b in spans] == ["HPI: Doing well.", "Denies cough.", "Plan: Continue therapy."]
