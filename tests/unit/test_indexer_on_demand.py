"""Vectors on demand (the CLI): chunks indexed at once, the model runs only when a search needs
it, and then gives the same vectors and the same results as an eager build (model-free)."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import pytest

from app.agent.runtime import ChartTools, Limits
from app.retrieval.bundles import BundleClient
from app.retrieval.cache import EmbeddingCache
from app.retrieval.chunking import Chunk
from app.retrieval.embeddings import HashingEmbedder
from app.retrieval.index import ChunkIndex
from app.retrieval.indexer import load_chart
from app.retrieval.policy import RolePolicy
from app.smart.scopes import Grants

BUNDLES = Path(__file__).resolve().parents[2] / "synthetic_data" / "bundles"
PATIENT = "pat-onc-01"
QUERIES = ["immune-related colitis", "prednisone taper", "thyroid function TSH", "pembrolizumab"]


def _client() -> BundleClient:
    return BundleClient.from_paths([BUNDLES / "00-practitioners.json", BUNDLES / f"{PATIENT}.json"])


def _chart(embedder: HashingEmbedder, vectors: str, cache: EmbeddingCache | None = None):  # type: ignore[no-untyped-def]
    return load_chart(_client(), PATIENT, grants=Grants.parse("patient/*.read"), role="clinician",
                      policy=RolePolicy.default(), embedder=embedder, cache=cache, vectors=vectors)


def _chunk(i: int, text: str, doc: str = "d1", version: str = "1") -> Chunk:
    return Chunk(id=f"{doc}:{version}:{i}", document_id=doc, version=version, section=None,
                 start=i, end=i + len(text), text=text)


# -- ChunkIndex: chunks first, vectors later ----------------------------------------------------

def test_index_takes_chunks_before_their_vectors() -> None:
    emb = HashingEmbedder(dim=16)
    chunks = [_chunk(0, "colitis grade two"), _chunk(20, "thyroid normal"), _chunk(40, "rash on arms")]
    index = ChunkIndex(16)
    index.add(chunks, None)
    assert len(index) == 3 and index.vectors_missing == 3
    assert index.chunks_without_vectors() == chunks
    # BM25 works at once; dense and hybrid refuse rather than rank placeholder rows
    assert [r.chunk.id for r in index.search(np.zeros(16), "thyroid", k=1, mode="sparse")] == [chunks[1].id]
    for mode in ("dense", "hybrid"):
        with pytest.raises(ValueError, match="no vector yet"):
            index.search(emb.encode(["thyroid"])[0], "thyroid", k=1, mode=mode)
    assert index.set_vectors(chunks[:2], emb.encode([c.text for c in chunks[:2]])) == 2
    assert index.chunks_without_vectors() == [chunks[2]]
    assert index.set_vectors(chunks, emb.encode([c.text for c in chunks])) == 1  # only the missing one
    assert index.vectors_missing == 0
    eager = ChunkIndex(16)
    eager.add(chunks, emb.encode([c.text for c in chunks]))
    np.testing.assert_array_equal(index._vectors, eager._vectors)
    q = emb.encode(["rash"])[0]
    assert index.search(q, "rash", k=3, mode="hybrid") == eager.search(q, "rash", k=3, mode="hybrid")


def test_replaced_chunks_drop_their_missing_vectors() -> None:
    index = ChunkIndex(8)
    old = [_chunk(0, "old text", version="1")]
    index.add(old, None)
    new = [_chunk(0, "new text", version="2")]
    index.add(new, np.ones((1, 8), dtype=np.float32) / np.sqrt(8))  # a new version replaces the old
    assert index.vectors_missing == 0 and index.chunks() == new
    assert index.set_vectors(old, np.zeros((1, 8), dtype=np.float32)) == 0  # gone: left alone
    index.add([_chunk(9, "later", doc="d2")], None)
    index.remove_document("d2")
    assert index.vectors_missing == 0
    with pytest.raises(ValueError, match="shape"):
        index.set_vectors(new, np.zeros((2, 8), dtype=np.float32))


# -- PatientChart: the CLI's on-demand build ---------------------------------------------------

def test_on_demand_build_runs_no_model_until_a_search() -> None:
    lazy_emb, eager_emb = HashingEmbedder(), HashingEmbedder()
    lazy, eager = _chart(lazy_emb, "on_demand"), _chart(eager_emb, "eager")
    assert lazy.progress.state == "ready" and lazy_emb.calls == 0 and lazy.progress.embedded == 0
    assert eager_emb.texts_encoded > 0
    # what the offline engines read is there at once, identical
    tools = ChartTools(lazy, Limits())
    assert [c.id for c in tools.read_notes()] == [c.id for c in ChartTools(eager, Limits()).read_notes()]
    assert lazy.chunks == eager.chunks and lazy.counts == eager.counts
    assert lazy.search("colitis", k=3, mode="sparse")  # BM25 needs no vector either
    assert lazy_emb.calls == 0
    # the first dense/hybrid search embeds every chunk, then ranks exactly as the eager chart
    for q in QUERIES:
        assert lazy.search(q, k=6) == eager.search(q, k=6)
        assert lazy.search(q, k=6, mode="dense") == eager.search(q, k=6, mode="dense")
    assert lazy.index.vectors_missing == 0
    assert lazy.progress.embedded == len(lazy.index)  # no cache: every chunk, as eagerly
    np.testing.assert_array_equal(lazy.index._vectors, eager.index._vectors)
    calls = lazy_emb.calls
    lazy.search(QUERIES[0], k=6)
    assert lazy_emb.calls == calls + 1  # later searches embed the query only


def test_on_demand_vectors_go_through_the_cache(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache.sqlite", secrets.token_bytes(32))
    try:
        first_emb = HashingEmbedder()
        first = _chart(first_emb, "on_demand", cache)
        assert cache.stats()["vectors"] == 0 and cache.stats()["chunkings"] > 0  # boundaries kept
        first.search(QUERIES[0], k=6)
        unique = len({c.text for c in first.index.chunks()})
        assert first.progress.embedded == unique  # repeated text embedded once
        assert first.progress.embedded + first.progress.cached == len(first.index)
        assert cache.stats()["vectors"] == unique
        again_emb = HashingEmbedder()
        again = _chart(again_emb, "on_demand", cache)
        assert again.search(QUERIES[1], k=6) == first.search(QUERIES[1], k=6)
        assert again_emb.texts_encoded == 1  # the query; every chunk came from the cache
        assert again.progress.cached == len(again.index) and again.progress.embedded == 0
    finally:
        cache.close()


def test_unknown_vector_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="vectors must be one of"):
        _chart(HashingEmbedder(), "later")


def test_chunks_added_after_the_first_search_get_vectors_at_the_next() -> None:
    emb = HashingEmbedder()
    chart = _chart(emb, "on_demand")
    chart.search(QUERIES[0], k=3)
    later = _chunk(0, "pembrolizumab infusion reaction, grade 1", doc="late-note")
    chart.documents = {**chart.documents, "late-note": next(iter(chart.documents.values()))}
    with chart.lock:
        chart.index.add([later], None)  # as a build still running would
    assert chart.index.vectors_missing == 1
    assert chart.ensure_vectors() == 1 and chart.ensure_vectors() == 0
    with chart.lock:
        chart.index.add([_chunk(50, "a second late chunk", doc="late-note")], None)
    assert chart.search("late chunk", k=3, mode="dense")  # embeds it first, never refuses
    assert chart.index.vectors_missing == 0
