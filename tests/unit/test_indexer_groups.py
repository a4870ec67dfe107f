"""Embedding groups: large groups for throughput, but the group that completes the newest
EARLY_START_NOTES notes is embedded on its own, so a large group never delays early start."""

from __future__ import annotations

from pathlib import Path

from app.retrieval import indexer
from app.retrieval.bundles import BundleClient
from app.retrieval.embeddings import HashingEmbedder
from app.retrieval.indexer import EARLY_START_NOTES, load_chart
from app.retrieval.policy import RolePolicy
from app.smart.scopes import Grants

BUNDLES = Path(__file__).resolve().parents[2] / "synthetic_data" / "bundles"
PATIENT = "pat-onc-02"  # 38 notes


class DoneAtEachCall(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.chart = None
        self.done_at: list[int] = []

    def encode(self, texts):  # type: ignore[no-untyped-def, override]
        if self.chart is not None:
            self.done_at.append(self.chart.progress.done)
        return super().encode(texts)


def _build(monkeypatch, group_chunks: int):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(indexer, "EMBED_GROUP_CHUNKS", group_chunks)
    embedder = DoneAtEachCall()
    real_open = indexer.open_chart

    def open_chart(*args, **kwargs):  # type: ignore[no-untyped-def]
        chart = real_open(*args, **kwargs)
        embedder.chart = chart
        return chart

    monkeypatch.setattr(indexer, "open_chart", open_chart)
    client = BundleClient.from_paths([BUNDLES / "00-practitioners.json", BUNDLES / f"{PATIENT}.json"])
    chart = load_chart(client, PATIENT, grants=Grants.parse("patient/*.read"), role="clinician",
                       policy=RolePolicy.default(), embedder=embedder)
    return chart, embedder


def test_a_large_group_still_ends_with_the_newest_notes(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    chart, embedder = _build(monkeypatch, 100_000)
    assert chart.progress.state == "ready" and chart.progress.total > EARLY_START_NOTES
    # two model calls: the newest notes, then everything else
    assert embedder.done_at == [0, EARLY_START_NOTES]


def test_groups_fill_to_the_chunk_count(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    small, small_emb = _build(monkeypatch, 1)
    assert len(small_emb.done_at) == len(small.index.document_ids)  # one call per note with chunks
    large, large_emb = _build(monkeypatch, 64)
    assert 2 <= len(large_emb.done_at) < len(small_emb.done_at)
    assert EARLY_START_NOTES in large_emb.done_at  # a group starts right after the newest notes
    assert [c.id for c in large.index.chunks()] == [c.id for c in small.index.chunks()]
