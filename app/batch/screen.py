"""The per-patient screen, as the engines run it: one sealed work item in, one sealed result out.

A work item holds what the policy allowed of one patient (Patient, Conditions, the permitted
notes' metadata and extracted text), encrypted with the app's ``Vault``: work files and results
may cross process boundaries or a Ray object store, and they carry PHI.

The chart is rebuilt without an embedding model: the irAE screen reads every permitted note
(``ChartTools.read_notes``), so chunks need token counts (``approximate_tokens``) but no vectors;
the index gets zero vectors (search is then lexical only, which the screen never uses). Measured:
embedding was the largest cost of a launch and adds nothing to a screen.

``Screener`` is the callable the engines share: the local engine calls it in worker processes,
Ray wraps it in an actor class for ``map_batches``.
"""

from __future__ import annotations

import base64
import json
import pickle  # noqa: S403 - our own objects between our own processes, sealed (authenticated)
from dataclasses import asdict
from typing import Any

import numpy as np

from app.agent.backends import get_backend
from app.agent.runtime import Draft, run_task
from app.agent.tasks import get_task
from app.retrieval.chunking import approximate_tokens, chunk_text
from app.retrieval.embeddings import HashingEmbedder
from app.retrieval.index import ChunkIndex
from app.retrieval.indexer import CHUNK_MAX_TOKENS, CHUNK_OVERLAP_TOKENS, PatientChart
from app.retrieval.policy import AccessContext, DocumentMeta, RolePolicy
from app.store.models import Vault

DIM = 8  # zero vectors: nothing is embedded


def meta_to_json(meta: DocumentMeta) -> dict:
    d = asdict(meta)
    d["category_codes"] = sorted(meta.category_codes)
    d["security"] = sorted([list(x) for x in meta.security])
    return d


def meta_from_json(d: dict) -> DocumentMeta:
    return DocumentMeta(id=d["id"], version=d.get("version"), type_code=d.get("type_code"),
                        category_codes=frozenset(d.get("category_codes") or ()),
                        security=frozenset(tuple(x) for x in d.get("security") or ()), date=d.get("date"),
                        resource_type=d.get("resource_type", "DocumentReference"))


class WriteChart:
    """What ``DraftingService.write`` reads of a chart, without the notes' text or index."""

    def __init__(self, patient_id: str, documents: dict[str, DocumentMeta], security: tuple) -> None:
        self.patient_id = patient_id
        self.documents = documents
        self._security = security

    def context_security(self) -> tuple[tuple[str, str], ...]:
        return self._security


def build_chart(item: dict, policy: RolePolicy) -> PatientChart:
    embedder = HashingEmbedder(DIM, model_id="batch-no-embedding")
    ctx = AccessContext(role=item["role"], can_read_documents=True)
    chart = PatientChart(patient_id=item["patient_id"], patient=item.get("patient"),
                         conditions=item.get("conditions") or [], documents={}, texts={},
                         counts=dict(item.get("counts") or {}), index=ChunkIndex(DIM), embedder=embedder,  # type: ignore[arg-type]
                         context=ctx, policy=policy)
    for doc in item.get("documents") or []:
        meta = meta_from_json(doc["meta"])
        text = doc["text"]
        chunks = chunk_text(meta.id, meta.version, text, max_tokens=CHUNK_MAX_TOKENS,
                            overlap_tokens=CHUNK_OVERLAP_TOKENS, count_tokens=approximate_tokens)
        if chunks:
            chart.index.add(chunks, np.zeros((len(chunks), DIM), dtype=np.float32))
        chart.documents[meta.id] = meta
        chart.texts[meta.id] = text
    chart.progress.state = "ready"
    return chart


def summary_of(draft: Draft) -> dict[str, Any]:
    """PHI-free outcome of one screen: status, organs and grades (no text, no dates, no ids)."""
    events = []
    for ev in (draft.findings or {}).get("events", []) if draft.findings else []:
        events.append({"organ": str(ev.get("organ") or "unknown"), "term": str(ev.get("term") or ""),
                       "grade": ev.get("ctcae_grade"), "attribution": ev.get("attribution")})
    return {"status": draft.status, "irae_detected": bool((draft.findings or {}).get("irae_detected")),
            "events": events, "sentences": len(draft.sentences), "unsupported": draft.unsupported,
            "tokens_in": draft.tokens_in, "tokens_out": draft.tokens_out, "cost_usd": round(draft.cost_usd, 6)}


class Replay:
    """A backend that returns a result computed elsewhere (a Message Batches answer): the runtime
    still verifies every citation against this chart and applies the limits."""

    def __init__(self, result: Any, name: str, model: str) -> None:
        self.result, self.name, self.model = result, name, model

    def run(self, task: Any, tools: Any, *, question: str | None, limits: Any) -> Any:
        return self.result


class Screener:
    """Callable over sealed work items; builds its backend once (per process or Ray actor)."""

    def __init__(self, secret: bytes, task: str = "irae", backend: str | None = "offline",
                 role_policy: str | None = None) -> None:
        self.vault = Vault(secret)
        self.task = get_task(task)
        self.backend = get_backend(backend) if backend else None
        self.policy = RolePolicy.load(role_policy) if role_policy else RolePolicy.default()

    def screen_item(self, item: dict, backend: Any = None) -> dict:
        chart = build_chart(item, self.policy)
        draft = run_task(chart, self.task, backend or self.backend)
        cited = {d: chart.documents[d] for d, _v in draft.cited_documents() if d in chart.documents}
        write_chart = WriteChart(chart.patient_id, cited, chart.context_security())
        summary = summary_of(draft) | {"notes": len(chart.documents), "chunks": len(chart.index)}
        blob = base64.b64encode(pickle.dumps((draft, write_chart))).decode()
        return {"key": item["key"], "summary": summary, "blob": blob}

    def __call__(self, sealed: str) -> str:
        item = json.loads(self.vault.open(sealed))
        return self.vault.seal(json.dumps(self.screen_item(item)))


def open_result(vault: Vault, sealed: str) -> tuple[str, dict, Draft, WriteChart]:
    """(patient key, summary, draft, write chart) of a sealed result."""
    data = json.loads(vault.open(sealed))
    draft, write_chart = pickle.loads(base64.b64decode(data["blob"]))  # noqa: S301 - sealed by us
    return data["key"], data["summary"], draft, write_chart
