"""ChunkIndex: dense, sparse and fused search, the allow filter, replacement and removal."""

from __future__ import annotations

import numpy as np
import pytest

from app.retrieval.chunking import Chunk, chunk_text
from app.retrieval.embeddings import Embedder
from app.retrieval.index import RRF_K, ChunkIndex
from tests.unit.test_embeddings import shared_embedder

NOTES = {
    "doc-cardio": "Assessment: Acute myocardial infarction; the patient was taken for cardiac "
                  "catheterization and a stent was placed.",
    "doc-pulm": "Impression: Community acquired pneumonia, treated with oral amoxicillin.",
    "doc-onc": "Plan: Continue pembrolizumab 200 mg every three weeks; thyroid tests next visit.",
    "doc-derm": "Findings: Mild eczema on both forearms; emollients advised.",
}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return shared_embedder()


def make_chunks(doc_id: str, text: str, version: str | None = "1") -> list[Chunk]:
    return chunk_text(doc_id, version, text)


@pytest.fixture(scope="module")
def corpus(embedder: Embedder) -> tuple[list[Chunk], np.ndarray]:
    chunks = [c for doc_id, text in NOTES.items() for c in make_chunks(doc_id, text)]
    return chunks, embedder.encode([c.text for c in chunks])


@pytest.fixture
def index(embedder: Embedder, corpus: tuple[list[Chunk], np.ndarray]) -> ChunkIndex:
    idx = ChunkIndex(embedder.dim)
    idx.add(*corpus)
    return idx


def query(embedder: Embedder, idx: ChunkIndex, text: str, **kwargs: object) -> list[str]:
    results = idx.search(embedder.encode([text])[0], text, **kwargs)  # type: ignore[arg-type]
    return [r.chunk.document_id for r in results]


def test_dense_finds_the_semantically_right_chunk(embedder: Embedder, index: ChunkIndex) -> None:
    # No word in common with the cardiology note: only meaning can find it.
    assert query(embedder, index, "heart attack", k=1, mode="dense") == ["doc-cardio"]
    results = index.search(embedder.encode(["lung infection"])[0], "lung infection", mode="dense")
    assert results[0].chunk.document_id == "doc-pulm"
    assert results[0].dense_rank == 1 and results[0].sparse_rank is None
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_sparse_finds_an_exact_rare_term(embedder: Embedder, index: ChunkIndex) -> None:
    results = index.search(np.zeros(embedder.dim, np.float32), "pembrolizumab dose", mode="sparse")
    assert [r.chunk.document_id for r in results] == ["doc-onc"]  # only chunks with a term match
    assert results[0].sparse_rank == 1 and results[0].dense_rank is None and results[0].score > 0
    assert index.search(np.zeros(embedder.dim, np.float32), "zebra", mode="sparse") == []


def test_hybrid_fuses_both_rankings(embedder: Embedder, index: ChunkIndex) -> None:
    text = "immunotherapy pembrolizumab"
    results = index.search(embedder.encode([text])[0], text, k=4, mode="hybrid")
    top = results[0]
    assert top.chunk.document_id == "doc-onc"
    assert top.dense_rank is not None and top.sparse_rank == 1
    expected = 1 / (RRF_K + top.dense_rank) + 1 / (RRF_K + top.sparse_rank)
    assert top.score == pytest.approx(expected)
    assert len(results) == 4  # dense ranks every chunk; sparse only the matching one
    assert all(r.sparse_rank is None for r in results[1:])


def test_allow_filter_removes_denied_chunks_before_ranking(embedder: Embedder,
                                                           index: ChunkIndex) -> None:
    text = "pembrolizumab heart attack"
    for mode in ("dense", "sparse", "hybrid"):
        results = index.search(embedder.encode([text])[0], text, k=10, mode=mode,
                               allow=lambda c: c.document_id not in ("doc-onc", "doc-cardio"))
        ids = {r.chunk.document_id for r in results}
        assert not ids & {"doc-onc", "doc-cardio"}, mode
        ranks = [r.dense_rank or r.sparse_rank for r in results]
        assert 1 in ranks or not results  # ranks are counted among allowed chunks only
    assert index.search(embedder.encode([text])[0], text, allow=lambda c: False) == []


