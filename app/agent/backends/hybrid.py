"""Hybrid mode (``APP_LLM_HYBRID=true``): the offline engine reads the chart, the model reads
only what the engine found.

1. The offline backend (``get_backend("offline")``, through the registry) runs first, on its own
   tool budget.
2. Its candidates: the chunks its sentences cite (for the irAE screen the events and exclusions
   with their quotes), the assessment / plan / impression sections of the notes it cited, and for
   a question the top search hits of the question.
3. The model backend runs unchanged on ``CandidateTools``: ``read_notes`` serves only the
   candidate chunks and ``search`` only candidate hits, plus a small budget of other hits
   (``extra_hits``) so the model can still look for what the engine missed.

The trade-off is explicit: an event the offline engine did not cite reaches the model only
through the extra hits. If the offline pass itself fails, the model reads the chart as usual.
When every model backend is unavailable and ``offline`` is in the chain, the offline draft of
step 1 is returned (no second pass).
"""

from __future__ import annotations

import logging

from app.agent.backends import Backend, BackendResult, Tools
from app.agent.backends.fallback import fresh_tools
from app.agent.guard import Limits
from app.agent.tasks import TaskSpec
from app.errors import AppError, UpstreamError
from app.logging import event
from app.retrieval.chunking import Chunk
from app.retrieval.index import SearchResult

log = logging.getLogger(__name__)
RELEVANT_SECTIONS = ("assessment", "plan", "impression", "diagnos", "hospital course", "findings")
MAX_CANDIDATES = 60
EXTRA_HITS = 3
WIDE_K = 50  # how deep a restricted search looks for candidate chunks


def candidate_ids(task: TaskSpec, first: BackendResult, chunks: list[Chunk], hits: list[SearchResult]) -> list[str]:
    """Chunk ids for the model to read, most important first: cited, then related sections, then hits."""
    by_id = {c.id: c for c in chunks}
    cited = [cid for s in first.sentences for cid, _quote in s.evidence if cid in by_id]
    out = list(dict.fromkeys(cited))
    docs = {by_id[c].document_id for c in out}
    for c in chunks:
        if c.document_id in docs and (c.section or "").lower().startswith(RELEVANT_SECTIONS):
            out.append(c.id)
    out += [h.chunk.id for h in hits if h.chunk.id in by_id]
    return list(dict.fromkeys(out))[:MAX_CANDIDATES]


class CandidateTools:
    """``Tools`` restricted to the candidate chunks (plus ``extra_hits`` other search hits)."""

    def __init__(self, inner: Tools, ids: list[str], *, extra_hits: int = EXTRA_HITS) -> None:
        self.inner = inner
        self.ids = set(ids)
        self.extra_left = extra_hits
        self.served: set[str] = set()

    def search(self, query: str, k: int = 6) -> list[SearchResult]:
        results = self.inner.search(query, k=max(k, WIDE_K))
        picked = [r for r in results if r.chunk.id in self.ids][:k]
        for r in results:
            if len(picked) >= k or self.extra_left <= 0:
                break
            if r.chunk.id not in self.ids and all(p.chunk.id != r.chunk.id for p in picked):
                picked.append(r)
                self.extra_left -= 1
        self.served.update(r.chunk.id for r in picked)
        return picked

    def read_notes(self) -> list[Chunk]:
        chunks = [c for c in self.inner.read_notes() if c.id in self.ids]
        self.served.update(c.id for c in chunks)
        return chunks

    def conditions(self) -> list[dict[str, str]]:
        return self.inner.conditions()

    def document_date(self, document_id: str) -> str | None:
        return self.inner.document_date(document_id)

    def demographics(self) -> dict[str, object]:
        return self.inner.demographics()

    def check_time(self) -> None:
        self.inner.check_time()

    def patient_resource(self) -> dict | None:
        return self.inner.patient_resource()


class HybridBackend:
    def __init__(self, model: Backend, offline: Backend, *, offline_fallback: bool = False,
                 extra_hits: int = EXTRA_HITS) -> None:
        self.inner, self.offline = model, offline
        self.offline_fallback = offline_fallback
        self.extra_hits = extra_hits
        self.name, self.model = model.name, model.model

    def run(self, task: TaskSpec, tools: Tools, *, question: str | None, limits: Limits) -> BackendResult:
        try:
            first = self.offline.run(task, fresh_tools(tools), question=question, limits=limits)
            own = fresh_tools(tools)
            chunks = own.read_notes()
            hits = own.search(question, k=6) if task.name == "question" and question else []
            ids = candidate_ids(task, first, chunks, hits)
        except AppError as exc:  # the offline pass failed: the model reads the chart as usual
            event(log, "agent.hybrid_offline_failed", error_code=exc.code)
            result = self.inner.run(task, tools, question=question, limits=limits)
            result.notes = [*result.notes, f"Hybrid: the offline pass failed ({exc.code}); the model read the "
                                           "chart without it."]
            return result
        view = CandidateTools(tools, ids, extra_hits=self.extra_hits)
        try:
            result = self.inner.run(task, view, question=question, limits=limits)
        except UpstreamError as exc:
            if not self.offline_fallback:
                raise
            first.backend, first.model = self.offline.name, self.offline.model
            first.notes = [*first.notes, f"Fallback: no model backend was available ({exc.code}); this draft "
                                         f"was written by {self.offline.name} ({self.offline.model})."]
            return first
        extra = len(view.served - view.ids)
        result.notes = [*result.notes, f"Hybrid: the model read {len(view.served & view.ids)} of {len(ids)} "
                                       f"passages chosen by the offline engine, and {extra} other search hits, "
                                       f"out of {len(chunks)} permitted chunks."]
        event(log, "agent.hybrid", task=task.name, chunks=len(chunks), count=len(ids))
        return result
