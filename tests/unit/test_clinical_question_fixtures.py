"""Small in-memory charts for the offline summary and question tests (notes written for these tests).

``chart(notes, conditions)`` builds a real ``PatientChart`` (the app's chunker, ``ChunkIndex`` and
``HashingEmbedder``; policy context of a clinician), so tasks run through ``run_task`` and the
runtime's ``ChartTools`` with its limits. ``CountingTools`` is a plain ``Tools`` over chunks that
records every call, for bounded-scan checks on thousands of notes without building an index.
"""

from __future__ import annotations

from collections import Counter

from app.retrieval.chunking import Chunk, chunk_text
from app.retrieval.embeddings import HashingEmbedder
from app.retrieval.index import ChunkIndex
from app.retrieval.indexer import PatientChart
from app.retrieval.policy import AccessContext, DocumentMeta, RolePolicy

PROGRESS_NOTE = "11506-3"


def condition(display: str, status: str = "active") -> dict:
    return {"resourceType": "Condition", "code": {"text": display},
            "clinicalStatus": {"coding": [{"code": status}]}}


def ask(c: PatientChart, question: str):  # type: ignore[no-untyped-def]
    """Answer ``question`` with the offline backend; (draft, cited document ids). The offline
    backend always completes (never loop_detected / limit_exceeded)."""
    from app.agent.backends.offline import OfflineBackend
    from app.agent.runtime import run_task
    from app.agent.tasks import TASKS

    draft = run_task(c, TASKS["question"], OfflineBackend(), question=question)
    assert draft.status == "completed"
    return draft, {doc for doc, _ in draft.cited_documents()}


def chart(notes: list[tuple[str, str, str]], conditions: list[dict] | None = None) -> PatientChart:
    """``notes``: (document id, ISO date, text)."""
    embedder = HashingEmbedder(128, model_id="test-hashing-128")
    c = PatientChart(patient_id="pat-test", patient={"resourceType": "Patient", "id": "pat-test"},
                     conditions=conditions or [], documents={}, texts={}, counts={},
                     index=ChunkIndex(embedder.dim), embedder=embedder,  # type: ignore[arg-type]
                     context=AccessContext(role="clinician", can_read_documents=True),
                     policy=RolePolicy.default())
    for doc_id, date, text in notes:
        meta = DocumentMeta(id=doc_id, version="1", type_code=PROGRESS_NOTE, category_codes=frozenset(),
                            security=frozenset(), date=date)
        chunks = chunk_text(doc_id, "1", text, max_tokens=120, count_tokens=embedder.count_tokens)
        c.index.add(chunks, embedder.encode([ch.text for ch in chunks]))
        c.documents[doc_id] = meta
        c.texts[doc_id] = text
    c.progress.state = "ready"
    return c


class CountingTools:
    """A ``Tools`` over pre-chunked notes that counts calls (no index, no policy)."""

    def __init__(self, notes: list[tuple[str, str, str]], conditions: list[dict] | None = None) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self._dates = {doc_id: date for doc_id, date, _ in notes}
        self._chunks: list[Chunk] = []
        for doc_id, _date, text in notes:
            self._chunks += chunk_text(doc_id, "1", text, max_tokens=120)
        self._conditions = [{"display": c["code"]["text"],
                             "status": c["clinicalStatus"]["coding"][0]["code"]} for c in conditions or []]

    def search(self, query, k=6):  # type: ignore[no-untyped-def]
        self.calls[("search", repr((query, k)))] += 1
        return []

    def conditions(self):  # type: ignore[no-untyped-def]
        self.calls[("conditions", "")] += 1
        return list(self._conditions)

    def document_date(self, document_id):  # type: ignore[no-untyped-def]
        return self._dates.get(document_id)

    def read_notes(self):  # type: ignore[no-untyped-def]
        self.calls[("read_notes", "")] += 1
        return sorted(self._chunks, key=lambda c: (self._dates[c.document_id], c.document_id, c.start))

    def demographics(self):  # type: ignore[no-untyped-def]
        return {"age_years": None, "gender": None}

    def check_time(self) -> None:
        return None

    def patient_resource(self):  # type: ignore[no-untyped-def]
        return None


def test_fixture_chart_chunks_cover_each_note():
    c = chart([("n1", "2026-01-02", "Allergies: latex (hives)\nPlan: recheck in 6 weeks.")])
    assert {ch.document_id for ch in c.chunk_by_id().values()} == {"n1"}
    assert {ch.section for ch in c.chunk_by_id().values()} >= {"Allergies", "Plan"}
