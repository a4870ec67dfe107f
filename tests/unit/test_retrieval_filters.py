"""Query-time metadata filters, result provenance (id, version, offsets, text), flat vs HNSW.

``HashingEmbedder`` stands in for the model: these tests are about filtering
and bookkeeping, not ranking quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.retrieval.bundles import BundleClient
from app.retrieval.chunking import Chunk
from app.retrieval.embeddings import HashingEmbedder
from app.retrieval.index import ChunkIndex
from app.retrieval.indexer import PatientChart, load_chart
from app.retrieval.policy import RolePolicy
from app.smart.scopes import Grants

BUNDLE = Path(__file__).resolve().parents[2] / "synthetic_data" / "bundles" / "pat-onc-01.json"


@pytest.fixture(scope="module")
def chart() -> PatientChart:
    return load_chart(BundleClient.from_paths([BUNDLE]), "pat-onc-01",
                      grants=Grants.parse("patient/*.read"), role="clinician",
                      policy=RolePolicy.default(), embedder=HashingEmbedder())


def test_results_carry_document_version_offsets_and_matched_text(chart: PatientChart) -> None:
    results = chart.search("colitis diarrhea steroid", k=10)
    assert results
    for r in results:
        c = r.chunk
        assert c.document_id in chart.documents
        assert c.version == chart.documents[c.document_id].version
        assert chart.texts[c.document_id][c.start:c.end] == c.text
        assert c.id.startswith(f"{c.document_id}:")


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_type_filter(chart: PatientChart, mode: str) -> None:
    progress = {d for d, m in chart.documents.items() if m.type_code == "11506-3"}
    assert progress and progress != set(chart.documents)
    results = chart.search("assessment plan", k=30, mode=mode, types={"11506-3"})
    assert results and {r.chunk.document_id for r in results} <= progress
    assert chart.search("assessment plan", k=5, mode=mode, types={"00000-0"}) == []


def test_date_filter_is_inclusive_and_drops_undated(chart: PatientChart) -> None:
    dates = sorted(m.date[:10] for m in chart.documents.values() if m.date)
    since, until = dates[len(dates) // 3], dates[2 * len(dates) // 3]
    results = chart.search("assessment plan", k=50, since=since, until=until)
    assert results
    for r in results:
        day = chart.documents[r.chunk.document_id].date[:10]
        assert since <= day <= until
    on_day = chart.search("assessment plan", k=50, since=dates[0], until=dates[0])
    assert {chart.documents[r.chunk.document_id].date[:10] for r in on_day} == {dates[0]}


def test_section_filter(chart: PatientChart) -> None:
    sections = {c.section for c in chart.index.chunks() if c.section}
    assert "Plan" in sections or "PLAN" in {s.upper() for s in sections}
    results = chart.search("plan continue", k=20, sections={"plan"})
    assert results and all((r.chunk.section or "").lower() == "plan" for r in results)


def test_filters_never_widen_the_policy(chart: PatientChart) -> None:
    denied = "doc-onc-01-014"  # the PSY note: not in the clinician's index at all
    assert denied not in chart.documents
    results = chart.search("psychiatry mood anxiety", k=50, types={"11488-4", "11506-3"})
    assert denied not in {r.chunk.document_id for r in results}


def _chunks(n: int) -> list[Chunk]:
    return [Chunk(id=f"d{i % 40}:1:{i}", document_id=f"d{i % 40}", version="1", section=None,
                  start=i, end=i + 5, text=f"word{i} common") for i in range(n)]


def test_flat_below_threshold_hnsw_above_with_the_same_answers() -> None:
    rng = np.random.default_rng(7)
    chunks = _chunks(600)
    vectors = rng.standard_normal((600, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    flat, hnsw = ChunkIndex(32, approximate_threshold=10_000), ChunkIndex(32, approximate_threshold=500)
    flat.add(chunks, vectors)
    hnsw.add(chunks, vectors)
    assert not flat.approximate and hnsw.approximate
    agree = 0
    for q in range(20):
        query = vectors[q * 7] + 0.05 * rng.standard_normal(32).astype(np.float32)
        allow = lambda c: c.document_id != "d3"  # noqa: E731 - a metadata filter
        a = [r.chunk.id for r in flat.search(query, "", k=5, mode="dense", allow=allow)]
        b = [r.chunk.id for r in hnsw.search(query, "", k=5, mode="dense", allow=allow)]
        assert not any(i.startswith("d3:") for i in a + b)
        agree += len(set(a) & set(b))
    assert agree / 100 >= 0.9  # HNSW recall@5 against exact search