def test_remove_document(embedder: Embedder, index: ChunkIndex) -> None:
    before = len(index)
    index.remove_document("doc-onc")
    assert "doc-onc" not in index.document_ids
    assert len(index) == before - 1
    assert "doc-onc" not in query(embedder, index, "pembrolizumab", k=10, mode="hybrid")
    assert index.search(np.zeros(embedder.dim, np.float32), "pembrolizumab", mode="sparse") == []
    index.remove_document("doc-unknown")  # no error
    assert len(index) == before - 1


def test_new_version_replaces_older_chunks(embedder: Embedder, index: ChunkIndex) -> None:
    text = "Plan: Switch to nivolumab; pembrolizumab stopped."
    chunks = make_chunks("doc-onc", text, version="2")
    index.add(chunks, embedder.encode([c.text for c in chunks]))
    onc = [c for c in index.chunks() if c.document_id == "doc-onc"]
    assert {c.version for c in onc} == {"2"}
    assert len(index) == len(NOTES)
    # Re-adding the same chunks replaces them instead of duplicating.
    index.add(chunks, embedder.encode([c.text for c in chunks]))
    assert len(index) == len(NOTES)
    hits = index.search(np.zeros(embedder.dim, np.float32), "nivolumab", mode="sparse")
    assert [r.chunk.version for r in hits] == ["2"]


def test_empty_index_returns_nothing() -> None:
    idx = ChunkIndex(8)
    assert len(idx) == 0 and idx.document_ids == set()
    for mode in ("dense", "sparse", "hybrid"):
        assert idx.search(np.ones(8, np.float32), "anything", mode=mode) == []


def test_rejects_bad_input() -> None:
    idx = ChunkIndex(4)
    chunk = Chunk(id="d:1:0", document_id="d", version="1", section=None, start=0, end=4,
                  text="text")
    with pytest.raises(ValueError):
        idx.add([chunk], np.ones((1, 3), np.float32))
    with pytest.raises(ValueError):
        idx.add([chunk, chunk], np.ones((2, 4), np.float32))
    idx.add([chunk], np.ones((1, 4), np.float32))
    with pytest.raises(ValueError):
        idx.search(np.ones(4, np.float32), "text", mode="fuzzy")
    with pytest.raises(ValueError):
        idx.search(np.ones(3, np.float32), "text", mode="dense")


def _random_unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_switches_to_hnsw_above_threshold_and_filters() -> None:
    rng = np.random.default_rng(7)
    dim, n = 16, 300
    chunks = [Chunk(id=f"d{i}:1:0", document_id=f"d{i}", version="1", section=None, start=0,
                    end=8, text=f"note {i}") for i in range(n)]
    vectors = _random_unit(rng, n, dim)
    idx = ChunkIndex(dim, approximate_threshold=100)
    idx.add(chunks[:50], vectors[:50])
    assert not idx.approximate
    idx.add(chunks[50:], vectors[50:])
    assert idx.approximate
    target = 123
    hits = idx.search(vectors[target], "", k=3, mode="dense")
    assert hits[0].chunk.document_id == f"d{target}"
    hits = idx.search(vectors[target], "", k=3, mode="dense",
                      allow=lambda c: c.document_id != f"d{target}")
    assert hits and all(h.chunk.document_id != f"d{target}" for h in hits)
    for i in range(0, 250, 50):
        idx.remove_document(f"d{i}")
    idx.remove_document(f"d{target}")
    assert len(idx) == n - 6
    assert idx.search(vectors[target], "", k=1, mode="dense")[0].chunk.document_id != f"d{target}"
