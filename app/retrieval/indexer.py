"""Build a patient's permitted index: read, filter, extract, chunk, embed, index.

The PHI boundary: a document the policy denies is never fetched for its
content, never embedded, never indexed. Only counts by reason leave here.

Reads are concurrent and bounded: the Patient, the Conditions and the
document list in parallel (``open_chart``), then attachments fetched and
decoded by ``FETCH_WORKERS`` threads at most ``FETCH_WINDOW`` notes ahead of
the indexer (each under the byte cap), so memory stays bounded on a
2,000-note chart.

Documents are indexed most recent first, and drafting can start early:
``PatientChart.search`` waits only until the newest ``EARLY_START_NOTES``
notes are in (or indexing ended), while ``wait_indexed()`` (what a screen
that reads every note calls, e.g. ``read_notes``) waits for all of them.
Progress (n of m) is on ``chart.progress``. With an ``EmbeddingCache`` a
re-launch embeds only new or changed text: chunks are keyed by the sha256 of
their text, so an unchanged document (whatever its versionId) costs no model
call, and a changed one costs only its new chunks.

Vectors are computed while indexing (``vectors="eager"``, the web app: its model
backends search from the first turn) or only when a search first needs them
(``vectors="on_demand"``, the CLI: the offline engines read every note but most
drafts never search). On demand, the chunks are indexed, listed and found by BM25
at once, and the first dense or hybrid ``search`` embeds every chunk still without a
vector (through the cache) before it ranks: the same vectors, the same results, and
no model time for a draft that does not search.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from app.errors import AppError, FhirError, PermissionDenied
from app.fhir.attachments import ExtractedText, extract_text
from app.fhir.client import FhirClient
from app.logging import event, opaque
from app.retrieval.cache import EmbeddingCache
from app.retrieval.chunking import Chunk, chunk_id, chunk_text
from app.retrieval.embeddings import Embedder
from app.retrieval.index import ChunkIndex, SearchResult
from app.retrieval.policy import (
    AccessContext,
    DocumentMeta,
    RolePolicy,
    decide,
    decide_resource,
    document_meta,
    is_ai_generated,
    security_labels,
)
from app.smart.scopes import Grants

log = logging.getLogger(__name__)


EARLY_START_NOTES = 20  # search may start once this many of the newest notes are indexed
WAIT_TIMEOUT_S = 300.0
VECTOR_MODES = ("eager", "on_demand")


@dataclass
class IndexProgress:
    total: int = 0
    done: int = 0
    state: str = "pending"  # pending | indexing | ready | failed | cancelled
    error_code: str | None = None
    embedded: int = 0  # chunks encoded by the model in this build
    cached: int = 0  # chunks whose vectors came from the embedding cache
    changed: threading.Condition = field(default_factory=threading.Condition, repr=False,
                                         compare=False)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def as_dict(self) -> dict[str, object]:
        return {"total": self.total, "done": self.done, "state": self.state,
                "error_code": self.error_code, "embedded": self.embedded, "cached": self.cached}

    def advance(self, notes: int = 0, state: str | None = None) -> None:
        """Count ``notes`` more notes done (newest first) and/or change state; wake waiters."""
        with self.changed:
            self.done += notes
            if state is not None:
                self.state = state
            self.changed.notify_all()

    def wait(self, notes: int | None = None, timeout: float = WAIT_TIMEOUT_S) -> bool:
        """True once the newest ``notes`` notes (every note when None) are indexed.

        Returns at once when no build is running (``ready``, ``failed``, or a chart that
        was never built); False on timeout or failure. Polls as well as waiting, so a
        state set directly (without ``advance``) is seen too.
        """
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                if self.state == "ready":
                    return True
                if self.state in ("failed", "cancelled"):
                    return False
                if self.state == "indexing" and notes is not None and self.done >= min(notes, self.total):
                    return True
                if self.state not in ("indexing", "pending"):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.25))


@dataclass
class PatientChart:
    """Everything the app holds about the launched patient, for this session only."""

    patient_id: str
    patient: dict | None
    conditions: list[dict]
    documents: dict[str, DocumentMeta]  # allowed documents only
    texts: dict[str, str]  # allowed document id -> extracted text
    counts: dict[str, int]  # read / allowed / denied:<reason> / skipped:<reason>
    index: ChunkIndex
    embedder: Embedder
    context: AccessContext
    policy: RolePolicy
    progress: IndexProgress = field(default_factory=IndexProgress)
    pending: dict[str, tuple[DocumentMeta, dict]] = field(default_factory=dict)  # allowed, not yet indexed
    max_attachment_bytes: int = 2_000_000
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache: EmbeddingCache | None = None
    token_counts: dict[str, int] = field(default_factory=dict)  # memo of short pieces' counts
    hidden_injection: frozenset[str] = frozenset()  # notes with AI instructions in hidden markup
    vectors: str = "eager"  # eager: embedded while indexing; on_demand: at the first search
    embed_lock: threading.Lock = field(default_factory=threading.Lock)  # one on-demand embedding at a time

    @property
    def chunks(self) -> int:
        return len(self.index)

    def search(self, query: str, *, k: int = 5, mode: str = "hybrid",
               types: Collection[str] | None = None, since: str | None = None,
               until: str | None = None, sections: Collection[str] | None = None,
               ) -> list[SearchResult]:
        """Best ``k`` permitted chunks; each result carries document id, version, offsets, text.

        Metadata filters narrow the search at query time: ``types`` (LOINC note
        types), ``since``/``until`` (ISO dates, inclusive, compared on the note's
        ``date``; undated notes are left out when either is set) and ``sections``
        (chunk section names, case-insensitive). The policy decision is repeated
        first (defence in depth): a filter can only narrow what the policy allows.
        """
        self.wait_indexed(EARLY_START_NOTES)
        wanted_sections = None if sections is None else {s.lower() for s in sections}
        allowed = {
            did for did, meta in list(self.documents.items())
            if decide(meta, self.context, self.policy).allowed
            and (types is None or meta.type_code in types)
            and (since is None or (meta.date is not None and meta.date[:10] >= since[:10]))
            and (until is None or (meta.date is not None and meta.date[:10] <= until[:10]))
        }
        if not allowed:
            return []

        def allow(c: Chunk) -> bool:
            return c.document_id in allowed and (
                wanted_sections is None or (c.section or "").lower() in wanted_sections)

        vector = self.embedder.encode([query])[0] if mode != "sparse" else \
            np.zeros(self.index.dim, dtype=np.float32)
        while True:  # on demand, a build still running may add chunks meanwhile: embed those too
            if mode != "sparse":
                self.ensure_vectors()
            with self.lock:
                if mode == "sparse" or not self.index.vectors_missing:
                    return self.index.search(vector, query, k=k, mode=mode, allow=allow)

    def visible_conditions(self) -> list[dict]:
        """The Conditions this role may see; the policy decision is repeated (defence in depth)."""
        return [c for c in self.conditions
                if decide_resource(c, self.context.role, self.policy).allowed]

    def context_security(self) -> tuple[tuple[str, str], ...]:
        """Labels of the non-note resources a draft may draw on (the Patient, the Conditions).

        The written draft carries the most restrictive of these and of its cited notes.
        """
        found: set[tuple[str, str]] = set()
        for res in [*([self.patient] if self.patient else []), *self.visible_conditions()]:
            found |= security_labels(res)
        return tuple(sorted(found))

    def ensure_vectors(self) -> int:
        """Embed every indexed chunk that has no vector yet (``vectors="on_demand"``);
        returns how many were given one. Immediate when none is missing."""
        if not self.index.vectors_missing:  # the eager build, or already done: no lock taken
            return 0
        with self.embed_lock:
            with self.lock:
                missing = self.index.chunks_without_vectors()
            if not missing:
                return 0
            started = time.monotonic()
            parts = [missing[i:i + ON_DEMAND_EMBED_CHUNKS]
                     for i in range(0, len(missing), ON_DEMAND_EMBED_CHUNKS)]
            vectors = np.vstack([embed_chunks(self, part) for part in parts])
            with self.lock:
                done = self.index.set_vectors(missing, vectors)
            event(log, "index.vectors_ready", patient=opaque(self.patient_id), chunks=done,
                  counts={"embedded": self.progress.embedded, "cached": self.progress.cached},
                  duration_ms=round((time.monotonic() - started) * 1000))
            return done

    def chunk_by_id(self) -> dict[str, Chunk]:
        with self.lock:
            return {c.id: c for c in self.index.chunks()}

    def wait_indexed(self, notes: int | None = None, timeout: float = WAIT_TIMEOUT_S) -> None:
        """Return once the newest ``notes`` notes (all when None) are indexed; AppError if
        indexing failed or took longer than ``timeout``. Immediate when no build runs."""
        if not self.progress.wait(notes, timeout):
            if self.progress.state == "cancelled":
                raise AppError("Preparing the notes was cancelled; prepare them again to draft.",
                               code="index_cancelled", http_status=503)
            raise AppError("The notes could not be indexed; try again in a moment.",
                           code=self.progress.error_code or "index_not_ready", http_status=503)


def _display_name(patient: dict | None) -> str | None:
    for name in (patient or {}).get("name") or []:
        if isinstance(name, dict):
            given = " ".join(g for g in name.get("given") or [] if isinstance(g, str))
            family = name.get("family") if isinstance(name.get("family"), str) else ""
            text = name.get("text") if isinstance(name.get("text"), str) else ""
            full = (given + " " + family).strip() or text
            if full:
                return full
    return None


def patient_name(chart: PatientChart) -> str | None:
    return _display_name(chart.patient)


def open_chart(
    client: FhirClient,
    patient_id: str,
    *,
    grants: Grants,
    role: str,
    policy: RolePolicy,
    embedder: Embedder | Callable[[], Embedder],
    task_types: frozenset[str] | None = None,
    max_attachment_bytes: int = 2_000_000,
    max_documents: int = 2000,
    cache: EmbeddingCache | None = None,
    vectors: str = "eager",
) -> PatientChart:
    """Read the patient, conditions and the document list; decide access. No content fetched yet.

    The three reads run in parallel. ``embedder`` may be a callable returning it, called
    after the reads, so that a model still loading in another thread overlaps them.
    ``vectors``: ``eager`` (embedded while indexing) or ``on_demand`` (at the first search).
    """
    if vectors not in VECTOR_MODES:
        raise ValueError(f"vectors must be one of {VECTOR_MODES}")
    ctx = AccessContext(role=role, can_read_documents=grants.may_read("DocumentReference"),
                        task_types=task_types)
    counts: Counter[str] = Counter()
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="chart-read") as pool:
        patient_read = pool.submit(client.read, "Patient", patient_id) \
            if grants.may_read("Patient") else None
        conditions_read = pool.submit(lambda: list(client.search(
            "Condition", {"patient": patient_id, "_count": 100}, validate=True))) \
            if grants.may_read("Condition") else None
        documents_read = pool.submit(lambda: list(client.search(
            "DocumentReference", {"patient": patient_id, "_count": 100}, validate=True))) \
            if ctx.can_read_documents else None
        # every read finishes (or fails) before leaving: nothing runs on after an error
        for read in (patient_read, conditions_read, documents_read):
            if read is not None:
                read.exception()
    patient = patient_read.result() if patient_read is not None else None
    if patient is not None and not (verdict := decide_resource(patient, role, policy)).allowed:
        counts[f"patient_denied:{verdict.reason}"] += 1  # no banner, no demographics
        patient = None
    conditions: list[dict] = []
    if conditions_read is not None:
        for cond in conditions_read.result():
            verdict = decide_resource(cond, role, policy)
            if verdict.allowed:
                conditions.append(cond)
            else:
                counts[f"conditions_denied:{verdict.reason}"] += 1
    allowed: dict[str, DocumentMeta] = {}
    resources: dict[str, dict] = {}
    if ctx.can_read_documents:
        try:
            docs = documents_read.result() if documents_read is not None else []
            for res in docs:
                counts["read"] += 1
                if counts["read"] > max_documents:
                    counts["skipped:too_many"] += 1
                    continue
                try:
                    meta = document_meta(res)
                except (KeyError, TypeError, ValueError):
                    counts["skipped:malformed"] += 1
                    continue
                if res.get("status") == "entered-in-error":
                    counts["skipped:entered_in_error"] += 1
                    continue
                if is_ai_generated(meta):
                    counts["skipped:ai_generated"] += 1
                    continue
                decision = decide(meta, ctx, policy)
                if not decision.allowed:
                    counts[f"denied:{decision.reason}"] += 1
                    continue
                allowed[meta.id] = meta
                resources[meta.id] = res
        except FhirError as exc:
            if exc.status != 403:
                raise
            raise PermissionDenied("The EHR refused to list this patient's documents.",
                                   code="documents_forbidden") from None
    # lenient on read: resources that fail R4B validation were skipped by the client; say how many
    for reason, n in (getattr(client, "skipped", None) or {}).items():
        counts[f"skipped:{reason}"] += n
    if callable(embedder):
        embedder = embedder()
    chart = PatientChart(
        patient_id=patient_id, patient=patient, conditions=conditions, documents={}, texts={},
        counts={}, index=ChunkIndex(embedder.dim), embedder=embedder, context=ctx, policy=policy,
    )
    chart.counts = dict(counts)
    chart.pending = {did: (meta, resources[did]) for did, meta in allowed.items()}
    chart.max_attachment_bytes = max_attachment_bytes
    chart.cache = cache
    chart.vectors = vectors
    chart.progress.total = len(allowed)
    return chart


def build_index(client: FhirClient, chart: PatientChart) -> PatientChart:
    """Fetch, extract, chunk, embed and index the allowed documents (most recent first).

    Attachments are fetched and decoded by a bounded pool, in order, at most
    ``FETCH_WINDOW`` notes ahead; chunking, embedding and indexing stay on this thread.
    ``chart.documents`` and ``chart.texts`` are replaced, never mutated, so a reader
    iterating them while the build runs sees a consistent snapshot.
    """
    started = time.monotonic()
    max_attachment_bytes = chart.max_attachment_bytes
    counts: Counter[str] = Counter(chart.counts)
    order = sorted((m for m, _ in chart.pending.values()), key=lambda m: m.date or "", reverse=True)
    chart.progress.total = len(order)
    chart.progress.advance(state="indexing")
    group: list[tuple[DocumentMeta, str | None, list[Chunk]]] = []  # text None: skipped

    def flush() -> None:
        """Embed a few notes' chunks in one call, then index (on demand: index, embed later)."""
        chunks = [c for _, _, cs in group for c in cs]
        if chunks:
            vectors = embed_chunks(chart, chunks) if chart.vectors == "eager" else None
            with chart.lock:
                chart.index.add(chunks, vectors)
        kept = [(meta, text) for meta, text, _ in group if text is not None]
        with chart.lock:
            chart.documents = {**chart.documents, **{meta.id: meta for meta, _ in kept}}
            chart.texts = {**chart.texts, **{meta.id: text for meta, text in kept}}
        counts["allowed"] += len(kept)
        chart.progress.advance(len(group))  # "done" counts the newest notes, in order
        group.clear()

    def fetch(meta: DocumentMeta) -> ExtractedText:
        return extract_text(client, chart.pending[meta.id][1], max_bytes=max_attachment_bytes)

    try:
        with ThreadPoolExecutor(max_workers=FETCH_WORKERS, thread_name_prefix="note-fetch") as pool:
            ahead: deque[tuple[DocumentMeta, Future[ExtractedText]]] = deque()
            queue = iter(order)
            try:
                for meta in queue:
                    ahead.append((meta, pool.submit(fetch, meta)))
                    if len(ahead) >= FETCH_WINDOW:
                        break
                while ahead:
                    if chart.progress.cancel.is_set():  # the user cancelled: fetch and embed no more
                        break
                    meta, future = ahead.popleft()
                    nxt = next(queue, None)
                    if nxt is not None:
                        ahead.append((nxt, pool.submit(fetch, nxt)))
                    extracted = future.result()
                    if extracted.hidden_injection:
                        chart.hidden_injection = chart.hidden_injection | {meta.id}
                    if extracted.text is None:
                        counts[f"skipped:{extracted.skipped}"] += 1
                        group.append((meta, None, []))
                    else:
                        group.append((meta, extracted.text, chunk_document(chart, meta, extracted.text)))
                    # a full group, or the group that completes the newest notes (early start)
                    if sum(len(cs) for _, _, cs in group) >= EMBED_GROUP_CHUNKS \
                            or chart.progress.done < EARLY_START_NOTES <= chart.progress.done + len(group):
                        flush()
                flush()
            finally:
                for _, future in ahead:  # on failure: fetch nothing more
                    future.cancel()
    except Exception as exc:
        chart.progress.error_code = getattr(exc, "code", type(exc).__name__)
        chart.progress.advance(state="failed")
        raise
    finally:
        chart.counts = dict(counts)
    chart.pending = {}
    if chart.progress.cancel.is_set() and chart.progress.done < chart.progress.total:
        counts["skipped:cancelled"] += chart.progress.total - chart.progress.done
        chart.counts = dict(counts)
        chart.progress.error_code = "index_cancelled"
        chart.progress.advance(state="cancelled")
        event(log, "index.cancelled", patient=opaque(chart.patient_id), documents=chart.progress.done)
        return chart
    chart.progress.advance(state="ready")
    event(log, "index.ready", patient=opaque(chart.patient_id), documents=counts.get("read", 0),
          allowed=counts.get("allowed", 0), chunks=len(chart.index),
          reasons={k: v for k, v in counts.items() if ":" in k},
          duration_ms=round((time.monotonic() - started) * 1000))
    return chart


