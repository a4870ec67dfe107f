"""Retrieval quality on a labelled query set: recall@k and MRR per search mode.

Rankings are judged per document: the chunk results of a query are collapsed
to documents in order of first appearance (a note found twice counts once).

- recall@k = |relevant ∩ top k documents| / min(|relevant|, k), so a query
  with more relevant notes than k can still reach 1.0;
- MRR = mean of 1 / rank of the first relevant document (0 when none is found
  within the search depth).

The queries come from ``synthetic_data/gold/retrieval_queries.json``:
``{"id", "patient", "query", "relevant_documents": [...]}``. Only query ids,
counts and scores leave this module, never note text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from app.retrieval.indexer import PatientChart

SEARCH_DEPTH = 50  # chunk results per query before collapsing to documents


@dataclass(frozen=True)
class LabelledQuery:
    id: str
    patient: str
    query: str
    relevant: frozenset[str]


@dataclass(frozen=True)
class QualityScore:
    mode: str
    queries: int
    recall_at_k: float
    mrr: float
    hit_at_k: float  # share of queries with at least one relevant document in the top k
    k: int

    def as_dict(self) -> dict[str, float | int | str]:
        return {"mode": self.mode, "queries": self.queries, "k": self.k,
                "recall_at_k": round(self.recall_at_k, 4), "mrr": round(self.mrr, 4),
                "hit_at_k": round(self.hit_at_k, 4)}


def load_queries(path: str | Path) -> list[LabelledQuery]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    items = data["queries"] if isinstance(data, dict) else data
    return [LabelledQuery(id=q["id"], patient=q["patient"], query=q["query"],
                          relevant=frozenset(q["relevant_documents"])) for q in items]


def document_ranking(chunk_document_ids: Iterable[str]) -> list[str]:
    """Documents in order of their first chunk."""
    seen: dict[str, None] = {}
    for doc in chunk_document_ids:
        seen.setdefault(doc, None)
    return list(seen)


def recall_at(ranking: list[str], relevant: frozenset[str], k: int) -> float:
    if not relevant:
        raise ValueError("a labelled query needs at least one relevant document")
    return len(set(ranking[:k]) & relevant) / min(len(relevant), k)


def reciprocal_rank(ranking: list[str], relevant: frozenset[str]) -> float:
    return next((1.0 / i for i, doc in enumerate(ranking, start=1) if doc in relevant), 0.0)


Ranker = Callable[[PatientChart, str], list[str]]


def chart_ranker(mode: str, depth: int = SEARCH_DEPTH) -> Ranker:
    """Document ranking through ``PatientChart.search`` (query embedding + query-time filter)."""

    def rank(chart: PatientChart, query: str) -> list[str]:
        return document_ranking(r.chunk.document_id
                                for r in chart.search(query, k=depth, mode=mode))

    return rank


def evaluate(charts: Mapping[str, PatientChart], queries: Iterable[LabelledQuery], mode: str,
             *, k: int = 5, ranker: Ranker | None = None) -> tuple[QualityScore, dict[str, float]]:
    """Score one mode; also returns recall@k per query id (for finding regressions)."""
    rank = ranker or chart_ranker(mode)
    recalls: dict[str, float] = {}
    rr: list[float] = []
    hits = 0
    for q in queries:
        ranking = rank(charts[q.patient], q.query)
        recalls[q.id] = recall_at(ranking, q.relevant, k)
        rr.append(reciprocal_rank(ranking, q.relevant))
        hits += bool(set(ranking[:k]) & q.relevant)
    n = len(rr)
    if n == 0:
        raise ValueError("no queries")
    return QualityScore(mode=mode, queries=n, recall_at_k=sum(recalls.values()) / n,
                        mrr=sum(rr) / n, hit_at_k=hits / n, k=k), recalls
