"""In-memory hybrid index of one patient's permitted chunks: faiss (dense) + BM25 (sparse).

Dense search is inner product over L2-normalised vectors (cosine): an exact
``IndexFlatIP`` for small indexes, ``IndexHNSWFlat`` above a threshold.
Sparse search is BM25 (bm25s, rebuilt lazily after changes). Hybrid search
fuses both rankings by reciprocal rank fusion (Cormack et al., 2009, k=60).
The ``allow`` filter is applied before ranking (defence in depth): a denied
chunk never takes a rank, a score or a place in the results.

Chunks may be added before their vectors (``add(chunks, None)``): they are listed and
searchable by BM25 at once, and ``set_vectors`` fills them in later. Dense and hybrid
search refuse while any vector is missing, so a ranking never mixes in placeholder rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import bm25s
import faiss
import numpy as np

from app.retrieval.chunking import Chunk

RRF_K = 60
MODES = ("dense", "sparse", "hybrid")
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
MIN_CANDIDATES = 50  # depth of each ranking fed to the fusion


@dataclass(frozen=True)
class SearchResult:
    chunk: Chunk
    score: float  # cosine (dense), BM25 (sparse) or fused RRF score (hybrid)
    dense_rank: int | None  # 1-based rank in the dense ranking, None if not ranked
    sparse_rank: int | None  # 1-based rank in the BM25 ranking, None if no term matched


class ChunkIndex:
    """Chunks with their vectors; not thread-safe (callers hold a lock)."""

    def __init__(self, dim: int, *, approximate_threshold: int = 20000) -> None:
        if dim < 1:
            raise ValueError("dim must be positive")
        self.dim = dim
        self.approximate_threshold = approximate_threshold
        self._chunks: list[Chunk] = []
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._faiss: faiss.Index = faiss.IndexFlatIP(dim)
        self._bm25: bm25s.BM25 | None = None
        self._bm25_stale = True
        self._unembedded: set[str] = set()  # ids of chunks added without their vector yet

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def document_ids(self) -> set[str]:
        return {c.document_id for c in self._chunks}

    @property
    def approximate(self) -> bool:
        return isinstance(self._faiss, faiss.IndexHNSWFlat)

    def chunks(self) -> list[Chunk]:
        return list(self._chunks)

    # -- changes -------------------------------------------------------------------------

    @property
    def vectors_missing(self) -> int:
        """How many chunks were added without a vector and have none yet."""
        return len(self._unembedded)

    def chunks_without_vectors(self) -> list[Chunk]:
        """The chunks still waiting for their vector (``add(chunks, None)``), in index order."""
        return [c for c in self._chunks if c.id in self._unembedded]

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray | None) -> None:
        """Add chunks with their vectors (row i belongs to chunks[i]).

        ``vectors`` None: the chunks come without vectors for now (listed and found by
        BM25 at once; ``set_vectors`` gives them theirs). Re-adding a chunk id replaces
        it; adding a new version of a document removes every chunk of its older versions.
        """
        pending = vectors is None
        if pending:
            vectors = np.zeros((len(chunks), self.dim), dtype=np.float32)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(chunks), self.dim):
            raise ValueError(f"vectors must have shape ({len(chunks)}, {self.dim})")
        if not chunks:
            return
        ids = [c.id for c in chunks]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate chunk ids in one add()")
        incoming_ids = set(ids)
        versions: dict[str, set[str | None]] = {}
        for c in chunks:
            versions.setdefault(c.document_id, set()).add(c.version)
        def replaced(c: Chunk) -> bool:
            older = c.document_id in versions and c.version not in versions[c.document_id]
            return c.id in incoming_ids or older

        keep = [i for i, c in enumerate(self._chunks) if not replaced(c)]
        if len(keep) < len(self._chunks):
            self._chunks = [self._chunks[i] for i in keep]
            self._vectors = self._vectors[keep]
            self._unembedded &= {c.id for c in self._chunks}
            self._chunks.extend(chunks)
            self._vectors = np.vstack([self._vectors, vectors])
            self._rebuild_dense()
        else:
            self._chunks.extend(chunks)
            self._vectors = np.vstack([self._vectors, vectors])
            if not self.approximate and len(self._chunks) > self.approximate_threshold:
                self._rebuild_dense()
            else:
                self._faiss.add(vectors)
        if pending:
            self._unembedded |= incoming_ids
        else:
            self._unembedded -= incoming_ids
        self._bm25_stale = True

    def set_vectors(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> int:
        """Give chunks added without a vector theirs (row i belongs to chunks[i]).

        Chunks no longer in the index (replaced meanwhile), or that already have a vector,
        are left alone. Returns how many vectors were set.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(chunks), self.dim):
            raise ValueError(f"vectors must have shape ({len(chunks)}, {self.dim})")
        rows = {c.id: i for i, c in enumerate(self._chunks) if c.id in self._unembedded}
        done = 0
        for chunk, vector in zip(chunks, vectors, strict=True):
            row = rows.pop(chunk.id, None)
            if row is not None and self._chunks[row] == chunk:
                self._vectors[row] = vector
                self._unembedded.discard(chunk.id)
                done += 1
        if done:
            self._rebuild_dense()
        return done

    def remove_document(self, document_id: str) -> None:
        """Forget every chunk of a document (all versions). Unknown ids are ignored."""
        keep = [i for i, c in enumerate(self._chunks) if c.document_id != document_id]
        if len(keep) == len(self._chunks):
            return
        self._chunks = [self._chunks[i] for i in keep]
        self._vectors = self._vectors[keep]
        self._unembedded &= {c.id for c in self._chunks}
        self._rebuild_dense()
        self._bm25_stale = True

    def _rebuild_dense(self) -> None:
        if len(self._chunks) > self.approximate_threshold:
            index = faiss.IndexHNSWFlat(self.dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        else:
            index = faiss.IndexFlatIP(self.dim)
        if len(self._vectors):
            index.add(self._vectors)
        self._faiss = index

    def _sparse_index(self) -> bm25s.BM25 | None:
        if self._bm25_stale:
            self._bm25 = None
            if self._chunks:
                tokens = bm25s.tokenize([c.text for c in self._chunks], stopwords="en",
                                        show_progress=False)
                if tokens.vocab:
                    retriever = bm25s.BM25()
                    retriever.index(tokens, show_progress=False)
                    self._bm25 = retriever
            self._bm25_stale = False
        return self._bm25

    # -- search --------------------------------------------------------------------------

    def _dense_ranking(self, query: np.ndarray, allowed: np.ndarray | None, depth: int,
                       ) -> list[tuple[int, float]]:
        n_allowed = len(self._chunks) if allowed is None else len(allowed)
        depth = min(depth, n_allowed)
        if depth == 0:
            return []
        params = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed.astype(np.int64))
            params = (faiss.SearchParametersHNSW(sel=selector, efSearch=max(HNSW_EF_SEARCH, depth))
                      if self.approximate else faiss.SearchParameters(sel=selector))
        elif self.approximate:
            params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, depth))
        scores, rows = self._faiss.search(query.reshape(1, -1), depth, params=params)
        allowed_set = None if allowed is None else set(allowed.tolist())
        out: list[tuple[int, float]] = []
        for row, score in zip(rows[0].tolist(), scores[0].tolist(), strict=True):
            if row < 0 or (allowed_set is not None and row not in allowed_set):
                continue  # -1: fewer hits than asked; the set check repeats faiss' selector
            out.append((row, float(score)))
        return out

    def _sparse_ranking(self, query_text: str, allowed: np.ndarray | None, depth: int,
                        ) -> list[tuple[int, float]]:
        retriever = self._sparse_index()
        if retriever is None or not query_text.strip():
            return []
        query_tokens = bm25s.tokenize([query_text], stopwords="en", return_ids=False,
                                      show_progress=False)[0]
        if not query_tokens:
            return []
        scores = np.asarray(retriever.get_scores(list(query_tokens)), dtype=np.float64)
        rows = np.arange(len(self._chunks)) if allowed is None else np.sort(allowed)
        rows = rows[scores[rows] > 0]
        # best first, ties by row: a stable sort of the negated scores over ascending rows
        order = rows[np.argsort(-scores[rows], kind="stable")[:depth]]
        return [(int(r), float(scores[r])) for r in order]

    def search(
        self,
        query_vector: np.ndarray,
        query_text: str,
        *,
        k: int = 5,
        mode: str = "hybrid",
        allow: Callable[[Chunk], bool] | None = None,
    ) -> list[SearchResult]:
        """Best ``k`` permitted chunks for the query, best first."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if k <= 0 or not self._chunks:
            return []
        allowed: np.ndarray | None = None
        if allow is not None:
            allowed = np.array([i for i, c in enumerate(self._chunks) if allow(c)], dtype=np.int64)
            if allowed.size == 0:
                return []
        depth = k if mode != "hybrid" else max(MIN_CANDIDATES, 4 * k)
        dense: list[tuple[int, float]] = []
        sparse: list[tuple[int, float]] = []
        if mode in ("dense", "hybrid"):
            if self._unembedded:
                raise ValueError(f"{len(self._unembedded)} chunks have no vector yet (set_vectors first)")
            query = np.ascontiguousarray(query_vector, dtype=np.float32).reshape(-1)
            if query.shape[0] != self.dim:
                raise ValueError(f"query_vector must have {self.dim} dimensions")
            dense = self._dense_ranking(query, allowed, depth)
        if mode in ("sparse", "hybrid"):
            sparse = self._sparse_ranking(query_text, allowed, depth)
        dense_rank = {row: r for r, (row, _) in enumerate(dense, start=1)}
        sparse_rank = {row: r for r, (row, _) in enumerate(sparse, start=1)}
        if mode == "dense":
            scored = dense
        elif mode == "sparse":
            scored = sparse
        else:
            fused: dict[int, float] = {}
            for ranks in (dense_rank, sparse_rank):
                for row, rank in ranks.items():
                    fused[row] = fused.get(row, 0.0) + 1.0 / (RRF_K + rank)
            scored = sorted(fused.items(), key=lambda t: (-t[1], self._chunks[t[0]].id))
        return [SearchResult(chunk=self._chunks[row], score=score, dense_rank=dense_rank.get(row),
                             sparse_rank=sparse_rank.get(row))
                for row, score in scored[:k]]