FETCH_WORKERS = 4  # attachment fetches in flight per chart (FHIR servers rate-limit; 2 cores here)
FETCH_WINDOW = 8  # notes fetched ahead of the indexer: bounds memory to ~8 attachments per chart
CHUNK_MAX_TOKENS = 200
CHUNK_OVERLAP_TOKENS = 32
# Notes are embedded in groups of about this many chunks (and a group ends with the newest
# EARLY_START_NOTES-th note). 128 used 8% fewer CPU seconds than 32 on the 269-note Synthea
# chart (fewer, fuller model runs); memory stays bounded in chunks, not notes.
EMBED_GROUP_CHUNKS = 128
ON_DEMAND_EMBED_CHUNKS = 512  # on demand: chunks per cache look-up and model call
TOKEN_MEMO_MAX_CHARS = 64  # words and short pieces: their token counts are memoised per chart


def chunk_document(chart: PatientChart, meta: DocumentMeta, text: str) -> list[Chunk]:
    """Chunks of one note version; boundaries come from the cache when this text was seen."""
    embedder = chart.embedder
    max_tokens = min(CHUNK_MAX_TOKENS, embedder.max_tokens - 16)
    params = f"max={max_tokens};overlap={CHUNK_OVERLAP_TOKENS}"
    model_id = getattr(embedder, "model_id", "unknown")
    if chart.cache is not None:
        spans = chart.cache.chunk_spans(model_id, params, text)
        if spans is not None:
            return [Chunk(id=chunk_id(meta.id, meta.version, a), document_id=meta.id,
                          version=meta.version, section=section, start=a, end=b, text=text[a:b])
                    for section, a, b in spans]
    memo = chart.token_counts

    def count_tokens(piece: str) -> int:
        if len(piece) > TOKEN_MEMO_MAX_CHARS:
            return embedder.count_tokens(piece)
        if piece not in memo:
            memo[piece] = embedder.count_tokens(piece)
        return memo[piece]

    chunks = chunk_text(meta.id, meta.version, text, max_tokens=max_tokens,
                        overlap_tokens=CHUNK_OVERLAP_TOKENS, count_tokens=count_tokens)
    if chart.cache is not None:
        chart.cache.put_chunk_spans(model_id, params, text,
                                    [(c.section, c.start, c.end) for c in chunks])
    return chunks


def embed_chunks(chart: PatientChart, chunks: list[Chunk]) -> np.ndarray:
    """Vectors of the chunks: through the cache when there is one (counts on progress)."""
    texts = [c.text for c in chunks]
    if chart.cache is None:
        chart.progress.embedded += len(texts)
        return chart.embedder.encode(texts)
    vectors, fresh = chart.cache.encode_counted(chart.embedder, texts)
    chart.progress.embedded += fresh
    chart.progress.cached += len(texts) - fresh
    return vectors


def load_chart(client: FhirClient, patient_id: str, **kwargs: object) -> PatientChart:
    """open_chart + build_index, synchronously (CLI, demo, tests)."""
    return build_index(client, open_chart(client, patient_id, **kwargs))  # type: ignore[arg-type]
