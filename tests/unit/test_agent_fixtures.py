"""Charts built from synthetic_data/bundles without a server, through the real pipeline pieces.

``bundle_chart(patient_id)`` reads the patient's transaction bundle and runs
``retrieval.policy`` (decide), ``fhir.attachments`` (text from inline data and
``Binary/...`` urls), ``retrieval.chunking`` and ``retrieval.index`` exactly as
``retrieval.indexer`` does; only the FHIR server and the embedding model are
replaced by the app's stand-ins: ``retrieval.bundles.BundleClient`` serves the bundle's
Binaries, ``retrieval.embeddings.HashingEmbedder`` is a deterministic bag-of-words embedder
(the irAE screen reads every chunk and does not rank, so vectors only need the right shape to enter the index).

The tests in this module check the builder itself.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from app.fhir.attachments import extract_text
from app.retrieval.bundles import BundleClient
from app.retrieval.chunking import chunk_text
from app.retrieval.embeddings import HashingEmbedder
from app.retrieval.index import ChunkIndex
from app.retrieval.indexer import PatientChart
from app.retrieval.policy import AccessContext, RolePolicy, decide, document_meta

ROOT = Path(__file__).resolve().parents[2] / "synthetic_data"


@functools.lru_cache(maxsize=32)
def _bundle(patient_id: str) -> tuple[dict, ...]:
    data = json.loads((ROOT / "bundles" / f"{patient_id}.json").read_text(encoding="utf-8"))
    return tuple(e["resource"] for e in data["entry"])


def gold() -> list[dict]:
    return json.loads((ROOT / "gold" / "irae.json").read_text(encoding="utf-8"))


def manifest() -> dict:
    return json.loads((ROOT / "manifest.json").read_text(encoding="utf-8"))


def bundle_chart(patient_id: str, *, role: str = "clinician", drop: frozenset[str] = frozenset(),
                 replace_text: dict[str, str] | None = None) -> PatientChart:
    """The patient's permitted chart. ``drop``: document ids left out (as if absent from the EHR);
    ``replace_text``: document id -> text used instead of the attachment (adversarial variants)."""
    resources = _bundle(patient_id)
    client = BundleClient(r for r in resources if r["resourceType"] == "Binary")
    embedder = HashingEmbedder(256, model_id="test-hashing-256")
    policy = RolePolicy.default()
    ctx = AccessContext(role=role, can_read_documents=True)
    patient = next((r for r in resources if r["resourceType"] == "Patient"), None)
    conditions = [r for r in resources if r["resourceType"] == "Condition"]
    chart = PatientChart(patient_id=patient_id, patient=patient, conditions=conditions, documents={},
                         texts={}, counts={}, index=ChunkIndex(embedder.dim), embedder=embedder,  # type: ignore[arg-type]
                         context=ctx, policy=policy)
    counts: dict[str, int] = {}
    for res in resources:
        if res["resourceType"] != "DocumentReference" or res["id"] in drop:
            continue
        meta = document_meta(res)
        decision = decide(meta, ctx, policy)
        if not decision.allowed:
            counts[f"denied:{decision.reason}"] = counts.get(f"denied:{decision.reason}", 0) + 1
            continue
        text = (replace_text or {}).get(meta.id) or extract_text(client, res).text  # type: ignore[arg-type]
        if not text:
            continue
        chunks = chunk_text(meta.id, meta.version, text, max_tokens=200, count_tokens=embedder.count_tokens)
        if chunks:
            chart.index.add(chunks, embedder.encode([c.text for c in chunks]))
        chart.documents[meta.id] = meta
        chart.texts[meta.id] = text
        counts["allowed"] = counts.get("allowed", 0) + 1
    chart.counts = counts
    chart.progress.state = "ready"
    return chart


def test_bundle_chart_applies_the_role_policy():
    labelled = set(manifest()["labelled"]["PSY"])
    chart = bundle_chart("pat-onc-01")
    assert chart.counts["allowed"] > 20
    assert not labelled & set(chart.documents)
    assert chart.counts.get("denied:sensitivity_label", 0) + chart.counts.get(
        "denied:confidentiality_restricted", 0) >= 1


def test_bundle_chart_reads_binary_attachments_and_chunks_cover_the_text():
    resources = _bundle("pat-onc-01")
    by_url = [r["id"] for r in resources if r["resourceType"] == "DocumentReference"
              and any("url" in (c.get("attachment") or {}) for c in r.get("content") or [])]
    chart = bundle_chart("pat-onc-01")
    readable = [d for d in by_url if d in chart.documents]
    assert readable, "the bundle has Binary-referenced notes"
    for chunk in chart.chunk_by_id().values():
        assert chart.texts[chunk.document_id][chunk.start:chunk.end] == chunk.text
